"""The /coordinates WebSocket with credentials required: a token in the Authorization header
or, as browsers send it, in Sec-WebSocket-Protocol; the Origin checked; the session closed
with 1008 when its token expires; what the client sends bounded."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI

from iotstream.api import ApiContext, create_app
from iotstream.api.limits import MAX_WS_MESSAGE, WS_BURST
from iotstream.auth import Authenticator, Role, add_user
from iotstream.auth.file import FileAccounts
from iotstream.config import AuthSettings
from tests.api.conftest import WebSocketSession

from .secured import ORIGIN

PASSWORD = "correct horse battery"


def session(app: FastAPI, *headers: tuple[str, str]) -> WebSocketSession:
    ws = WebSocketSession(app, "/coordinates")
    ws.scope["headers"].extend((name.encode(), value.encode()) for name, value in headers)
    return ws


async def token_for(auth: Authenticator, role: Role = Role.VIEWER) -> str:
    await add_user(auth.accounts, f"{role}-user", role, PASSWORD)
    return (await auth.login(f"{role}-user", PASSWORD, "127.0.0.1")).access_token


async def test_a_bearer_token_in_the_authorization_header(
    secured: FastAPI, authenticator: Authenticator
) -> None:
    token = await token_for(authenticator)
    async with session(secured, ("authorization", f"Bearer {token}")) as ws:
        assert (await ws.receive_frame())["type"] == "snapshot"


async def test_a_browser_carries_the_token_as_a_subprotocol(
    secured: FastAPI, authenticator: Authenticator
) -> None:
    token = await token_for(authenticator)
    ws = session(
        secured, ("sec-websocket-protocol", f"iotstream, bearer.{token}"), ("origin", ORIGIN)
    )
    accept = await ws.open()
    # The answer names ``iotstream``, never the token.
    assert (accept["type"], accept["subprotocol"]) == ("websocket.accept", "iotstream")
    assert (await ws.receive_frame())["type"] == "snapshot"
    await ws.close()


@pytest.mark.parametrize("offer", ["iotstream, bearer.not-a-token", "iotstream"])
async def test_without_a_valid_token_the_handshake_is_refused_with_401(
    secured: FastAPI, offer: str
) -> None:
    ws = session(secured, ("sec-websocket-protocol", offer))
    refusal = await ws.open()
    assert (refusal["type"], refusal["status"]) == ("websocket.http.response.start", 401)
    await ws.close()


async def test_a_foreign_origin_is_refused_with_403(
    secured: FastAPI, api_keys: dict[Role, str]
) -> None:
    ws = session(secured, ("x-api-key", api_keys[Role.ADMIN]), ("origin", "http://evil.example"))
    refusal = await ws.open()
    assert (refusal["type"], refusal["status"]) == ("websocket.http.response.start", 403)
    await ws.close()


async def test_the_session_closes_with_1008_when_its_token_expires(
    context: ApiContext, tmp_path: Path
) -> None:
    auth = Authenticator(
        FileAccounts(tmp_path / "accounts.json"), AuthSettings(token_ttl=1), required=True
    )
    async with auth:
        context.auth = auth
        app = create_app(context, ["*"])
        token = await token_for(auth)
        started = time.monotonic()
        ws = session(app, ("authorization", f"Bearer {token}"))
        assert (await ws.open())["type"] == "websocket.accept"
        assert (await ws.receive_frame())["type"] == "snapshot"
        close = await ws.receive()
        assert (close["type"], close["code"], close["reason"]) == (
            "websocket.close",
            1008,
            "token expired",
        )
        assert time.monotonic() - started < 2.5
        await ws.close()


async def open_session(app: FastAPI, key: str) -> WebSocketSession:
    ws = session(app, ("x-api-key", key))
    assert (await ws.open())["type"] == "websocket.accept"
    assert (await ws.receive_frame())["type"] == "snapshot"
    return ws


async def test_a_binary_frame_is_answered_with_1003(
    secured: FastAPI, api_keys: dict[Role, str]
) -> None:
    ws = await open_session(secured, api_keys[Role.VIEWER])
    ws._to_app.put_nowait({"type": "websocket.receive", "bytes": b'{"type": "ping"}'})
    close = await ws.receive()
    assert (close["type"], close["code"]) == ("websocket.close", 1003)
    await ws.close()


async def test_a_message_too_big_is_answered_with_1009(
    secured: FastAPI, api_keys: dict[Role, str]
) -> None:
    ws = await open_session(secured, api_keys[Role.VIEWER])
    ws.send_frame({"type": "ping", "pad": "x" * MAX_WS_MESSAGE})
    close = await ws.receive()
    assert (close["type"], close["code"]) == ("websocket.close", 1009)
    await ws.close()


async def test_a_flood_of_messages_is_answered_with_1008(
    secured: FastAPI, api_keys: dict[Role, str]
) -> None:
    ws = await open_session(secured, api_keys[Role.VIEWER])
    for _ in range(int(WS_BURST) + 5):
        ws.send_frame({"type": "ping"})
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.close":
            break
        assert orjson.loads(message["text"]) == {"type": "pong"}
    assert (message["code"], message["reason"]) == (1008, "too many messages")
    await ws.close()


async def test_pings_at_a_modest_rate_are_answered(
    secured: FastAPI, api_keys: dict[Role, str]
) -> None:
    ws = await open_session(secured, api_keys[Role.VIEWER])
    for _ in range(5):
        ws.send_frame({"type": "ping"})
        assert await ws.receive_frame() == {"type": "pong"}
        await asyncio.sleep(0.01)
    await ws.close()
