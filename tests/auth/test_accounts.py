"""The accounts seam, one suite for both backends: a file under the data dir and Redis.
Two handles on the same accounts stand for two api instances (or a server and the CLI)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import harness
from iotstream.auth import Accounts, ApiKey, Authenticator, Role, SigningKey, User
from iotstream.auth.file import FileAccounts
from iotstream.config import AuthSettings

Open = Callable[[], Accounts]


def user(name: str, role: Role = Role.VIEWER) -> User:
    return User(name, role, "$argon2id$not-a-real-hash", time.time())


class AccountsSuite:
    @pytest.fixture
    def make(self) -> Open:
        raise NotImplementedError

    @pytest.fixture
    async def pair(self, make: Open) -> AsyncIterator[tuple[Accounts, Accounts]]:
        async with make() as first, make() as second:
            yield first, second

    async def test_users_are_added_once_and_seen_by_every_handle(
        self, pair: tuple[Accounts, Accounts]
    ) -> None:
        first, second = pair
        assert await first.add_user(user("vera"))
        assert not await second.add_user(user("vera", Role.ADMIN))  # taken: not replaced
        found = await second.user("vera")
        assert found is not None and found.role is Role.VIEWER
        assert [u.name for u in await second.users()] == ["vera"]
        assert await second.remove_user("vera")
        assert not await first.remove_user("vera")
        assert await first.user("vera") is None

    async def test_api_keys_are_found_by_digest_and_revoked(
        self, pair: tuple[Accounts, Accounts]
    ) -> None:
        first, second = pair
        key = ApiKey("tracker", Role.OPERATOR, "ab" * 32, time.time())
        assert await first.add_api_key(key)
        assert not await second.add_api_key(ApiKey("tracker", Role.ADMIN, "cd" * 32, 0.0))
        assert await second.api_key("ab" * 32) == key
        assert await second.api_key("cd" * 32) is None
        assert await first.api_keys() == [key]
        assert await first.remove_api_key("tracker")
        # The Redis backend remembers lookups for up to API_KEY_CACHE seconds.
        deadline = time.monotonic() + 3
        while await second.api_key("ab" * 32) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.1)

    async def test_signing_keys(self, pair: tuple[Accounts, Accounts]) -> None:
        first, second = pair
        key = SigningKey("kid1", "-----BEGIN PRIVATE KEY-----", 1.0)
        assert await first.add_signing_key(key)
        assert not await second.add_signing_key(key)
        assert await second.signing_keys() == [key]
        assert await second.remove_signing_key("kid1")
        assert await first.signing_keys() == []

    async def test_of_instances_starting_at_once_one_makes_the_admin(self, make: Open) -> None:
        settings = AuthSettings()
        async with (
            Authenticator(make(), settings, required=True) as first,
            Authenticator(make(), settings, required=True) as second,
        ):
            made = [p for p in (first.initial_password, second.initial_password) if p]
            assert len(made) == 1
            assert [u.name for u in await second.accounts.users()] == ["admin"]
            assert first.keys.jwks() == second.keys.jwks()


class TestFileAccounts(AccountsSuite):
    @pytest.fixture
    def make(self, tmp_path: Path) -> Open:
        return lambda: FileAccounts(tmp_path / "auth" / "accounts.json")


@pytest.mark.redis
class TestRedisAccounts(AccountsSuite):
    @pytest.fixture
    def make(self, redis_server: harness.Service) -> Open:
        from iotstream.auth.redis import RedisAccounts

        prefix = f"test-{uuid.uuid4().hex}"
        return lambda: RedisAccounts(f"redis://{redis_server.address}/0", prefix=prefix)
