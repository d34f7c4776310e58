"""A gmqtt connection that keeps itself connected and reports its state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv311

from .config import MqttEndpoint
from .health import Health
from .lifecycle import Component

log = logging.getLogger(__name__)

OnMessage = Callable[..., int | Awaitable[int] | None]


class MqttConnection(Component):
    """One MQTT client connection. ``async with`` connects (retrying) and disconnects."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        name: str,
        *,
        subscriptions: list[str] | None = None,
        qos: int = 0,
        on_message: OnMessage | None = None,
        client_id: str | None = None,
        clean_session: bool = True,
        acknowledge_on_receipt: bool = True,
    ) -> None:
        self.endpoint = endpoint
        self.name = name
        self.subscriptions = subscriptions or []
        self.qos = qos
        self.client_id = client_id or f"iotstream-{name}-{uuid.uuid4().hex[:8]}"
        self.connected = asyncio.Event()
        self.disconnects = 0
        # Without acknowledge_on_receipt, an async on_message's return sends the PUBACK.
        self.client = Client(
            self.client_id,
            clean_session=clean_session,
            optimistic_acknowledgement=acknowledge_on_receipt,
        )
        self.client.set_config({"reconnect_retries": -1, "reconnect_delay": 1})
        if endpoint.username is not None:
            self.client.set_auth_credentials(endpoint.username, endpoint.password)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        if on_message is not None:
            self.client.on_message = on_message
        self._connector: asyncio.Task[None] | None = None
        self._closing = False

    def _on_connect(self, client: Any, flags: int, result: int, properties: Any) -> None:
        for topic in self.subscriptions:
            client.subscribe(topic, qos=self.qos)
        self.connected.set()
        log.info("%s connected to %s", self.name, self.endpoint)

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        if self.connected.is_set() and not self._closing:
            self.disconnects += 1
            log.warning("%s lost its MQTT connection; reconnecting", self.name)
        self.connected.clear()

    async def _connect_until_up(self) -> None:
        # gmqtt reconnects by itself once connected, but not before the first success.
        delay = 0.2
        while True:
            try:
                await self.client.connect(
                    self.endpoint.host, self.endpoint.port, keepalive=30, version=MQTTv311
                )
                return
            except (TimeoutError, OSError) as exc:
                log.warning("%s cannot reach %s (%s)", self.name, self.endpoint, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        self._connector = asyncio.create_task(self._connect_until_up(), name=f"{self.name}-connect")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._connector), 10)

    async def stop(self) -> None:
        self._closing = True
        if self._connector is not None and not self._connector.done():
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self.client.is_connected:
            with contextlib.suppress(Exception):
                await self.client.disconnect()

    def publish(self, topic: str, payload: bytes | str, qos: int = 0) -> None:
        self.client.publish(topic, payload, qos=qos)

    async def drain(self) -> None:
        """Wait until the broker acknowledged every QoS 1/2 message published so far."""
        # gmqtt keeps unacknowledged messages in its storage and has no public wait for it.
        await self.client._persistent_storage.wait_empty()

    def health(self) -> Health:
        if self.connected.is_set():
            return Health(True, f"connected to {self.endpoint}")
        return Health(False, f"not connected to {self.endpoint}")
