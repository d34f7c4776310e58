"""The embedded bus: an in-process log that never drops what a group has not committed.

Batches are kept as the objects the ingest produced; nothing is serialised. Offsets count
batches, in one source, ``memory-<epoch>``, whose epoch names this log: a new process starts
a new log at offset 0, and a new epoch tells a reader that remembers offsets (the archiver,
through the lake) that old offsets say nothing about it.

A batch every consumer group has committed is dropped at once: nothing in one process
replays it, and keeping a long history of small Python objects would cost memory and
garbage-collector pauses that show up as latency. A batch some group has not committed is
kept, however slow that group is; the other groups read on. The memory is bounded by
``max_events``: at the bound, ``publish`` waits until the slowest group commits (the
ingest then stops taking messages from the broker, which queues them), and ``health``
reports the bus down, naming the groups that hold it back. Only while no group has joined
yet are the oldest batches dropped past the bound, since nobody would ever read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque

from ..errors import BusError
from ..health import Health
from ..models import EVENT_KINDS, Batch
from .base import Bus, Consumer, Placement, Position


class MemoryBus(Bus):
    def __init__(self, max_events: int = 1_000_000) -> None:
        """``max_events``: the most events kept; a batch larger than that is still taken
        when the log is empty."""
        self.max_events = max_events
        self.epoch = uuid.uuid4().hex[:12]
        self.source = f"memory-{self.epoch}"
        self._log: deque[Batch] = deque()
        self._starts: deque[int] = deque()  # events appended before each batch of self._log
        self._first = 0  # offset of self._log[0]
        self._appended = 0  # events ever appended
        self._committed: dict[str, int] = {}
        self._arrived = asyncio.Condition()
        self._room = asyncio.Event()
        # Publishes enter the log one at a time, in the order they came, also at the bound.
        self._admission = asyncio.Lock()
        self._waiting = 0
        self._running = False

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False
        self._room.set()
        async with self._arrived:
            self._arrived.notify_all()

    @property
    def end(self) -> int:
        """The offset the next batch gets."""
        return self._first + len(self._log)

    @property
    def retained(self) -> int:
        """Events in the log."""
        return self._appended - self._starts[0] if self._log else 0

    def _full(self, incoming: int) -> bool:
        return (
            self._running
            and bool(self._committed)
            and bool(self._log)
            and self.retained + incoming > self.max_events
        )

    async def publish(self, batch: Batch) -> None:
        if not batch:
            return
        async with self._admission:
            if self._full(len(batch)):
                self._waiting += 1
                try:
                    while self._full(len(batch)):
                        self._room.clear()
                        await self._room.wait()
                finally:
                    self._waiting -= 1
                if not self._running:
                    raise BusError("the in-process bus stopped while a publish waited for room")
            self._log.append(batch)
            self._starts.append(self._appended)
            self._appended += len(batch)
            if not self._committed:
                while self.retained > self.max_events and len(self._log) > 1:
                    self._drop_first()
        async with self._arrived:
            self._arrived.notify_all()

    def _drop_first(self) -> None:
        self._log.popleft()
        self._starts.popleft()
        self._first += 1

    def _commit(self, group: str, position: int) -> None:
        self._committed[group] = position
        done = min(self._committed.values())
        while self._first < done and self._log:
            self._drop_first()
        self._room.set()

    def _join(self, group: str) -> int:
        return self._committed.setdefault(group, self._first)

    async def consumer(
        self, group: str, placement: Placement | None = None, *, max_wait: float | None = None
    ) -> Consumer:
        # Nothing to wait for: a poll takes whatever the log holds, at once.
        return MemoryConsumer(self, group, placement)

    def _events_before(self, offset: int) -> int:
        if offset >= self.end:
            return self._appended
        return self._starts[max(offset - self._first, 0)]

    def lag(self) -> dict[str, int]:
        """Events each group has not committed."""
        return {
            group: self._appended - self._events_before(offset)
            for group, offset in self._committed.items()
        }

    def health(self) -> Health:
        lag = self.lag()
        detail = (
            f"in-process log {self.source}, {self.retained} events retained "
            f"(at most {self.max_events}), lag {lag}"
        )
        if self._waiting:
            slowest = max(lag.values())
            holding = sorted(group for group, events in lag.items() if events == slowest)
            return Health(
                False, f"full, publishing waits for group {', '.join(holding)} to commit; {detail}"
            )
        return Health(self._running, detail)

    def _read(self, position: int, max_events: int) -> tuple[list[Batch], int]:
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
        return taken, position

    async def _wait(self, position: int, timeout: float) -> None:
        async with self._arrived:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._arrived.wait_for(lambda: position < self.end or not self._running),
                    timeout,
                )


class MemoryConsumer(Consumer):
    def __init__(self, bus: MemoryBus, group: str, placement: Placement | None = None) -> None:
        self._bus = bus
        self._group = group
        self._placement = placement
        self._position = bus._join(group)
        self._placed = placement is None
        self._taken: list[Batch] = []
        self._taken_from = self._position

    async def _place(self, placement: Placement) -> None:
        bus = self._bus
        start = (await placement.assigned([bus.source])).get(bus.source)
        if start is not None:
            self._position = min(max(start, bus._first), bus.end)
        self._placed = True

    async def poll(self, max_events: int = 10_000, timeout: float = 1.0) -> Batch:
        if not self._placed and self._placement is not None:
            await self._place(self._placement)
        if self._position >= self._bus.end:
            await self._bus._wait(self._position, timeout)
        self._taken_from = max(self._position, self._bus._first)
        self._taken, self._position = self._bus._read(self._position, max_events)
        if len(self._taken) == 1:
            return self._taken[0]
        merged = Batch()
        for batch in self._taken:
            merged.extend(batch)
        return merged

    def positions(self) -> list[Position]:
        if self._placement is None:
            raise BusError("positions() needs a consumer made with a placement")
        source = self._bus.source
        positions: list[Position] = []
        for kind in EVENT_KINDS.values():
            for offset, batch in enumerate(self._taken, self._taken_from):
                positions.extend([Position(source, offset)] * len(batch.of(kind)))
        return positions

    async def commit(self) -> None:
        self._bus._commit(self._group, self._position)

    async def close(self) -> None:
        """Nothing to release; uncommitted events go to the group's next consumer."""

    async def lag(self) -> dict[str, int]:
        return {"0": self._bus.lag().get(self._group, 0)}
