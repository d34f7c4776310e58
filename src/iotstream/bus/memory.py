"""The embedded bus: an in-process log with bounded retention.

Batches are kept as the objects the ingest produced; nothing is serialised.
Offsets count batches. A batch every consumer group has committed is dropped
at once: nothing in one process replays it, and keeping a long history of
small Python objects would cost memory and garbage-collector pauses that show
up as latency. When retention drops batches a group has not read yet, its
consumers continue at the oldest batch kept, as a Kafka consumer would after
its offset fell out of retention.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from ..health import Health
from ..models import Batch
from .base import Bus, Consumer


class MemoryBus(Bus):
    def __init__(self, retention_events: int = 1_000_000) -> None:
        self.retention_events = retention_events
        self._log: deque[Batch] = deque()
        self._first = 0  # offset of self._log[0]
        self._retained = 0  # events in self._log
        self._committed: dict[str, int] = {}
        self._appended = asyncio.Condition()
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False
        async with self._appended:
            self._appended.notify_all()

    @property
    def end(self) -> int:
        return self._first + len(self._log)

    async def publish(self, batch: Batch) -> None:
        if not batch:
            return
        self._log.append(batch)
        self._retained += len(batch)
        while self._retained > self.retention_events and len(self._log) > 1:
            self._drop_first()
        async with self._appended:
            self._appended.notify_all()

    def _drop_first(self) -> None:
        self._retained -= len(self._log.popleft())
        self._first += 1

    def _commit(self, group: str, position: int) -> None:
        self._committed[group] = position
        done = min(self._committed.values())
        while self._first < done and self._log:
            self._drop_first()

    async def consumer(self, group: str) -> Consumer:
        return MemoryConsumer(self, group)

    def health(self) -> Health:
        lag = {
            group: self.end - max(offset, self._first) for group, offset in self._committed.items()
        }
        return Health(self._running, f"in-process log, {self._retained} events retained, lag {lag}")

    def _read(self, position: int, max_events: int) -> tuple[Batch, int]:
        position = max(position, self._first)
        taken: list[Batch] = []
        count = 0
        while position < self.end and (
            not taken or count + len(self._log[position - self._first]) <= max_events
        ):
            batch = self._log[position - self._first]
            taken.append(batch)
            count += len(batch)
            position += 1
        if len(taken) == 1:
            return taken[0], position
        merged = Batch()
        for batch in taken:
            merged.extend(batch)
        return merged, position

    async def _wait(self, position: int, timeout: float) -> None:
        async with self._appended:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._appended.wait_for(lambda: position < self.end or not self._running),
                    timeout,
                )


class MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, group: str) -> None:
        self._bus = bus
        self._group = group
        self._position = bus._committed.setdefault(group, bus._first)

    async def poll(self, max_events: int = 10_000, timeout: float = 1.0) -> Batch:
        if self._position >= self._bus.end:
            await self._bus._wait(self._position, timeout)
        batch, self._position = self._bus._read(self._position, max_events)
        return batch

    async def commit(self) -> None:
        self._bus._commit(self._group, self._position)

    async def close(self) -> None:
        """Nothing to release; uncommitted events go to the group's next consumer."""
