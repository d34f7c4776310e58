"""The values that flow through the pipeline.

Everything here is already valid: the parser (``iotstream.parser``) is the
only place that turns untrusted MQTT input into these types.
"""

from __future__ import annotations

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
_FORBIDDEN_ID_CHARS = frozenset("+#/") | frozenset(chr(c) for c in range(32)) | {"\x7f"}


class DeviceId(str):
    """The id of a device: 1-128 characters, none of them ``+``, ``#``, ``/`` or a control
    character, so that it fits in one MQTT topic level. Every edge that receives one (MQTT
    topics, HTTP paths, commands, Kafka records) makes it with ``parse``; inside the pipeline
    a ``DeviceId`` is known to be valid."""

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

Event = Reading | RawMessage | Rejected
E = TypeVar("E", bound=Event)

EVENT_KINDS: dict[str, type[Event]] = {
    "readings": Reading,
    "raw": RawMessage,
    "rejected": Rejected,
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


@dataclass(slots=True, frozen=True)
class Changes:
    """What one store write changed: devices whose latest state moved, devices removed."""

    updated: list[DeviceState] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed)
