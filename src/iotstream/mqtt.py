"""A gmqtt connection that keeps itself connected and reports its state.

Whatever it publishes is valid for the broker: a topic the broker would refuse is an
``InvalidMessage`` before anything is sent. A message the broker drops the connection for
anyway is not resent forever: gmqtt replays unacknowledged QoS 1 messages after every
reconnect, so one refused message would take the connection down again and again. A message
that was the oldest unacknowledged one at ``MAX_ATTEMPTS`` disconnects in a row is dropped,
counted, logged and kept aside in ``rejected``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv50, MQTTv311
from gmqtt.mqtt.handler import MQTTConnectError

from .config import MqttEndpoint
from .errors import InvalidMessage
from .health import Health
from .lifecycle import Component
from .models import mqtt_text_problem

log = logging.getLogger(__name__)

OnMessage = Callable[..., int | Awaitable[int] | None]

MAX_ATTEMPTS = 3
"""Disconnects in a row with the same message oldest in flight before it is dropped."""
REJECTED_KEEP = 100


def topic_problem(topic: str) -> str | None:
    """Why the broker would refuse a PUBLISH to ``topic``, or ``None``."""
    if not topic:
        return "the topic is empty"
    if "+" in topic or "#" in topic:
        return "the topic contains a wildcard ('+' or '#')"
    problem = mqtt_text_problem(topic)
    return None if problem is None else f"the topic {problem}"


@dataclass(frozen=True, slots=True)
class RefusedMessage:
    """A message that was not sent, or that the broker would not take, and why."""

    topic: str
    payload: bytes
    reason: str
    at: float


def _variable_int(buffer: bytes, index: int) -> tuple[int, int]:
    """The MQTT variable byte integer at ``index``, and the index after it."""
    value, multiplier = 0, 1
    while True:
        byte = buffer[index]
        value += (byte & 0x7F) * multiplier
        multiplier *= 128
        index += 1
        if not byte & 0x80:
            return value, index


def _publish_topic(package: bytes, mqtt5: bool = False) -> tuple[str, bytes]:
    """The topic and payload of a PUBLISH packet as gmqtt stored it (``mqtt5``: with
    properties)."""
    length, index = _variable_int(package, 1)  # the remaining length
    size = int.from_bytes(package[index : index + 2], "big")
    topic = package[index + 2 : index + 2 + size].decode("utf-8", "replace")
    # QoS > 0: a 2-byte packet id follows the topic; then, in MQTT 5, the properties.
    start = index + 4 + size
    if mqtt5:
        properties, start = _variable_int(package, start)
        start += properties
    return topic, package[start : index + length]


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
        mqtt5: bool = False,
    ) -> None:
        self.endpoint = endpoint
        # MQTT 5 where the broker speaks it: gmqtt falls back to 3.1.1 when it does not.
        self.version = MQTTv50 if mqtt5 else MQTTv311
        self.name = name
        self.subscriptions = subscriptions or []
        self.qos = qos
        self.client_id = client_id or f"iotstream-{name}-{uuid.uuid4().hex[:8]}"
        self.connected = asyncio.Event()
        self.disconnects = 0
        self.refused = 0
        """Messages not sent (``InvalidMessage``) or dropped after ``MAX_ATTEMPTS``."""
        self.rejected: deque[RefusedMessage] = deque(maxlen=REJECTED_KEEP)
        self._suspect: tuple[int, bytes, int] | None = None
        self._attempted = False
        self._logged_reasons: set[str] = set()
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
        # gmqtt replays what is in flight right after this: the oldest is sent again.
        self._attempted = True
        self.connected.set()
        log.info("%s connected to %s", self.name, self.endpoint)

    def _on_disconnect(self, client: Any, packet: Any, exc: Any = None) -> None:
        if self.connected.is_set() and not self._closing:
            self.disconnects += 1
            log.warning("%s lost its MQTT connection; reconnecting", self.name)
            self._strike_oldest_in_flight()
        self.connected.clear()

    def _strike_oldest_in_flight(self) -> None:
        """Drop the oldest unacknowledged message once the connection was lost ``MAX_ATTEMPTS``
        times in a row with it oldest in flight: the broker refuses it (a Mosquitto that
        finds a PUBLISH invalid disconnects the client without a word)."""
        if not self._attempted:
            return
        self._attempted = False
        in_flight = self.client._persistent_storage.get_all()
        if not in_flight:
            self._suspect = None
            return
        mid, package = in_flight[0]
        strikes = 1
        if self._suspect is not None and self._suspect[:2] == (mid, package):
            strikes = self._suspect[2] + 1
        if strikes < MAX_ATTEMPTS:
            self._suspect = (mid, package, strikes)
            return
        self._suspect = None
        self.client._persistent_storage.remove_message_by_mid(mid)
        with contextlib.suppress(AttributeError):  # give the packet id back to gmqtt
            self.client._package_handler.id_generator.free_id(mid)
        # gmqtt has no public word on the version it settled on with the broker.
        mqtt5 = self.client._connection_state.protocol_version >= MQTTv50
        topic, payload = _publish_topic(package, mqtt5)
        self._reject(
            topic,
            payload,
            f"the broker dropped the connection each of the {MAX_ATTEMPTS} times it was sent",
        )

    def _reject(self, topic: str, payload: bytes, reason: str) -> None:
        self.refused += 1
        self.rejected.append(RefusedMessage(topic, payload[:1024], reason, time.time()))
        if reason not in self._logged_reasons:
            # Once per reason: a flood of bad messages must not flood the log.
            self._logged_reasons.add(reason)
            log.error(
                "%s dropped a message to %r: %s; further ones are only counted",
                self.name,
                topic,
                reason,
            )

    async def _connect_until_up(self) -> None:
        # gmqtt reconnects by itself once connected, but not before the first success.
        delay = 0.2
        while True:
            try:
                await self.client.connect(
                    self.endpoint.host,
                    self.endpoint.port,
                    ssl=self.endpoint.tls,
                    keepalive=30,
                    version=self.version,
                )
                return
            except (TimeoutError, OSError, MQTTConnectError) as exc:
                # A refused CONNACK too: a broker reloading its accounts may know us soon.
                log.warning("%s cannot connect to %s (%s)", self.name, self.endpoint, exc)
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

    def publish(self, topic: str, payload: bytes | str, qos: int = 0, **properties: Any) -> None:
        """Send a message; raises ``InvalidMessage`` (sending nothing) for a topic the broker
        would refuse. ``properties`` are MQTT 5 publish properties (gmqtt's names, such as
        ``message_expiry_interval``); over MQTT 3.1.1 they are left out."""
        problem = topic_problem(topic)
        if problem is not None:
            data = payload.encode("utf-8", "replace") if isinstance(payload, str) else payload
            self._reject(topic.encode("utf-8", "replace").decode(), data, problem)
            raise InvalidMessage(problem)
        self.client.publish(topic, payload, qos=qos, **properties)

    async def drain(self) -> None:
        """Wait until the broker acknowledged every QoS 1/2 message published so far."""
        # gmqtt keeps unacknowledged messages in its storage and has no public wait for it.
        await self.client._persistent_storage.wait_empty()

    def health(self) -> Health:
        refused = f", {self.refused} messages refused" if self.refused else ""
        if self.connected.is_set():
            return Health(True, f"connected to {self.endpoint}{refused}")
        return Health(False, f"not connected to {self.endpoint}{refused}")
