"""The device's side of iotstream: publish positions and fields, answer commands.

It needs only paho-mqtt (``pip install 'iotstream[device]'``), none of the server's
dependencies, and speaks MQTT 5::

    from iotstream.device import Device, CommandRejected

    device = Device("robot1", "mqtt://10.0.0.5:3123", ("robot1", "its-password"))

    @device.command("goto")
    def goto(x: str, y: str) -> dict[str, float]:
        if not on_the_floor(float(x), float(y)):
            raise CommandRejected("the goal is off the floor")
        drive_to(float(x), float(y))          # the outcome is reported once this returns
        return {"x": float(x), "y": float(y)}

    with device:                              # connects, and keeps reconnecting
        while True:
            device.position(x, y, heading=90.0)
            time.sleep(0.1)

What it does on the wire:

- Positions go to ``sensors/{id}/coordinates`` (``{"x", "y", "z"?, ..., "timestamp"}``),
  fields to ``sensors/{id}/{name}``, gathered for ``batch_interval`` seconds and sent together
  (every position with the time it was taken; the latest value of each field). While offline,
  positions are dropped and each field's latest value waits for the connection.
- Presence: ``sensors/{id}/presence`` is ``online`` (retained) while connected; the broker
  publishes the will, ``offline`` (retained), when the connection is lost, and ``stop`` says
  it too. The server keeps a command for an offline device until it is back.
- Commands arrive on ``orin/{id}/command`` as text, ``name arg arg ...``. The device
  acknowledges delivery on ``orin/{id}/command/ack`` at once, runs the handler registered
  for ``name`` (one command at a time, in order, off the network thread) and reports the
  outcome on the response topic the command came with (``orin/{id}/command/result``):
  ``succeeded`` with what the handler returned, ``rejected`` when it raised
  ``CommandRejected`` (or no handler knows the name), ``failed`` when it raised anything else.
- A command the broker delivers again (the same correlation id) is not run twice: it is
  acknowledged again, and its outcome sent again once known.
- The session is persistent (``clean_start`` off, ``session_expiry`` seconds), so what is
  published to the device while it reconnects is kept for it; the server sets a message
  expiry on each command, so none arrives after its time-to-live.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

try:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError("the device SDK needs paho-mqtt: pip install 'iotstream[device]'") from exc

__all__ = ["CommandRejected", "Device", "Handler", "Received"]

log = logging.getLogger(__name__)

DEFAULT_URL = "mqtt://127.0.0.1:3123"
SEEN_KEEP = 1024
"""Command ids remembered to recognise a redelivery."""

Handler = Callable[..., Any]
"""Called with the command's args (strings); what it returns is the result (JSON)."""


class CommandRejected(Exception):
    """Raised by a handler that refuses a command; the message says why."""


@dataclass(frozen=True, slots=True)
class Received:
    """A command as it arrived."""

    id: str | None
    """The server's command id (MQTT 5 correlation data); ``None`` from a plain publisher."""
    name: str
    args: tuple[str, ...]
    response_topic: str


class Device:
    """One device's MQTT connection; ``with device:`` (or ``start``/``stop``) runs it."""

    def __init__(
        self,
        device_id: str,
        url: str = DEFAULT_URL,
        credentials: tuple[str, str] | None = None,
        *,
        batch_interval: float = 0.1,
        session_expiry: int = 3600,
        keepalive: int = 30,
        tls: ssl.SSLContext | None = None,
        qos: int = 0,
    ) -> None:
        if not device_id or any(c in device_id for c in "+#/"):
            raise ValueError("a device id is 1-128 characters without '+', '#' or '/'")
        self.id = device_id
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, not {url!r}")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        self.batch_interval = batch_interval
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.qos = qos
        self.presence_topic = f"sensors/{device_id}/presence"
        self.command_topic = f"orin/{device_id}/command"
        self.ack_topic = f"orin/{device_id}/command/ack"
        self.result_topic = f"orin/{device_id}/command/result"
        self.connected = threading.Event()
        self.handled = 0
        """Commands run by a handler."""
        self.duplicates = 0
        """Redelivered commands recognised and not run again."""
        self._handlers: dict[str, Handler] = {}
        self._seen: OrderedDict[str, bytes | None] = OrderedDict()
        """Command id -> its result message once known."""
        self._lock = threading.Lock()
        self._positions: list[dict[str, Any]] = []
        self._fields: dict[str, Any] = {}
        self._work: queue.Queue[Received | None] = queue.Queue()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"iotstream-device-{device_id}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if credentials is not None:
            client.username_pw_set(*credentials)
        if tls is not None or parts.scheme == "mqtts":
            client.tls_set_context(tls or ssl.create_default_context())
        client.will_set(self.presence_topic, "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self.client = client

    # -- what the device says ---------------------------------------------

    def command(self, name: str) -> Callable[[Handler], Handler]:
        """Register the decorated function as the handler of command ``name``."""

        def register(handler: Handler) -> Handler:
            self._handlers[name] = handler
            return handler

        return register

    def position(
        self,
        x: float,
        y: float,
        z: float | None = None,
        *,
        timestamp: float | None = None,
        **fields: Any,
    ) -> None:
        """Report a position (and other numbers, such as ``heading``), taken at ``timestamp``
        (epoch seconds, default now); sent with the next batch."""
        document: dict[str, Any] = {"x": float(x), "y": float(y)}
        if z is not None:
            document["z"] = float(z)
        document.update(fields)
        document["timestamp"] = time.time() if timestamp is None else timestamp
        with self._lock:
            self._positions.append(document)

    def field(self, name: str, value: str | float | bool) -> None:
        """Report one field (``sensors/{id}/{name}``); a batch sends its latest value."""
        if not name or any(c in name for c in "+#/"):
            raise ValueError(f"invalid field name {name!r}")
        with self._lock:
            self._fields[name] = value

    def flush(self) -> None:
        """Send what was reported since the last batch (offline, the positions are dropped
        and the fields kept for the next connection)."""
        with self._lock:
            positions, self._positions = self._positions, []
            if not self.connected.is_set():
                if positions:
                    log.debug("%s offline: %d positions not sent", self.id, len(positions))
                return
            fields, self._fields = self._fields, {}
        topic = f"sensors/{self.id}/coordinates"
        for document in positions:
            self.client.publish(topic, json.dumps(document), qos=self.qos)
        for name, value in fields.items():
            text = json.dumps(value) if isinstance(value, bool) else str(value)
            self.client.publish(f"sensors/{self.id}/{name}", text, qos=self.qos)

    # -- lifecycle ----------------------------------------------------------

    def start(self, timeout: float | None = 10.0) -> None:
        """Connect (in the background, retrying) and start answering commands; waits up to
        ``timeout`` seconds for the first connection (``None``: do not wait). A stopped device
        may be started again: it comes back with the same session."""
        self._stopping.clear()
        self._work = queue.Queue()
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = self.session_expiry
        self.client.connect_async(
            self.host,
            self.port,
            keepalive=self.keepalive,
            clean_start=False,
            properties=properties,
        )
        self.client.loop_start()
        for target, name in ((self._run_commands, "commands"), (self._flush_often, "batches")):
            thread = threading.Thread(target=target, name=f"{self.id}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        if timeout is not None and not self.connected.wait(timeout):
            log.warning(
                "%s: not connected to %s:%d yet; still trying", self.id, self.host, self.port
            )

    def stop(self) -> None:
        """Send what is left, say ``offline``, and disconnect."""
        self._stopping.set()
        self._work.put(None)
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []
        self.flush()
        if self.connected.is_set():
            info = self.client.publish(self.presence_topic, "offline", qos=1, retain=True)
            info.wait_for_publish(timeout=5)
        self.client.disconnect()
        self.client.loop_stop()
        # paho closes its sockets only when the client is collected, which may come after
        # the sockets themselves are (a ResourceWarning): close them now.
        with contextlib.suppress(AttributeError, OSError):
            self.client._reset_sockets()
        self.connected.clear()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- paho callbacks (network thread) -----------------------------------

    def _on_connect(
        self,
        client: Client,
        userdata: Any,
        flags: ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("%s: the broker refused the connection: %s", self.id, reason)
            return
        client.subscribe(self.command_topic, qos=1)
        # Online once the subscription is in (``_on_subscribe``): a command the server sends
        # on hearing it must find it.

    def _on_subscribe(
        self,
        client: Client,
        userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("%s: the broker refused the subscription to %s", self.id, self.command_topic)
        client.publish(self.presence_topic, "online", qos=1, retain=True)
        self.connected.set()

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        if not self._stopping.is_set():
            log.warning("%s lost its connection (%s); reconnecting", self.id, reason)

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        if message.topic != self.command_topic:
            return
        properties = message.properties
        correlation = getattr(properties, "CorrelationData", None)
        command_id = correlation.decode("utf-8", "replace") if correlation else None
        words = message.payload.decode("utf-8", "replace").split()
        if not words:
            return
        received = Received(
            command_id,
            words[0],
            tuple(words[1:]),
            getattr(properties, "ResponseTopic", None) or self.result_topic,
        )
        if command_id is not None:
            with self._lock:
                repeat = command_id in self._seen
                outcome = self._seen.get(command_id)
                if not repeat:
                    self._seen[command_id] = None
                    while len(self._seen) > SEEN_KEEP:
                        self._seen.popitem(last=False)
            self._reply(self.ack_topic, {"id": command_id, "status": "delivered"})
            if repeat:
                self.duplicates += 1
                if outcome is not None:
                    client.publish(received.response_topic, outcome, qos=1)
                return
        self._work.put(received)

    # -- background threads -------------------------------------------------

    def _run_commands(self) -> None:
        while True:
            received = self._work.get()
            if received is None:
                return
            self._run(received)

    def _run(self, received: Received) -> None:
        handler = self._handlers.get(received.name)
        outcome: dict[str, Any] = {"id": received.id}
        if handler is None:
            outcome.update(status="rejected", error=f"unknown command {received.name!r}")
        else:
            try:
                result = handler(*received.args)
            except CommandRejected as exc:
                outcome.update(status="rejected", error=str(exc) or "rejected")
            except Exception as exc:
                log.exception("%s: command %s failed", self.id, received.name)
                outcome.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            else:
                outcome.update(status="succeeded", result=result)
            self.handled += 1
        if received.id is None:
            return  # a plain publisher: nobody to tell
        message = self._reply(received.response_topic, outcome)
        with self._lock:
            if received.id in self._seen:
                self._seen[received.id] = message

    def _reply(self, topic: str, document: dict[str, Any]) -> bytes:
        try:
            message = json.dumps(document).encode()
        except (TypeError, ValueError) as exc:
            document = {
                "id": document["id"],
                "status": "failed",
                "error": f"the result is not JSON: {exc}",
            }
            message = json.dumps(document).encode()
        self.client.publish(topic, message, qos=1)
        return message

    def _flush_often(self) -> None:
        while not self._stopping.wait(self.batch_interval):
            self.flush()
