"""Turn MQTT messages into pipeline events.

The parser is the edge of the pipeline: it accepts any topic and any bytes and
never raises. What it cannot accept becomes a ``Rejected`` event with a reason
code, so the pipeline keeps going and the message is kept aside.

Topics:

- ``sensors/{id}/coordinates``: a JSON object with numeric ``x``, ``y``
  (optional ``z``) and optional ``timestamp`` (epoch seconds or milliseconds);
  every other field is kept.
- ``sensors/{id}/{field}``: a scalar payload; ``coordX``/``coordY``/``coordZ``
  set ``x``/``y``/``z``, any other field is kept under its own name.
- ``orin/{id}/command/ack`` and ``orin/{id}/command/result``: a device's report on a
  command, a JSON object ``{"id": command id, "status": ...}`` (``delivered`` on ``ack``;
  ``succeeded``, ``failed`` or ``rejected`` on ``result``, with optional ``result`` and
  ``error``): a ``CommandReply``.
- anything else (the commands on ``orin/{id}/command`` too): a ``RawMessage``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import orjson

from .errors import InvalidDeviceId
from .models import (
    DELIVERED,
    DEVICE_ID,
    OUTCOMES,
    RECEIVED_AT,
    REJECTED_PAYLOAD_KEEP,
    RESERVED_FIELDS,
    TIMESTAMP,
    Batch,
    CommandReply,
    DeviceId,
    RawMessage,
    Reading,
    Rejected,
)

DEFAULT_MAX_PAYLOAD = 64 * 1024
SENSORS = "sensors"
COORDINATES = "coordinates"
SCALAR_COORDS = {"coordX": "x", "coordY": "y", "coordZ": "z"}
# Epoch seconds stay below 1e11 until the year 5138; larger values are milliseconds
# (and above 1e14, microseconds).
_MILLIS = 1e11
_MICROS = 1e14
assert {DEVICE_ID, TIMESTAMP, RECEIVED_AT} == RESERVED_FIELDS, "_coordinates drops them by name"
# Ids already validated, so a fleet's steady stream checks each id once.
_KNOWN_IDS_LIMIT = 100_000
COMMANDS = "orin"
REPLY_STATUSES = {"ack": (DELIVERED,), "result": OUTCOMES}
"""What each reply topic (``orin/{id}/command/<kind>``) may report."""
MAX_COMMAND_ID = 128


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail


def _number(value: Any, name: str) -> float:
    # bool is an int subclass; true/false are not coordinates.
    if type(value) is not float and type(value) is not int:
        raise _Reject("invalid_coordinate", f"{name} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise _Reject("invalid_coordinate", f"{name} is not finite")
    return number


def _timestamp(value: Any, received_at: float) -> float:
    if value is None:
        return received_at
    if type(value) is not float and type(value) is not int:
        raise _Reject("invalid_timestamp", "timestamp is not a number")
    ts = float(value)
    if not math.isfinite(ts) or ts < 0:
        raise _Reject("invalid_timestamp", "timestamp is not a finite, non-negative number")
    if ts >= _MICROS:
        return ts / 1e6
    if ts >= _MILLIS:
        return ts / 1e3
    return ts


def _coordinates(device_id: DeviceId, payload: bytes, received_at: float) -> Reading:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise _Reject("invalid_json", f"payload is not JSON: {exc}") from None
    if type(document) is not dict:
        raise _Reject("not_an_object", "coordinates payload is not a JSON object")
    if "x" not in document or "y" not in document:
        raise _Reject("invalid_coordinate", "coordinates need numeric 'x' and 'y'")
    # The document is ours (just decoded): it becomes the fields, in place. Written out
    # name by name: this runs for every message, and it is most of the parser's time.
    timestamp = document.pop(TIMESTAMP, None)
    if DEVICE_ID in document or RECEIVED_AT in document:
        document.pop(DEVICE_ID, None)
        document.pop(RECEIVED_AT, None)
    if type(document["x"]) is not float:
        document["x"] = _number(document["x"], "x")
    if type(document["y"]) is not float:
        document["y"] = _number(document["y"], "y")
    if "z" in document and type(document["z"]) is not float:
        document["z"] = _number(document["z"], "z")
    if type(timestamp) is float and 0 <= timestamp < _MILLIS:
        return Reading(device_id, document, timestamp, received_at, payload)
    return Reading(device_id, document, _timestamp(timestamp, received_at), received_at, payload)


def _scalar(text: str) -> Any:
    """A scalar payload as the most specific JSON value it spells."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text
    if isinstance(value, dict | list):
        raise _Reject("not_a_scalar", "a sensor field payload must be a single value")
    if isinstance(value, float) and not math.isfinite(value):
        return text
    return value


def _field(device_id: DeviceId, name: str, payload: bytes, received_at: float) -> Reading:
    if name in RESERVED_FIELDS:
        raise _Reject("reserved_field", f"field {name!r} is set by the server")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise _Reject("invalid_encoding", "payload is not UTF-8 text") from None
    coord = SCALAR_COORDS.get(name)
    if coord is not None:
        try:
            value: Any = float(text)
        except ValueError:
            raise _Reject("invalid_coordinate", f"{name} is not a number") from None
        if not math.isfinite(value):
            raise _Reject("invalid_coordinate", f"{name} is not finite")
        return Reading(device_id, {coord: value}, received_at, received_at)
    return Reading(device_id, {name: _scalar(text)}, received_at, received_at)


def _reply(device_id: DeviceId, kind: str, payload: bytes, received_at: float) -> CommandReply:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise _Reject("invalid_json", f"payload is not JSON: {exc}") from None
    if type(document) is not dict:
        raise _Reject("not_an_object", "a command reply is not a JSON object")
    command_id = document.get("id")
    if type(command_id) is not str or not 0 < len(command_id) <= MAX_COMMAND_ID:
        raise _Reject("invalid_reply", f"'id' must be a command id (1-{MAX_COMMAND_ID} characters)")
    allowed = REPLY_STATUSES[kind]
    status = document.get("status", DELIVERED if kind == "ack" else None)
    if status not in allowed:
        raise _Reject("invalid_reply", f"'status' on command/{kind} must be {' or '.join(allowed)}")
    error = document.get("error")
    if error is not None and type(error) is not str:
        raise _Reject("invalid_reply", "'error' must be a string")
    return CommandReply(device_id, command_id, status, document.get("result"), error, received_at)


class Parser:
    """Parses batches of MQTT messages; keeps nothing but its limits and the ids it checked."""

    def __init__(self, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.max_payload = max_payload
        self._known_ids: dict[str, DeviceId] = {}
        self._routes: dict[str, tuple[DeviceId, str] | None] = {}
        """Topics seen before: a sensors topic's device id and field, ``None`` for others."""

    def _route(self, topic: str) -> tuple[DeviceId, str] | None:
        """The device id and field a sensors topic names; ``None`` for any other topic."""
        parts = topic.split("/")
        route = None
        if len(parts) == 3 and parts[0] == SENSORS:
            route = self._device_id(parts[1]), parts[2]
        if len(self._routes) >= _KNOWN_IDS_LIMIT:
            self._routes.clear()
        self._routes[topic] = route
        return route

    def _command_reply(self, topic: str, payload: bytes, received_at: float) -> CommandReply | None:
        """The reply an ``orin/{id}/command/ack|result`` message makes; ``None`` for any
        other topic."""
        parts = topic.split("/")
        if (
            len(parts) != 4
            or parts[0] != COMMANDS
            or parts[2] != "command"
            or parts[3] not in REPLY_STATUSES
        ):
            return None
        return _reply(self._device_id(parts[1]), parts[3], payload, received_at)

    def _device_id(self, text: str) -> DeviceId:
        device_id = self._known_ids.get(text)
        if device_id is None:
            try:
                device_id = DeviceId.parse(text)
            except InvalidDeviceId as exc:
                raise _Reject("invalid_device_id", str(exc)) from None
            if len(self._known_ids) >= _KNOWN_IDS_LIMIT:
                self._known_ids.clear()
            self._known_ids[text] = device_id
        return device_id

    def parse(self, topic: str, payload: bytes, received_at: float | None = None) -> Batch:
        """Parse a single message (a batch of one)."""
        return self.parse_batch(
            [(topic, payload, time.time() if received_at is None else received_at)]
        )

    def parse_batch(self, messages: Iterable[tuple[str, bytes, float]]) -> Batch:
        """Parse ``(topic, payload, received_at)`` triples into one batch; never raises."""
        batch = Batch()
        readings, raw, rejected = batch.readings, batch.raw, batch.rejected
        replies = batch.replies
        max_payload = self.max_payload
        routes = self._routes
        for topic, payload, received_at in messages:
            try:
                if len(payload) > max_payload:
                    raise _Reject(
                        "payload_too_large",
                        f"payload of {len(payload)} bytes exceeds the {max_payload}-byte limit",
                    )
                route = routes[topic] if topic in routes else self._route(topic)
                if route is None:
                    if topic.startswith(COMMANDS):
                        reply = self._command_reply(topic, payload, received_at)
                        if reply is not None:
                            replies.append(reply)
                            continue
                    raw.append(RawMessage(topic, payload, received_at))
                    continue
                device_id, name = route
                if name == COORDINATES:
                    readings.append(_coordinates(device_id, payload, received_at))
                else:
                    readings.append(_field(device_id, name, payload, received_at))
            except _Reject as exc:
                rejected.append(
                    Rejected(
                        topic,
                        payload[:REJECTED_PAYLOAD_KEEP],
                        len(payload),
                        exc.reason,
                        exc.detail,
                        received_at,
                    )
                )
            except Exception as exc:
                rejected.append(
                    Rejected(
                        topic,
                        payload[:REJECTED_PAYLOAD_KEEP],
                        len(payload),
                        "unparseable",
                        f"{type(exc).__name__}: {exc}",
                        received_at,
                    )
                )
        return batch
