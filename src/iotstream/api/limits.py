"""Bounds on what a client may send: request bodies and query strings over HTTP, message
size, rate and kind on the WebSocket.

Every body the API takes is small (a command, a login form, a user), so a request body is
read whole, up to ``MAX_BODY``, before the app sees it: a larger one is answered 413 without
being read further, whether it announced its length or not. A longer query string is 414.
"""

from __future__ import annotations

import time

import orjson
from fastapi import WebSocket
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

MAX_BODY = 64 * 1024
MAX_QUERY = 4096
MAX_WS_MESSAGE = 4096
"""The largest text frame a WebSocket client may send (its messages are a few words)."""
WS_RATE = 20.0
WS_BURST = 40.0
"""A WebSocket client may send ``WS_RATE`` messages a second, ``WS_BURST`` at once."""

# RFC 6455 close codes.
UNSUPPORTED_DATA = 1003
POLICY_VIOLATION = 1008
MESSAGE_TOO_BIG = 1009


async def _answer(send: Send, status: int, detail: str) -> None:
    body = orjson.dumps({"detail": detail})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestLimits:
    """ASGI middleware: 414 for a query string over ``max_query`` bytes, 413 for a body
    over ``max_body`` bytes."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY, max_query: int = MAX_QUERY):
        self.app = app
        self.max_body = max_body
        self.max_query = max_query

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if len(scope.get("query_string", b"")) > self.max_query:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": POLICY_VIOLATION})
            else:
                await _answer(send, 414, f"the query string is over {self.max_query} bytes")
            return
        if scope["type"] == "websocket" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_body):
                await _answer(send, 413, f"the request body is over {self.max_body} bytes")
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _answer(send, 413, f"the request body is over {self.max_body} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class ClientMessages:
    """What a WebSocket client sends, read for the hub: text frames only, each at most
    ``MAX_WS_MESSAGE`` characters, at most ``WS_RATE`` a second. A client that breaks one of
    these ends its session: ``refusal`` then holds the close code (1003, 1009 or 1008) and
    the reason, for the route to close the socket with once the hub let go of it."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.refusal: tuple[int, str] | None = None
        self._allowance = WS_BURST
        self._at = time.monotonic()

    def _refuse(self, code: int, reason: str) -> WebSocketDisconnect:
        self.refusal = (code, reason)
        return WebSocketDisconnect(code, reason)

    async def receive(self) -> str:
        message = await self.websocket.receive()
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000), message.get("reason"))
        now = time.monotonic()
        self._allowance = min(WS_BURST, self._allowance + (now - self._at) * WS_RATE)
        self._at = now
        if self._allowance < 1:
            raise self._refuse(POLICY_VIOLATION, "too many messages")
        self._allowance -= 1
        text = message.get("text")
        if text is None:
            raise self._refuse(UNSUPPORTED_DATA, "binary frames are not accepted; send JSON text")
        if len(text) > MAX_WS_MESSAGE:
            raise self._refuse(MESSAGE_TOO_BIG, f"a message is at most {MAX_WS_MESSAGE} characters")
        return str(text)
