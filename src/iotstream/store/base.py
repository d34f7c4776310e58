"""The store seam: the latest state of every device, counters, dead letters, and change fan-out.

Contract, shared by every backend and checked by ``tests/store/suite.py``:

- ``apply`` merges a batch into the latest state: a reading's fields overwrite
  the device's, unless its device timestamp is older than the stored one (then
  only the counters and the last-seen time move). It counts messages per
  device, per raw topic and per rejection reason, and keeps the newest
  rejected messages. It announces what changed to every ``subscribe``-r, as part of
  the same write (a write that happened is always announced, even when its caller
  never hears back), and returns it.
- With a ``dedupe_window`` of N, a reading equal to one of the device's last N
  readings (same device timestamp, same fields) is a duplicate and is ignored,
  counters included: replays after a processor crash and broker redeliveries
  after a bridge crash are not counted twice. Readings without a device
  timestamp carry their receive time, so only replays of the same record match.
- Subscribers receive every announced ``Changes`` in the order of the writes.
- ``expire`` removes devices not seen since a time, announces their removal, and
  returns their ids.
- ``total`` is the number of messages counted, without reading any per-device count.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

from ..lifecycle import Component
from ..models import Batch, Changes, DeviceState, Rejected


@dataclass(slots=True)
class Counters:
    """Message counts since the store was created."""

    readings: int = 0
    raw: int = 0
    rejected: int = 0
    per_device: dict[str, int] = field(default_factory=dict)
    per_topic: dict[str, int] = field(default_factory=dict)
    per_reason: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.readings + self.raw + self.rejected


class Store(Component):
    """Latest state and counters; start and stop it with ``async with``."""

    @abstractmethod
    async def apply(self, batch: Batch) -> Changes:
        """Merge a batch and count it; announces and returns the devices whose state changed."""

    @abstractmethod
    async def devices(self) -> list[DeviceState]:
        """The latest state of every device."""

    @abstractmethod
    async def device(self, device_id: str) -> DeviceState | None: ...

    @abstractmethod
    async def counters(self) -> Counters: ...

    @abstractmethod
    async def total(self) -> int:
        """Messages counted so far (``counters().total``), cheap enough to sample often."""

    @abstractmethod
    async def deadletters(self, limit: int | None = None) -> list[Rejected]:
        """The newest rejected messages, newest first."""

    @abstractmethod
    async def expire(self, last_seen_before: float) -> list[str]:
        """Remove devices not seen since ``last_seen_before`` (epoch seconds); announces it."""

    @abstractmethod
    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[Changes]]:
        """``async with store.subscribe() as changes: async for change in changes: ...``"""


def merge(
    state: DeviceState | None,
    device_id: str,
    fields: dict[str, object],
    timestamp: float,
    received_at: float,
) -> DeviceState | None:
    """The new latest state after a reading, or ``None`` when the reading is older.

    Returns a new dict; stored states are never mutated, so readers may keep them.
    """
    if state is None:
        return {"deviceId": device_id, **fields, "timestamp": timestamp, "receivedAt": received_at}
    if timestamp < state["timestamp"]:
        return None
    return {**state, **fields, "timestamp": timestamp, "receivedAt": received_at}
