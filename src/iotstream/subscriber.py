"""The ingest's MQTT connection: an MQTT 3.1.1 subscriber that takes messages in bulk.

A general client handles each message on its own: gmqtt runs a handler, checks whether the
callback is a coroutine and calls it, per message, which took about 45 % of the event loop
at 100k msg/s. The ingest needs much less: everything that arrived, as ``(topic, payload,
received_at)``, whenever it asks. So this client reads each chunk the socket hands over in
one loop (``_Protocol.data_received``), shares the topic strings it decoded before, and
acknowledges a chunk's QoS 1 and 2 messages in one write, either at once or, for the bridge
(``acknowledge_on_receipt=False``), when the ingest says the batch holding them is on the
bus (``acknowledge``).

Memory is bounded: past ``max_pending`` messages not yet taken, the client stops reading
the socket, and the broker queues what comes next (TCP backpressure) until ``take`` makes
room. It reconnects by itself (with backoff) and keeps the connection alive with PINGREQ.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import struct
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from .config import MqttEndpoint
from .health import Health
from .lifecycle import Component

log = logging.getLogger(__name__)

T = TypeVar("T")
Message = tuple[str, bytes, float]
"""Topic, payload and the time it was received."""

PUBLISH, PUBREL = 0x30, 0x62
CONNACK, SUBACK, PINGRESP = 0x20, 0x90, 0xD0
PUBACK_PACKET, PUBREC_PACKET, PUBCOMP_PACKET = 0x40020000, 0x50020000, 0x70020000
"""A 4-byte acknowledgement packet is its type and length in the high half, then its id."""
PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
KEEPALIVE = 30
CONNECT_TIMEOUT = 10.0
MAX_PENDING = 500_000
TOPIC_CACHE = 100_000
CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class Refused(Exception):
    """The broker answered CONNECT or SUBSCRIBE with a refusal."""


def _string(text: str) -> bytes:
    data = text.encode()
    return len(data).to_bytes(2, "big") + data


def _packet(kind: int, body: bytes) -> bytes:
    length, encoded = len(body), bytearray()
    while True:
        byte, length = length & 0x7F, length >> 7
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes([kind]) + bytes(encoded) + body


def _acks(packets: list[int]) -> bytes:
    return struct.pack(f">{len(packets)}I", *packets)


class _Protocol(asyncio.Protocol):
    """One connection: splits what arrives into packets and hands the messages over."""

    def __init__(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        self.transport: asyncio.Transport | None = None
        self.rest = b""
        self.last_seen = time.monotonic()
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[int] = loop.create_future()
        self.suback: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.paused = False
        self.received_qos2: set[int] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    async def reply(self, waiter: asyncio.Future[T]) -> T:
        """What the broker answers, once it does (``CONNECT_TIMEOUT``)."""
        either: set[asyncio.Future[Any]] = {waiter, self.closed}
        await asyncio.wait(either, timeout=CONNECT_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        if waiter.done():
            return waiter.result()
        if self.closed.done():
            raise ConnectionError("the broker closed the connection")
        raise TimeoutError("the broker did not answer")

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.last_seen = time.monotonic()
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.rest:
            data = self.rest + data
        subscriber = self.subscriber
        messages = subscriber._messages
        topics = subscriber._topics
        acks = subscriber._acks if not subscriber.acknowledge_on_receipt else []
        now = time.time()
        self.last_seen = time.monotonic()
        end = len(data)
        pos = 0
        while end - pos >= 2:
            header = data[pos]
            i = pos + 1
            length = data[i]
            i += 1
            if length & 0x80:  # a variable byte integer of up to four bytes
                length &= 0x7F
                shift = 7
                complete = False
                while i < end:
                    byte = data[i]
                    i += 1
                    length |= (byte & 0x7F) << shift
                    if not byte & 0x80:
                        complete = True
                        break
                    shift += 7
                    if shift > 21:
                        self._malformed("a remaining length longer than four bytes")
                        return
                if not complete:
                    break
            stop = i + length
            if stop > end:
                break
            kind = header & 0xF0
            if kind == PUBLISH:
                size = (data[i] << 8) | data[i + 1]
                start = i + 2 + size
                raw = data[i + 2 : start]
                topic = topics.get(raw)
                if topic is None:
                    topic = subscriber._topic(raw)
                qos = (header >> 1) & 3
                if qos:
                    packet_id = (data[start] << 8) | data[start + 1]
                    start += 2
                    if qos == 1:
                        acks.append(PUBACK_PACKET | packet_id)
                    else:
                        acks.append(PUBREC_PACKET | packet_id)
                        if packet_id in self.received_qos2:
                            pos = stop  # sent again before our PUBREC arrived: once is enough
                            continue
                        self.received_qos2.add(packet_id)
                messages.append((topic, data[start:stop], now))
            elif header == PUBREL:
                packet_id = (data[i] << 8) | data[i + 1]
                self.received_qos2.discard(packet_id)
                self.write(_acks([PUBCOMP_PACKET | packet_id]))
            elif kind == CONNACK and not self.connack.done():
                self.connack.set_result(data[i + 1])
            elif kind == SUBACK and not self.suback.done():
                self.suback.set_result(data[i + 2 : stop])
            # PINGRESP and anything else: only proof that the broker is there (last_seen).
            pos = stop
        self.rest = data[pos:] if pos < end else b""
        if subscriber.acknowledge_on_receipt and acks:
            self.write(_acks(acks))
        if len(messages) >= subscriber.max_pending:
            self.pause()
        subscriber.on_arrival()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _malformed(self, why: str) -> None:
        log.error("%s: malformed packet from the broker (%s); reconnecting", self.subscriber, why)
        self.rest = b""
        if self.transport is not None:
            self.transport.abort()


class Subscriber(Component):
    """One subscribing MQTT connection; ``async with`` connects (retrying) and disconnects.

    ``on_arrival`` is called after each chunk of messages arrived; ``take`` returns them."""

    def __init__(
        self,
        endpoint: MqttEndpoint,
        name: str,
        topics: list[str],
        qos: int,
        on_arrival: Callable[[], None],
        *,
        client_id: str | None = None,
        clean_session: bool = True,
        acknowledge_on_receipt: bool = True,
        keepalive: int = KEEPALIVE,
        max_pending: int = MAX_PENDING,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """``tls``: how to check the broker of an ``mqtts://`` endpoint (default: against
        the system's trusted CAs)."""
        self.endpoint = endpoint
        self.name = name
        self.topics = topics
        self.qos = qos
        self.on_arrival = on_arrival
        self.client_id = client_id or f"iotstream-{name}-{uuid.uuid4().hex[:8]}"
        self.clean_session = clean_session
        self.acknowledge_on_receipt = acknowledge_on_receipt
        self.keepalive = keepalive
        self.max_pending = max_pending
        self.tls = (tls or ssl.create_default_context()) if endpoint.tls else None
        self.connected = asyncio.Event()
        self._answered = asyncio.Event()
        """Set once the broker accepted or refused us."""
        self.disconnects = 0
        self.refusal: str | None = None
        """Why the broker last refused to connect or subscribe us, while it does."""
        self._messages: list[Message] = []
        self._acks: list[int] = []
        self._topics: dict[bytes, str] = {}
        self._generation = 0
        """Counts connections: acknowledgements are for the connection they came on."""
        self._protocol: _Protocol | None = None
        self._runner: asyncio.Task[None] | None = None
        self._closing = False

    def __str__(self) -> str:
        return f"{self.name} ({self.endpoint})"

    @property
    def is_connected(self) -> bool:
        return self.connected.is_set()

    def _topic(self, raw: bytes) -> str:
        try:
            topic = raw.decode()
        except UnicodeDecodeError:  # the parser rejects it, naming the topic as best it can
            topic = raw.decode("utf-8", "replace")
        if len(self._topics) >= TOPIC_CACHE:
            self._topics.clear()
        self._topics[raw] = topic
        return topic

    # --- what the ingest calls ---------------------------------------------------------------

    def take(self) -> tuple[list[Message], list[int], int]:
        """The messages that arrived since the last call, the acknowledgements they wait for
        (with ``acknowledge_on_receipt=False``) and the connection they came on."""
        messages, self._messages = self._messages, []
        acks, self._acks = self._acks, []
        if self._protocol is not None:
            self._protocol.resume()
        return messages, acks, self._generation

    def acknowledge(self, acks: list[int], generation: int) -> None:
        """Acknowledge messages ``take`` returned, if the connection they came on is still
        up; after a reconnect the broker delivers them again."""
        if acks and generation == self._generation and self._protocol is not None:
            self._protocol.write(_acks(acks))

    # --- the connection ------------------------------------------------------------------------

    def _connect_packet(self) -> bytes:
        flags = 0x02 if self.clean_session else 0
        credentials = b""
        if self.endpoint.username is not None:
            flags |= 0x80
            credentials += _string(self.endpoint.username)
            if self.endpoint.password is not None:
                flags |= 0x40
                credentials += _string(self.endpoint.password)
        body = (
            _string("MQTT")
            + bytes([4, flags])
            + self.keepalive.to_bytes(2, "big")
            + _string(self.client_id)
            + credentials
        )
        return _packet(0x10, body)

    def _subscribe_packet(self) -> bytes:
        body = (1).to_bytes(2, "big") + b"".join(
            _string(topic) + bytes([self.qos]) for topic in self.topics
        )
        return _packet(0x82, body)

    async def _session(self) -> None:
        """Connect, subscribe, and stay until the connection is lost."""
        loop = asyncio.get_running_loop()
        transport, protocol = await asyncio.wait_for(
            loop.create_connection(
                lambda: _Protocol(self), self.endpoint.host, self.endpoint.port, ssl=self.tls
            ),
            CONNECT_TIMEOUT,
        )
        # From now on what arrives is this connection's: a persistent session's unacknowledged
        # messages come again right after CONNACK, before SUBACK, and their acknowledgements
        # must go out on this connection, or the broker keeps them in flight for good.
        self._generation += 1
        self._protocol = protocol
        try:
            protocol.write(self._connect_packet())
            code = await protocol.reply(protocol.connack)
            if code:
                raise Refused(f"CONNECT refused: {CONNACK_REASONS.get(code, f'code {code}')}")
            protocol.write(self._subscribe_packet())
            granted = await protocol.reply(protocol.suback)
            if 0x80 in granted:
                refused = [t for t, code in zip(self.topics, granted, strict=False) if code & 0x80]
                raise Refused(f"SUBSCRIBE refused for {', '.join(refused)}")
            self.refusal = None
            self.connected.set()
            self._answered.set()
            log.info("%s connected", self)
            await self._keep_alive(protocol)
        finally:
            self._protocol = None
            transport.abort()

    async def _keep_alive(self, protocol: _Protocol) -> None:
        interval = self.keepalive / 2
        while not protocol.closed.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(protocol.closed), interval)
                return
            if protocol.paused:  # nothing is read, so the PINGRESP would not be seen either
                continue
            if time.monotonic() - protocol.last_seen > 1.5 * self.keepalive:
                log.warning("%s: the broker went silent; reconnecting", self)
                return
            protocol.write(PINGREQ)

    async def _run(self) -> None:
        delay = 0.2
        while not self._closing:
            try:
                await self._session()
                delay = 0.2
            except Refused as exc:
                if self.refusal != str(exc):  # once, not at every retry
                    log.error("%s: %s", self, exc)
                self.refusal = str(exc)
                self._answered.set()
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("%s cannot reach the broker (%s)", self, exc or type(exc).__name__)
            if self.connected.is_set():
                self.connected.clear()
                if not self._closing:
                    self.disconnects += 1
                    log.warning("%s lost its MQTT connection; reconnecting", self)
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def start(self) -> None:
        self._closing = False
        self._runner = asyncio.create_task(self._run(), name=f"{self.name}-mqtt")
        with contextlib.suppress(TimeoutError):  # then it goes on trying in the background
            await asyncio.wait_for(self._answered.wait(), CONNECT_TIMEOUT)

    async def stop(self) -> None:
        self._closing = True
        protocol = self._protocol
        if protocol is not None and protocol.transport is not None:
            protocol.write(DISCONNECT)
            protocol.transport.close()
        if self._runner is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._runner, 2.0)
            self._runner = None
        self.connected.clear()

    def health(self) -> Health:
        if self.connected.is_set():
            return Health(True, f"connected to {self.endpoint}")
        why = f": {self.refusal}" if self.refusal else ""
        return Health(False, f"not connected to {self.endpoint}{why}")
