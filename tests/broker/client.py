"""A plain MQTT 3.1.1 client for tests (gmqtt, as ``iotstream.mqtt`` uses): subscriptions
wait for their SUBACK, QoS 1 publishes can wait for their PUBACK, and what arrives is
queued, so a test waits on the message itself instead of sleeping."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv311

TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool


class MqttClient:
    """``async with MqttClient(port) as client:`` connects and disconnects."""

    def __init__(
        self,
        port: int,
        client_id: str | None = None,
        clean_session: bool = True,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
    ):
        self.port = port
        self.tls = tls
        self.client = Client(client_id or f"test-{uuid.uuid4().hex[:12]}", clean_session)
        if username is not None:
            self.client.set_auth_credentials(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self._subacks: dict[int, asyncio.Future[tuple[int, ...]]] = {}

    def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        self.messages.put_nowait(Message(topic, payload, qos, bool(properties["retain"])))
        return 0

    def _on_subscribe(
        self, client: Any, mid: int, granted: tuple[int, ...], properties: Any
    ) -> None:
        future = self._subacks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(tuple(granted))

    async def connect(self) -> None:
        connecting = self.client.connect(
            "127.0.0.1", self.port, ssl=self.tls or False, keepalive=30, version=MQTTv311
        )
        await asyncio.wait_for(connecting, TIMEOUT)

    async def disconnect(self) -> None:
        if self.client.is_connected:
            await self.client.disconnect()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.disconnect()

    async def subscribe(self, topic: str, qos: int) -> int:
        """Subscribe and wait for the SUBACK; returns the QoS the broker granted."""
        future: asyncio.Future[tuple[int, ...]] = asyncio.get_running_loop().create_future()
        mid: int = self.client.subscribe(topic, qos=qos)
        self._subacks[mid] = future
        [granted] = await asyncio.wait_for(future, TIMEOUT)
        return granted

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    async def drain(self) -> None:
        """Wait until the broker acknowledged every QoS 1 message published so far."""
        # gmqtt keeps unacknowledged messages in its storage and has no public wait for it.
        await asyncio.wait_for(self.client._persistent_storage.wait_empty(), TIMEOUT)

    async def receive(self, count: int, timeout: float = TIMEOUT) -> list[Message]:
        """The next ``count`` messages; fails when they do not all arrive in time."""
        got: list[Message] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(got) < count:
            remaining = deadline - loop.time()
            try:
                got.append(await asyncio.wait_for(self.messages.get(), max(remaining, 0)))
            except TimeoutError:
                raise AssertionError(f"{len(got)} of {count} messages arrived: {got}") from None
        return got
