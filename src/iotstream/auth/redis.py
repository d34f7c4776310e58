"""Accounts in Redis, for the distributed mode: every api instance and the CLI given the same
``--redis-url`` and ``--redis-prefix`` share them.

Key layout::

    {prefix}:auth:users     hash    user name -> JSON user (role, Argon2 hash, created)
    {prefix}:auth:apikeys   hash    API key name -> JSON key (role, SHA-256 digest, created)
    {prefix}:auth:digests   hash    SHA-256 digest -> the same JSON key, for the lookup
    {prefix}:auth:keys      hash    key id -> JSON signing key (private PEM, created)

API key lookups are remembered for ``API_KEY_CACHE`` seconds, so a request with a key costs
no round trip to Redis most of the time; a removed key stops working after at most that.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from ..errors import AuthError, ConfigError, missing_extra
from .base import Accounts, ApiKey, SigningKey, User

try:
    from redis.asyncio import Redis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra("redis", "redis") from exc

API_KEY_CACHE = 2.0
CACHE_SIZE = 10_000
_FAILURES = (RedisError, OSError)


class RedisAccounts(Accounts):
    def __init__(self, url: str, *, prefix: str = "iotstream") -> None:
        # redis-py's hints give every command a sync-or-async result; these calls are async.
        self._redis: Any
        try:
            self._redis = Redis.from_url(url, socket_connect_timeout=5.0)
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL: {exc}") from exc
        self._users = f"{prefix}:auth:users"
        self._apikeys = f"{prefix}:auth:apikeys"
        self._digests = f"{prefix}:auth:digests"
        self._keys = f"{prefix}:auth:keys"
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def open(self) -> None:
        try:
            await self._redis.ping()
        except _FAILURES as exc:
            await self._redis.aclose()
            raise AuthError(f"cannot reach Redis for the accounts: {exc}") from exc

    async def close(self) -> None:
        await self._redis.aclose()

    async def _values(self, key: str) -> list[dict[str, Any]]:
        try:
            raw = await self._redis.hvals(key)
        except _FAILURES as exc:
            raise AuthError(f"Redis: {exc}") from exc
        return [orjson.loads(item) for item in raw]

    async def _get(self, key: str, field: str) -> dict[str, Any] | None:
        try:
            raw = await self._redis.hget(key, field)
        except _FAILURES as exc:
            raise AuthError(f"Redis: {exc}") from exc
        return None if raw is None else orjson.loads(raw)

    async def _add(self, key: str, field: str, record: dict[str, Any]) -> bool:
        try:
            return bool(await self._redis.hsetnx(key, field, orjson.dumps(record)))
        except _FAILURES as exc:
            raise AuthError(f"Redis: {exc}") from exc

    async def _remove(self, key: str, field: str) -> bool:
        try:
            return bool(await self._redis.hdel(key, field))
        except _FAILURES as exc:
            raise AuthError(f"Redis: {exc}") from exc

    async def users(self) -> list[User]:
        return [User.of(data) for data in await self._values(self._users)]

    async def user(self, name: str) -> User | None:
        data = await self._get(self._users, name)
        return None if data is None else User.of(data)

    async def add_user(self, user: User) -> bool:
        return await self._add(self._users, user.name, user.as_dict())

    async def remove_user(self, name: str) -> bool:
        return await self._remove(self._users, name)

    async def api_keys(self) -> list[ApiKey]:
        return [ApiKey.of(data) for data in await self._values(self._apikeys)]

    async def api_key(self, digest: str) -> ApiKey | None:
        now = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and now - cached[0] < API_KEY_CACHE:
            return cached[1]
        data = await self._get(self._digests, digest)
        key = None if data is None else ApiKey.of(data)
        if len(self._cache) >= CACHE_SIZE:
            self._cache.clear()
        self._cache[digest] = (now, key)
        return key

    async def add_api_key(self, key: ApiKey) -> bool:
        record = orjson.dumps(key.as_dict())
        try:
            if not await self._redis.hsetnx(self._apikeys, key.name, record):
                return False
            await self._redis.hset(self._digests, key.digest, record)
        except _FAILURES as exc:
            raise AuthError(f"Redis: {exc}") from exc
        return True

    async def remove_api_key(self, name: str) -> bool:
        data = await self._get(self._apikeys, name)
        if data is None:
            return False
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._apikeys, name)
                pipe.hdel(self._digests, data["digest"])
                await pipe.execute()
        except _FAILURES as exc:
            raise AuthError(f"Redis: {exc}") from exc
        self._cache.pop(data["digest"], None)
        return True

    async def signing_keys(self) -> list[SigningKey]:
        return [SigningKey.of(data) for data in await self._values(self._keys)]

    async def add_signing_key(self, key: SigningKey) -> bool:
        return await self._add(self._keys, key.kid, key.as_dict())

    async def remove_signing_key(self, kid: str) -> bool:
        return await self._remove(self._keys, kid)
