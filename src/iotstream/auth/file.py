"""Accounts in one JSON file (``<data-dir>/auth/accounts.json``), for the embedded mode.

The server and the ``iotstream users``/``apikeys`` commands may change it at the same time:
every change holds an exclusive lock on a lock file beside it and replaces the file
atomically, and readers pick a change up by the file's modification time. The file and its
directory are readable by their owner only.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from ..errors import AuthError
from .base import Accounts, ApiKey, SigningKey, User

Document = dict[str, dict[str, dict[str, Any]]]
SECTIONS = ("users", "apikeys", "keys")


class FileAccounts(Accounts):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._document: Document = {}
        self._digests: dict[str, dict[str, Any]] = {}
        self._stamp: tuple[int, int] | None = None

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise AuthError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        self._read()

    async def close(self) -> None:
        pass

    def _read(self) -> Document:
        """The document, read again only when the file changed since the last read."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            self._document, self._digests, self._stamp = {}, {}, None
            return self._document
        except OSError as exc:
            raise AuthError(f"cannot read {self.path}: {exc.strerror}") from exc
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            try:
                document = orjson.loads(self.path.read_bytes())
            except (OSError, orjson.JSONDecodeError) as exc:
                raise AuthError(f"cannot read {self.path}: {exc}") from exc
            self._document, self._stamp = document, stamp
            keys = document.get("apikeys", {}).values()
            self._digests = {data["digest"]: data for data in keys}
        return self._document

    @contextmanager
    def _locked(self) -> Iterator[Document]:
        """The document under the lock; what the block leaves in it is written back."""
        try:
            with self._lock_path.open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                self._stamp = None
                document = {name: dict(self._read().get(name, {})) for name in SECTIONS}
                yield document
                self._write(document)
        except OSError as exc:
            raise AuthError(f"cannot write {self.path}: {exc.strerror}") from exc

    def _write(self, document: Document) -> None:
        temporary = self.path.with_name(self.path.name + ".new")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(document, option=orjson.OPT_INDENT_2))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)

    def _section(self, name: str) -> dict[str, dict[str, Any]]:
        return self._read().get(name, {})

    async def _change(self, change: Callable[[Document], bool]) -> bool:
        def locked_change() -> bool:
            with self._locked() as document:
                return change(document)

        # Locking waits for another process; off the event loop.
        return await asyncio.to_thread(locked_change)

    @staticmethod
    def _adder(section: str, key: str, record: dict[str, Any]) -> Callable[[Document], bool]:
        def add(document: Document) -> bool:
            if key in document[section]:
                return False
            document[section][key] = record
            return True

        return add

    @staticmethod
    def _remover(section: str, key: str) -> Callable[[Document], bool]:
        def remove(document: Document) -> bool:
            return document[section].pop(key, None) is not None

        return remove

    async def users(self) -> list[User]:
        return [User.of(data) for data in self._section("users").values()]

    async def user(self, name: str) -> User | None:
        data = self._section("users").get(name)
        return None if data is None else User.of(data)

    async def add_user(self, user: User) -> bool:
        return await self._change(self._adder("users", user.name, user.as_dict()))

    async def remove_user(self, name: str) -> bool:
        return await self._change(self._remover("users", name))

    async def api_keys(self) -> list[ApiKey]:
        return [ApiKey.of(data) for data in self._section("apikeys").values()]

    async def api_key(self, digest: str) -> ApiKey | None:
        self._read()
        data = self._digests.get(digest)
        return None if data is None else ApiKey.of(data)

    async def add_api_key(self, key: ApiKey) -> bool:
        return await self._change(self._adder("apikeys", key.name, key.as_dict()))

    async def remove_api_key(self, name: str) -> bool:
        return await self._change(self._remover("apikeys", name))

    async def signing_keys(self) -> list[SigningKey]:
        return [SigningKey.of(data) for data in self._section("keys").values()]

    async def add_signing_key(self, key: SigningKey) -> bool:
        return await self._change(self._adder("keys", key.kid, key.as_dict()))

    async def remove_signing_key(self, kid: str) -> bool:
        return await self._change(self._remover("keys", kid))
