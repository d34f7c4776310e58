"""Processor: bus batches in, into the store (which announces what changed).

A batch is committed on the bus only after the store took it, so a store
outage stops the processor (it retries the same batch) instead of losing data.
"""

from __future__ import annotations

import asyncio
import logging
import time

from .bus import Bus, Consumer
from .errors import BusError, ConsumerLost, StoreError
from .health import Health
from .lifecycle import Component, cancel_all, crashed, spawn
from .metrics import STORE_WRITE, Consumption
from .models import Batch
from .store import Store

log = logging.getLogger(__name__)

GROUP = "iotstream-processor"
MAX_BACKOFF = 5.0
REST_SHARE = 0.5
"""After a write that merged ``MERGING`` or more readings a device, the processor rests this
share of the time the write took, at most ``MAX_REST``, before it polls again: what arrives
meanwhile joins the next write. A write's work (the processor's merge, Redis's script, the
announcement the API decodes) is mostly per device, so once writes merge, fewer of them
carry the same readings for less CPU (BENCHMARKS.md)."""
MAX_REST = 0.025
MERGING = 1.5
"""Readings a device, on average, from which a write counts as merging. Below it a rest makes
the next write longer by as many devices as readings, so each rest is longer again, until
every write takes the whole fleet: resting after every write, at 28k msg/s from 1,000 devices
the processor settled at 17 writes a second of 33 ms (67 of 10 ms at 32k without rests), and
the bench's medians at 28-32k msg/s rose from 35-45 ms to 58-68 (BENCHMARKS.md)."""


class Processor(Component):
    def __init__(
        self,
        bus: Bus,
        store: Store,
        *,
        group: str = GROUP,
        device_ttl: float | None = None,
        max_batch: int = 20_000,
    ) -> None:
        self.bus = bus
        self.store = store
        self.group = group
        self.device_ttl = device_ttl
        self.max_batch = max_batch
        self.processed = 0
        self.store_failures = 0
        self.bus_failures = 0
        self.consumption = Consumption("processor")
        self._store_down: str | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def _apply(self, batch: Batch) -> float:
        """Writes ``batch``, holding it while the store fails; how long the write that
        succeeded took (seconds)."""
        backoff = 0.1
        while True:
            try:
                started = time.perf_counter()
                await self.store.apply(batch, report=False)
                took = time.perf_counter() - started
                STORE_WRITE.observe(took)
            except StoreError as exc:
                self.store_failures += 1
                if self._store_down is None:
                    log.error("store write failed, holding the batch until it is back: %s", exc)
                self._store_down = str(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if self._store_down is not None:
                log.info("store is back; processing resumes")
                self._store_down = None
            return took

    async def _store(self, batch: Batch) -> float:
        """Writes ``batch``; how long the write took (``_apply``)."""
        self.consumption.took(batch)
        took = await self._apply(batch)
        self.consumption.done()
        self.processed += len(batch)
        return took

    def _rest(self, batch: Batch, took: float) -> float:
        """How long to rest after a write of ``batch`` that took ``took`` seconds."""
        readings = batch.readings
        if len(readings) < MERGING:
            return 0.0
        if len(readings) < MERGING * len({reading.device_id for reading in readings}):
            return 0.0
        return min(REST_SHARE * took, MAX_REST)

    async def _consume(self) -> None:
        while True:
            try:
                async with await self.bus.consumer(self.group) as consumer:
                    self.consumption.consumer = consumer
                    await self._take(consumer)
            except ConsumerLost as exc:
                # What it took but did not commit comes back to the new member.
                self.bus_failures += 1
                log.error("bus consumer lost, joining the group again: %s", exc)
                await asyncio.sleep(1.0)

    async def _take(self, consumer: Consumer) -> None:
        loop = asyncio.get_running_loop()
        committed_at, uncommitted = loop.time(), False
        while True:
            try:
                # A batch is polled once the one before it is in the store. Polled while
                # that one was being written (to decode it meanwhile), a batch held only
                # what had arrived by then, and what arrived next waited for two writes
                # instead of one: at 55k msg/s, 25 ms more in the median.
                batch = await consumer.poll(self.max_batch, timeout=1.0)
                rest = 0.0
                if batch:
                    rest = self._rest(batch, await self._store(batch))
                    uncommitted = True
                # Commits are spaced as the bus asks (a crash reads the uncommitted rest
                # again, which the store counts once), and made at once when the batches
                # stop.
                due = loop.time() - committed_at >= self.bus.commit_interval
                if uncommitted and (due or not batch):
                    await consumer.commit()
                    committed_at, uncommitted = loop.time(), False
                if rest:
                    await asyncio.sleep(rest)
            except ConsumerLost:
                raise
            except BusError as exc:
                # Uncommitted batches come back from the bus; the store takes them again
                # without counting them twice, so going on is safe.
                self.bus_failures += 1
                log.error("bus error, carrying on: %s", exc)
                await asyncio.sleep(1.0)

    async def _expire(self, ttl: float) -> None:
        period = min(max(ttl / 4, 0.05), 1.0)
        while True:
            await asyncio.sleep(period)
            try:
                await self.store.expire(time.time() - ttl)
            except StoreError as exc:
                log.warning("device expiry skipped: %s", exc)

    async def start(self) -> None:
        self._tasks.append(spawn(self._consume(), "processor"))
        if self.device_ttl is not None:
            self._tasks.append(spawn(self._expire(self.device_ttl), "expiry"))

    async def stop(self) -> None:
        await cancel_all(self._tasks)

    def health(self) -> Health:
        stopped = crashed(self._tasks)
        if stopped:
            return Health(False, f"stopped: {', '.join(stopped)}")
        if self._store_down is not None:
            return Health(False, f"waiting for the store: {self._store_down}")
        return Health(True, f"{self.processed} events processed")
