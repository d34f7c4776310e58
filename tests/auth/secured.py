"""The API with credentials required, in process: an authenticator over accounts in a file
of the test's own, and an API key for each role. Imported by the conftest of these tests
and by the role matrix under tests/api."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from iotstream.api import ApiContext, create_app
from iotstream.auth import Authenticator, Role, add_api_key
from iotstream.auth.file import FileAccounts
from iotstream.config import AuthSettings

ORIGIN = "http://dashboard.example"


@pytest.fixture
async def authenticator(tmp_path: Path) -> AsyncIterator[Authenticator]:
    auth = Authenticator(
        FileAccounts(tmp_path / "auth" / "accounts.json"),
        AuthSettings(token_ttl=60, login_attempts=3),
        required=True,
    )
    async with auth:
        yield auth


@pytest.fixture
async def api_keys(authenticator: Authenticator) -> dict[Role, str]:
    """An API key for each role."""
    keys = {}
    for role in Role:
        _, keys[role] = await add_api_key(authenticator.accounts, f"{role}-key", role)
    return keys


@pytest.fixture
def secured(context: ApiContext, authenticator: Authenticator) -> FastAPI:
    context.auth = authenticator
    return create_app(context, [ORIGIN])


@pytest.fixture
async def secured_client(secured: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=secured, client=("10.1.2.3", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client
