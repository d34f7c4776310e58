"""The values that flow through the pipeline.

Everything here is already valid: the parser (``iotstream.parser``) is the
only place that turns untrusted MQTT input into these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Keys of a device state that the server owns; a device cannot set them.
DEVICE_ID = "deviceId"
TIMESTAMP = "timestamp"
RECEIVED_AT = "receivedAt"
RESERVED_FIELDS = frozenset({DEVICE_ID, TIMESTAMP, RECEIVED_AT})

DeviceState = dict[str, Any]
"""The latest state of one device, exactly as it goes on the wire:
``deviceId``, ``timestamp`` (device time, epoch seconds), ``receivedAt``
(server time) and every field the device reported (``x``, ``y``, ``z``,
``heading``, ``motorRPM``, ...)."""


@dataclass(slots=True, frozen=True)
class Reading:
    """Fields one device reported in one MQTT message."""

    device_id: str
    fields: dict[str, Any]
    timestamp: float
    """Device time in epoch seconds; the receive time when the device sent none."""
    received_at: float


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


@dataclass(slots=True)
class Batch:
    """Events parsed from one burst of MQTT messages, sorted by kind."""

    readings: list[Reading] = field(default_factory=list)
    raw: list[RawMessage] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.readings) + len(self.raw) + len(self.rejected)

    def events(self) -> list[Event]:
        return [*self.readings, *self.raw, *self.rejected]

    @classmethod
    def of(cls, events: list[Event]) -> Batch:
        batch = cls()
        for event in events:
            if isinstance(event, Reading):
                batch.readings.append(event)
            elif isinstance(event, RawMessage):
                batch.raw.append(event)
            else:
                batch.rejected.append(event)
        return batch


@dataclass(slots=True, frozen=True)
class Changes:
    """What one store write changed: devices whose latest state moved, devices removed."""

    updated: list[DeviceState] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.updated or self.removed)


def rejected_as_dict(item: Rejected) -> dict[str, Any]:
    """A dead letter as the API shows it."""
    return {
        "topic": item.topic,
        "reason": item.reason,
        "detail": item.detail,
        "size": item.size,
        "payload": item.payload.decode("utf-8", "replace"),
        "receivedAt": item.received_at,
    }
