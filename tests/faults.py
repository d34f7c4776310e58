"""A store, a bus and a lake that fail on demand, built on the real backends.

``store.before_write.fail_next(2)`` makes the next two ``apply`` calls raise
``StoreError`` without writing; ``store.after_write.fail_next()`` makes the next call
write and then raise, as when Redis ran the script but its reply was lost. The bus's
``publish``, and its consumers' ``poll`` and ``commit``, fail the same way with
``BusError``; ``bus.lost`` makes a consumer's ``poll`` raise ``ConsumerLost``, and that
consumer raises it at every poll from then on, as Kafka's does once it was fenced. The
lake's ``append`` fails the same way with ``LakeError`` (``before_write``: nothing
written; ``after_write``: every table written, then the error). ``fail_next()`` without
a count fails until ``heal()``.

Stages recover from faults in their own time: tests ``wait_until`` a condition holds.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Mapping

from iotstream.bus import Consumer, MemoryBus, Placement
from iotstream.bus.memory import MemoryConsumer
from iotstream.errors import BusError, ConsumerLost, IotstreamError, StoreError
from iotstream.lake import LakeError
from iotstream.lake.delta import DeltaLake
from iotstream.models import Batch, Changes
from iotstream.store import MemoryStore

UNTIL_HEALED = sys.maxsize


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    """Wait until ``condition()`` holds; fails saying ``what`` did not happen in time."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        await asyncio.sleep(0.01)


class Fault:
    """Makes the next calls of one operation raise."""

    def __init__(self, error: type[IotstreamError], operation: str) -> None:
        self.error = error
        self.operation = operation
        self.remaining = 0
        self.injected = 0
        """How many failures were raised so far."""

    def fail_next(self, count: int = UNTIL_HEALED) -> None:
        self.remaining = count

    def heal(self) -> None:
        self.remaining = 0

    def trip(self) -> None:
        """Raise if a failure is due; called where the operation would fail."""
        if self.remaining > 0:
            self.remaining -= 1
            self.injected += 1
            raise self.error(f"{self.operation} failed (injected failure {self.injected})")


class FlakyStore(MemoryStore):
    def __init__(self, deadletter_limit: int = 1000, dedupe_window: int = 0) -> None:
        super().__init__(deadletter_limit, dedupe_window)
        self.before_write = Fault(StoreError, "store write")
        self.after_write = Fault(StoreError, "store reply")
        self.writes = 0
        """Calls of ``apply`` that wrote, whether their reply came back or not."""

    async def apply(self, batch: Batch, *, report: bool = True) -> Changes:
        self.before_write.trip()
        changes = await super().apply(batch, report=report)
        self.writes += 1
        self.after_write.trip()
        return changes


class FlakyBus(MemoryBus):
    def __init__(self, max_events: int = 1_000_000) -> None:
        super().__init__(max_events)
        self.publish_fault = Fault(BusError, "bus publish")
        # Shared by every consumer of this bus, so a test reaches the ones a stage made.
        self.poll_fault = Fault(BusError, "bus poll")
        self.commit_fault = Fault(BusError, "bus commit")
        self.lost = Fault(ConsumerLost, "bus consumer")
        self.commits = 0
        """Commits that went through, by any consumer."""
        self.polls_with_events = 0
        """Polls that returned events, by any consumer."""
        self.max_waits: list[float | None] = []
        """What each consumer was made with."""

    async def publish(self, batch: Batch) -> None:
        self.publish_fault.trip()
        await super().publish(batch)

    async def consumer(
        self, group: str, placement: Placement | None = None, *, max_wait: float | None = None
    ) -> Consumer:
        self.max_waits.append(max_wait)
        return FlakyConsumer(self, group, placement)


class FlakyConsumer(MemoryConsumer):
    def __init__(self, bus: FlakyBus, group: str, placement: Placement | None = None) -> None:
        super().__init__(bus, group, placement)
        self._flaky = bus
        self._lost: ConsumerLost | None = None

    async def poll(self, max_events: int = 10_000, timeout: float = 1.0) -> Batch:
        if self._lost is not None:
            raise self._lost
        try:
            self._flaky.lost.trip()
        except ConsumerLost as lost:
            self._lost = lost
            raise
        self._flaky.poll_fault.trip()
        batch = await super().poll(max_events, timeout)
        if batch:
            self._flaky.polls_with_events += 1
        return batch

    async def commit(self) -> None:
        self._flaky.commit_fault.trip()
        await super().commit()
        self._flaky.commits += 1


class FlakyLake(DeltaLake):
    """A local Delta lake whose appends fail on demand; counts what it did."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.before_write = Fault(LakeError, "lake append")
        self.after_write = Fault(LakeError, "lake reply")
        self.appends = 0
        """Calls of ``append`` that wrote, whether their reply came back or not."""
        self.compactions = 0
        self.expiries: list[float] = []

    async def append(self, batch: Batch, transactions: Mapping[str, int] | None = None) -> None:
        self.before_write.trip()
        await super().append(batch, transactions)
        self.appends += 1
        self.after_write.trip()

    async def compact(self) -> None:
        await super().compact()
        self.compactions += 1

    async def expire(self, before: float) -> None:
        await super().expire(before)
        self.expiries.append(before)
