"""The embedded store: latest state and counters in process memory."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from ..health import Health
from ..models import Batch, Changes, DeviceState, Reading, Rejected
from .base import Counters, Store, merge


class MemoryStore(Store):
    def __init__(self, deadletter_limit: int = 1000, dedupe_window: int = 0) -> None:
        self._states: dict[str, DeviceState] = {}
        # Nothing replays in one process, so the embedded server runs with no window.
        self.dedupe_window = dedupe_window
        self._recent: dict[str, deque[tuple[float, dict[str, object]]]] = {}
        self._last_seen: dict[str, float] = {}
        self._counters = Counters()
        self._deadletters: deque[Rejected] = deque(maxlen=deadletter_limit)
        self._subscribers: set[asyncio.Queue[Changes]] = set()
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    async def apply(self, batch: Batch) -> Changes:
        states, last_seen, counters = self._states, self._last_seen, self._counters
        per_device = counters.per_device
        changed: dict[str, DeviceState] = {}
        counted = 0
        for reading in batch.readings:
            device_id = reading.device_id
            if self.dedupe_window and self._seen(reading):
                continue
            counted += 1
            per_device[device_id] = per_device.get(device_id, 0) + 1
            last_seen[device_id] = reading.received_at
            state = merge(
                states.get(device_id),
                device_id,
                reading.fields,
                reading.timestamp,
                reading.received_at,
            )
            if state is not None:
                states[device_id] = changed[device_id] = state
        counters.readings += counted
        for raw in batch.raw:
            counters.per_topic[raw.topic] = counters.per_topic.get(raw.topic, 0) + 1
        counters.raw += len(batch.raw)
        for rejected in batch.rejected:
            counters.per_reason[rejected.reason] = counters.per_reason.get(rejected.reason, 0) + 1
        counters.rejected += len(batch.rejected)
        self._deadletters.extend(batch.rejected)
        changes = Changes(updated=list(changed.values()))
        self._announce(changes)
        return changes

    def _seen(self, reading: Reading) -> bool:
        """Whether the reading repeats a recent one; remembers it when not."""
        recent = self._recent.get(reading.device_id)
        if recent is None:
            recent = self._recent[reading.device_id] = deque(maxlen=self.dedupe_window)
        key = (reading.timestamp, reading.fields)
        if key in recent:
            return True
        recent.append(key)
        return False

    async def devices(self) -> list[DeviceState]:
        return list(self._states.values())

    async def device(self, device_id: str) -> DeviceState | None:
        return self._states.get(device_id)

    async def counters(self) -> Counters:
        c = self._counters
        return Counters(
            c.readings, c.raw, c.rejected, dict(c.per_device), dict(c.per_topic), dict(c.per_reason)
        )

    async def deadletters(self, limit: int | None = None) -> list[Rejected]:
        newest_first = list(reversed(self._deadletters))
        return newest_first if limit is None else newest_first[:limit]

    async def expire(self, last_seen_before: float) -> list[str]:
        gone = [d for d, seen in self._last_seen.items() if seen < last_seen_before]
        for device_id in gone:
            del self._last_seen[device_id]
            self._states.pop(device_id, None)
            self._recent.pop(device_id, None)
        self._announce(Changes(removed=gone))
        return gone

    async def total(self) -> int:
        return self._counters.total

    def _announce(self, changes: Changes) -> None:
        if changes:
            for queue in self._subscribers:
                queue.put_nowait(changes)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Changes]]:
        queue: asyncio.Queue[Changes] = asyncio.Queue()
        self._subscribers.add(queue)

        async def changes() -> AsyncIterator[Changes]:
            while True:
                yield await queue.get()

        try:
            yield changes()
        finally:
            self._subscribers.discard(queue)

    def health(self) -> Health:
        return Health(self._running, f"in-process, {len(self._states)} devices")
