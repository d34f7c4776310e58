"""The accounts seam: users, API keys and token signing keys, shared by every api instance.

``FileAccounts`` keeps them in one file under the data dir (embedded mode);
``RedisAccounts`` in Redis (distributed mode), so every api instance and the CLI see the
same accounts. Only hashes of passwords and API keys are stored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from types import TracebackType
from typing import Any, Self

from .roles import Role


@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str
    created: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> User:
        return cls(data["name"], Role(data["role"]), data["password_hash"], data["created"])


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key: ``digest`` is the SHA-256 of the key, which is random enough that a
    slow hash would only slow every request down."""

    name: str
    role: Role
    digest: str
    created: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> ApiKey:
        return cls(data["name"], Role(data["role"]), data["digest"], data["created"])


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A token signing key as stored: its id and private key (PEM)."""

    kid: str
    pem: str
    created: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def of(cls, data: dict[str, Any]) -> SigningKey:
        return cls(data["kid"], data["pem"], data["created"])


class Accounts(ABC):
    """Where users, API keys and signing keys live. ``add_*`` never replaces: it answers
    ``False`` when the name is taken, so concurrent instances agree on who was first."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def users(self) -> list[User]: ...

    @abstractmethod
    async def user(self, name: str) -> User | None: ...

    @abstractmethod
    async def add_user(self, user: User) -> bool: ...

    @abstractmethod
    async def remove_user(self, name: str) -> bool: ...

    @abstractmethod
    async def api_keys(self) -> list[ApiKey]: ...

    @abstractmethod
    async def api_key(self, digest: str) -> ApiKey | None:
        """The API key whose SHA-256 is ``digest``."""

    @abstractmethod
    async def add_api_key(self, key: ApiKey) -> bool: ...

    @abstractmethod
    async def remove_api_key(self, name: str) -> bool: ...

    @abstractmethod
    async def signing_keys(self) -> list[SigningKey]: ...

    @abstractmethod
    async def add_signing_key(self, key: SigningKey) -> bool: ...

    @abstractmethod
    async def remove_signing_key(self, kid: str) -> bool: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
