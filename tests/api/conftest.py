"""The API in process: the app over a started memory store and hub, driven through httpx's
ASGI transport. Commands go to a broker that is not there unless a test asks for
``reachable_broker`` (an in-process amqtt broker on a free port). WebSockets go through
``WebSocketSession``, an ASGI client on the same loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from harness import free_port
from iotstream.api import ApiContext, create_app
from iotstream.broker import AmqttBroker
from iotstream.commands import CommandService
from iotstream.config import MqttEndpoint
from iotstream.hub import Hub
from iotstream.mqtt import MqttConnection
from iotstream.parser import Parser
from iotstream.rates import RateMeter
from iotstream.store import MemoryStore

TIMEOUT = 5.0

Feed = Callable[..., Awaitable[None]]
"""``await feed(topic, payload, received_at)``: one MQTT message, parsed into the store."""


def unreachable_link() -> MqttConnection:
    """A command link that never connected: nothing listens on its port."""
    return MqttConnection(MqttEndpoint("127.0.0.1", free_port()), "commands")


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    async with MemoryStore() as store:
        yield store


@pytest.fixture
async def hub(store: MemoryStore) -> AsyncIterator[Hub]:
    async with Hub(store) as hub:
        yield hub


@pytest.fixture
def feed(store: MemoryStore) -> Feed:
    parser = Parser()

    async def feed(topic: str, payload: bytes, received_at: float | None = None) -> None:
        await store.apply(parser.parse(topic, payload, received_at))

    return feed


async def until(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait for something another task does, such as the hub sending a frame."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


@pytest.fixture
def context(store: MemoryStore, hub: Hub) -> ApiContext:
    commands = CommandService(unreachable_link(), store)
    return ApiContext(store, hub, commands, RateMeter(store), {"store": store, "hub": hub})


@pytest.fixture
def app(context: ApiContext) -> FastAPI:
    return create_app(context, ["*"])


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


@pytest.fixture
async def reachable_broker(context: ApiContext) -> AsyncIterator[AmqttBroker]:
    """An in-process broker, with the app's command link connected to it."""
    broker = AmqttBroker("127.0.0.1", free_port())
    # amqtt speaks MQTT 3.1.1 only (an MQTT 5 link falls back, after a second's delay).
    link = MqttConnection(MqttEndpoint(broker.host, broker.port), "commands")
    async with broker, link:
        assert link.connected.is_set()
        context.commands = CommandService(link, context.store)
        yield broker


class WebSocketSession:
    """A WebSocket client that talks ASGI to the app on the test's own event loop, so the
    route meets the same store and hub as the test (Starlette's TestClient runs the app on a
    loop of its own). ``async with WebSocketSession(app, "/coordinates?since=3") as ws:``"""

    def __init__(self, app: FastAPI, target: str) -> None:
        path, _, query = target.partition("?")
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "scheme": "ws",
            "server": ("test", 80),
            "client": ("127.0.0.1", 50000),
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"test")],
            "subprotocols": [],
        }
        self.app = app
        self._to_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._from_app: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> dict[str, Any]:
        """Start the handshake; the app's answer: ``websocket.accept`` or a refusal."""
        self._to_app.put_nowait({"type": "websocket.connect"})
        self._task = asyncio.create_task(self.app(self.scope, self._to_app.get, self._from_app.put))
        return await self.receive()

    async def close(self) -> None:
        """Leave (if the app has not ended the session) and wait for the route to return."""
        assert self._task is not None
        self._to_app.put_nowait({"type": "websocket.disconnect", "code": 1000})
        await asyncio.wait_for(self._task, TIMEOUT)

    async def __aenter__(self) -> WebSocketSession:
        accept = await self.open()
        assert accept["type"] == "websocket.accept", accept
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def receive(self) -> dict[str, Any]:
        """The next ASGI message the app sent; fails when none comes in time."""
        return await asyncio.wait_for(self._from_app.get(), TIMEOUT)

    async def receive_frame(self) -> Any:
        message = await self.receive()
        assert message["type"] == "websocket.send", message
        return orjson.loads(message["text"])

    def send_frame(self, frame: object) -> None:
        self._to_app.put_nowait({"type": "websocket.receive", "text": orjson.dumps(frame).decode()})
