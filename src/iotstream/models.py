"""The values that flow through the pipeline.

Everything here is already valid: the parser (``iotstream.parser``) is the
only place that turns untrusted MQTT input into these types.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from .errors import InvalidDeviceId

# Keys of a device state that the server owns; a device cannot set them.
DEVICE_ID = "deviceId"
TIMESTAMP = "timestamp"
RECEIVED_AT = "receivedAt"
RESERVED_FIELDS = frozenset({DEVICE_ID, TIMESTAMP, RECEIVED_AT})

MAX_DEVICE_ID = 128
MAX_MQTT_STRING = 65535
"""Bytes in an MQTT string (a topic, a client id, a user name), UTF-8 encoded."""
_FORBIDDEN_ID_CHARS = frozenset("+#/") | frozenset(chr(c) for c in range(32)) | {"\x7f"}
# What Mosquitto's UTF-8 check refuses besides invalid encodings (checked on this machine's
# 2.0.11 against every class): a client whose PUBLISH names such a topic is disconnected.
_MQTT_FORBIDDEN = re.compile(
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff"
    + "".join(f"{chr(plane << 16 | 0xFFFE)}{chr(plane << 16 | 0xFFFF)}" for plane in range(1, 17))
    + "]"
)


def mqtt_text_problem(text: str) -> str | None:
    """Why ``text`` cannot be an MQTT string (a topic, a client id, a user name) that Mosquitto
    accepts, or ``None`` when it can: no control character (C0, DEL, C1), no surrogate, no
    noncharacter (U+FDD0-U+FDEF, U+xFFFE, U+xFFFF), at most 65535 bytes as UTF-8."""
    found = _MQTT_FORBIDDEN.search(text)
    if found is not None:
        return f"contains U+{ord(found.group()):04X}, which MQTT does not allow"
    if len(text) * 4 > MAX_MQTT_STRING and len(text.encode()) > MAX_MQTT_STRING:
        return f"is longer than {MAX_MQTT_STRING} bytes"
    return None


class DeviceId(str):
    """The id of a device: 1-128 characters, none of them ``+``, ``#``, ``/``, a control
    character or one that MQTT does not allow in a topic (``mqtt_text_problem``), so that it
    fits in one MQTT topic level and can be an MQTT user name. Every edge that receives one
    (MQTT topics, HTTP paths, commands, Kafka records, ``iotstream devices``) makes it with
    ``parse``; inside the pipeline a ``DeviceId`` is known to be valid."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> Self:
        """The id ``text`` spells; raises ``InvalidDeviceId`` saying why it cannot be one."""
        if type(text) is cls:
            return text
        if not text:
            raise InvalidDeviceId("device id is empty")
        if len(text) > MAX_DEVICE_ID:
            raise InvalidDeviceId(f"device id is longer than {MAX_DEVICE_ID} characters")
        if not _FORBIDDEN_ID_CHARS.isdisjoint(text):
            raise InvalidDeviceId("device id contains '+', '#', '/' or a control character")
        problem = mqtt_text_problem(text)
        if problem is not None:
            raise InvalidDeviceId(f"device id {problem}")
        return cls(text)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: type[Any], handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls.parse,
            core_schema.str_schema(min_length=1, max_length=MAX_DEVICE_ID),
            serialization=core_schema.to_string_ser_schema(),
        )


DeviceState = dict[str, Any]
"""The latest state of one device, exactly as it goes on the wire:
``deviceId``, ``timestamp`` (device time, epoch seconds), ``receivedAt``
(server time) and every field the device reported (``x``, ``y``, ``z``,
``heading``, ``motorRPM``, ...)."""


@dataclass(slots=True)
class Reading:
    """Fields one device reported in one MQTT message. Treat it as immutable; it is not
    frozen only because a frozen dataclass's ``__init__`` costs four times as much, and the
    parser makes one per message."""

    device_id: DeviceId
    fields: dict[str, Any]
    timestamp: float
    """Device time in epoch seconds; the receive time when the device sent none."""
    received_at: float
    payload: bytes | None = field(default=None, compare=False, repr=False)
    """The JSON object these fields were decoded from, when the parser made the reading from
    a coordinates message (whose ``x``, ``y`` and ``z`` it made floats): the lake copies the
    other fields from it as sent instead of encoding them again."""


@dataclass(slots=True, frozen=True)
class RawMessage:
    """A message on a topic outside ``sensors/{id}/...``, carried as it came."""

    topic: str
    payload: bytes
    received_at: float


@dataclass(slots=True, frozen=True)
class Rejected:
    """A message the parser refused, kept aside with the reason."""

    topic: str
    payload: bytes
    """The payload as received, cut to ``REJECTED_PAYLOAD_KEEP`` bytes."""
    size: int
    """The size of the whole payload in bytes."""
    reason: str
    """A short code such as ``invalid_json``; counted per code."""
    detail: str
    received_at: float


REJECTED_PAYLOAD_KEEP = 1024

# What a device may report about a command: delivery, then one of the outcomes.
DELIVERED = "delivered"
SUCCEEDED = "succeeded"
FAILED = "failed"
REJECTED = "rejected"
OUTCOMES = (SUCCEEDED, FAILED, REJECTED)
REPORTS = (DELIVERED, *OUTCOMES)


# The states of a command (see ``Command``).
QUEUED = "queued"
SENT = "sent"
EXPIRED = "expired"
CANCELED = "canceled"
COMMAND_STATES = (QUEUED, SENT, DELIVERED, SUCCEEDED, FAILED, REJECTED, EXPIRED, CANCELED)
END_STATES = frozenset({SUCCEEDED, FAILED, REJECTED, EXPIRED, CANCELED})
# Delivery as far as the server knows: a device confirmed it, or its TTL ran out first.
CONFIRMED = "confirmed"
UNCONFIRMED = "unconfirmed"


@dataclass(slots=True, frozen=True)
class Transition:
    """A command entering ``status`` at ``at`` (epoch seconds)."""

    status: str
    at: float


@dataclass(slots=True, frozen=True)
class Command:
    """A command to one device, tracked to its end.

    ``queued`` (waiting for the device) -> ``sent`` (published) -> ``delivered`` (the device
    acknowledged it) -> ``succeeded`` | ``failed`` | ``rejected`` (the device's outcome), or
    ``expired`` (its TTL ran out before it was sent) or ``canceled`` (by an operator). A
    command is ``closed`` in an end state, and also once its TTL passed while ``sent`` (a
    plain device that never answers: ``delivery`` is ``unconfirmed``) or ``delivered`` (no
    outcome came). Every closed command has a ``reason`` code and a ``message``.
    """

    id: str
    device_id: DeviceId
    command: str
    args: tuple[str | int | float, ...]
    payload: str
    """The text published to ``orin/{device_id}/command``: the command and its args."""
    ttl: float
    created_at: float
    expires_at: float
    status: str = QUEUED
    transitions: tuple[Transition, ...] = ()
    attempts: int = 0
    """Times the command was published."""
    delivery: str | None = None
    """``confirmed`` once the device answered, ``unconfirmed`` when its TTL passed first."""
    closed: bool = False
    closed_at: float | None = None
    reason: str | None = None
    message: str | None = None
    result: Any = None
    idempotency_key: str | None = None
    fingerprint: str | None = None
    """What the request that made it said, to compare a repeat with the same key."""

    def to_json(self) -> dict[str, Any]:
        """The command as the API and the WebSocket show it (and the store keeps it)."""
        return {
            "id": self.id,
            "deviceId": self.device_id,
            "command": self.command,
            "args": list(self.args),
            "payload": self.payload,
            "ttl": self.ttl,
            "status": self.status,
            "delivery": self.delivery,
            "closed": self.closed,
            "reason": self.reason,
            "message": self.message,
            "result": self.result,
            "attempts": self.attempts,
            "createdAt": self.created_at,
            "expiresAt": self.expires_at,
            "closedAt": self.closed_at,
            "transitions": [{"status": t.status, "at": t.at} for t in self.transitions],
            "idempotencyKey": self.idempotency_key,
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> Command:
        """The command ``to_json`` gave (the store's own documents: trusted)."""
        return cls(
            id=document["id"],
            device_id=DeviceId(document["deviceId"]),
            command=document["command"],
            args=tuple(document["args"]),
            payload=document["payload"],
            ttl=document["ttl"],
            created_at=document["createdAt"],
            expires_at=document["expiresAt"],
            status=document["status"],
            transitions=tuple(Transition(t["status"], t["at"]) for t in document["transitions"]),
            attempts=document["attempts"],
            delivery=document["delivery"],
            closed=document["closed"],
            closed_at=document["closedAt"],
            reason=document["reason"],
            message=document["message"],
            result=document["result"],
            idempotency_key=document["idempotencyKey"],
            fingerprint=document["fingerprint"],
        )


@dataclass(slots=True, frozen=True)
class CommandReply:
    """A device's report on a command (``orin/{id}/command/ack`` or ``.../result``):
    ``delivered``, or its outcome (``succeeded``, ``failed``, ``rejected``)."""

    device_id: DeviceId
    command_id: str
    status: str
    """One of ``REPORTS``."""
    result: Any
    """What the device answered (any JSON value), ``None`` with an acknowledgement."""
    error: str | None
    received_at: float


Event = Reading | RawMessage | Rejected | CommandReply
E = TypeVar("E", bound=Event)

EVENT_KINDS: dict[str, type[Event]] = {
    "readings": Reading,
    "raw": RawMessage,
    "rejected": Rejected,
    "replies": CommandReply,
}
"""Every kind of event, by the name a ``Batch`` lists it under, in the order batches list
them. A new kind is a frozen dataclass above, a member of ``Event``, an entry here, and its
Kafka record in ``iotstream.bus.kafka_codec.RECORDS``; nothing else needs to know it."""


class Batch:
    """Events parsed from one burst of MQTT messages, grouped by kind.

    ``Batch(readings=[...], rejected=[...])`` or ``Batch.from_events(events)``;
    ``batch.of(Reading)`` is the list of one kind (the batch's own, to append to).
    """

    __slots__ = ("_lists",)

    def __init__(self, **lists: list[Any]) -> None:
        self._lists: dict[type[Any], list[Any]] = {}
        for name, kind in EVENT_KINDS.items():
            self._lists[kind] = lists.pop(name, [])
        if lists:
            raise TypeError(f"unknown kinds of event: {', '.join(lists)}")

    @classmethod
    def from_events(cls, events: Iterable[Event]) -> Batch:
        batch = cls()
        lists = batch._lists
        for event in events:
            lists[type(event)].append(event)
        return batch

    def of(self, kind: type[E]) -> list[E]:
        return self._lists[kind]

    def add(self, event: Event) -> None:
        self._lists[type(event)].append(event)

    def extend(self, other: Batch) -> None:
        for kind, events in other._lists.items():
            self._lists[kind].extend(events)

    def events(self) -> list[Event]:
        """Every event, kind by kind in ``EVENT_KINDS`` order."""
        return [event for events in self._lists.values() for event in events]

    def __len__(self) -> int:
        return sum(map(len, self._lists.values()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Batch) and self._lists == other._lists

    def __repr__(self) -> str:
        counts = ", ".join(f"{name}={len(self._lists[kind])}" for name, kind in EVENT_KINDS.items())
        return f"Batch({counts})"

    # The kinds the pipeline reads by name; other kinds are reached with ``of``.
    @property
    def readings(self) -> list[Reading]:
        return self._lists[Reading]

    @property
    def raw(self) -> list[RawMessage]:
        return self._lists[RawMessage]

    @property
    def rejected(self) -> list[Rejected]:
        return self._lists[Rejected]

    @property
    def replies(self) -> list[CommandReply]:
        return self._lists[CommandReply]


@dataclass(slots=True, frozen=True)
class Changes:
    """What one store write changed: devices whose latest state moved, devices removed, and
    commands whose state moved (each as ``Command.to_json``, in the order of the moves)."""

    updated: list[DeviceState] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    commands: list[dict[str, Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed or self.commands)
