"""Archiver: bus batches in, into the lake's Delta tables, each event exactly once.

One more consumer group on the bus (``iotstream-archiver``). The lake, not the bus, is the
truth about what is archived:

- Every append records, in every table's Delta commit, one application transaction per bus
  source it holds events of: app id ``<group>/<source>``, version the offset of the last
  event from that source (``Lake.append``'s ``transactions``).
- When sources are assigned to this member (at start and at every Kafka rebalance), the
  archiver reads ``versions()`` of every table and starts each source at the smallest next
  offset over the tables (a crash between two tables' commits leaves one table behind).
- Before an append, events a table already holds (its version for their source is at least
  their offset) are left out of that table; after a failed append the versions are read
  again, since the failure may have come after some tables committed.
- The bus offsets are committed only after the lake commit, so a ``kill -9`` at any moment
  neither loses an event (the bus delivers it again) nor writes one twice (the versions
  say it is there).

Events are gathered for ``flush_interval`` seconds (or ``max_batch`` events) and appended
as one batch, so the lake gets about one commit per second; compaction and expiry run in
the background and never stop the consume loop. While the lake fails, the archiver holds
its batch and retries with backoff; it never skips one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .bus import Bus, Consumer, Placement, Position
from .errors import BusError
from .health import Health
from .lake.base import COMMAND_REPLIES, RAW_MESSAGES, READINGS, REJECTED, TABLES, Lake
from .lifecycle import Component, cancel_all, crashed, spawn
from .metrics import LAKE_ROWS, Consumption, lake_committed, zero
from .models import EVENT_KINDS, Batch, CommandReply, Event, RawMessage, Reading, Rejected

log = logging.getLogger(__name__)

GROUP = "iotstream-archiver"
MAX_BACKOFF = 5.0
STOP_TIMEOUT = 10.0
"""Seconds a stop waits for the last batch to reach the lake."""
EXPIRE_PERIOD = 86_400.0
POLL_REST = 0.1
"""Seconds the archiver rests after a poll that found events, while it gathers a batch (the
bus keeps what arrives meanwhile). Each poll is a hop to the consumer's thread and back:
polling as soon as anything had arrived, the archiver polled 58 times a second at 60k msg/s
and took 19-21 % of a core; resting, 7 times and 15-17 % (BENCHMARKS.md)."""

TABLE_OF: dict[type[Event], str] = {
    Reading: READINGS,
    RawMessage: RAW_MESSAGES,
    Rejected: REJECTED,
    CommandReply: COMMAND_REPLIES,
}
"""The table each kind of event goes to (the lake's ``append`` puts it there)."""
assert set(TABLE_OF) == set(EVENT_KINDS.values()), "every kind of event needs a table"


class _Pending:
    """Events polled since the last append, each with its position, by kind."""

    def __init__(self) -> None:
        self.events: dict[type[Event], list[Event]] = {kind: [] for kind in TABLE_OF}
        self.positions: dict[type[Event], list[Position]] = {kind: [] for kind in TABLE_OF}
        self.count = 0
        self.first: dict[str, int] = {}
        """The smallest offset of each source."""
        self.last: dict[str, int] = {}
        """The offset of the last event from each source."""

    def add(self, batch: Batch, positions: Sequence[Position]) -> None:
        first, last = self.first, self.last
        # Events share positions (the memory bus: one per published batch): each once.
        for source, offset in set(positions):
            if offset < first.get(source, offset + 1):
                first[source] = offset
            if offset > last.get(source, -1):
                last[source] = offset
        start = 0
        for kind in EVENT_KINDS.values():
            events = batch.of(kind)
            if events:
                self.events[kind].extend(events)
                self.positions[kind].extend(positions[start : start + len(events)])
                start += len(events)
        self.count += len(batch)

    def drop_sources(self, sources: set[str]) -> None:
        for kind in TABLE_OF:
            kept = [
                (event, position)
                for event, position in zip(self.events[kind], self.positions[kind], strict=True)
                if position.source not in sources
            ]
            self.events[kind] = [event for event, _ in kept]
            self.positions[kind] = [position for _, position in kept]
        self.count = sum(len(events) for events in self.events.values())
        for source in sources:
            self.first.pop(source, None)
            self.last.pop(source, None)


class _LakePlacement(Placement):
    def __init__(self, archiver: Archiver) -> None:
        self._archiver = archiver

    async def assigned(self, sources: Sequence[str]) -> Mapping[str, int]:
        return await self._archiver._assigned(sources)

    async def revoked(self, sources: Sequence[str]) -> None:
        self._archiver._revoked(sources)


class Archiver(Component):
    def __init__(
        self,
        bus: Bus,
        lake: Lake,
        group: str = GROUP,
        *,
        flush_interval: float = 1.0,
        max_batch: int = 200_000,
        compact_interval: float | None = None,
        retention: float | None = None,
    ) -> None:
        """``compact_interval``: seconds between compactions (``None``: never);
        ``retention``: seconds of history kept, expired daily (``None``: all)."""
        self.bus = bus
        self.lake = lake
        zero(LAKE_ROWS, TABLES)
        self.group = group
        self.flush_interval = flush_interval
        self.poll_rest = min(POLL_REST, flush_interval / 4)
        self.max_batch = max_batch
        self.compact_interval = compact_interval
        self.retention = retention
        self.archived = 0
        """Events written to the lake."""
        self.duplicates = 0
        """Events polled again that the lake already held, left out."""
        self.appends = 0
        """Lake commits (appends) made."""
        self.lake_failures = 0
        self.bus_failures = 0
        self.consumption = Consumption("archiver")
        self._written: dict[str, dict[str, int]] = {table: {} for table in TABLES}
        """Per table, the newest version of each of this group's app ids the lake holds."""
        self._pending = _Pending()
        self._lake_down: str | None = None
        self._placement = _LakePlacement(self)
        self._stopping = asyncio.Event()
        self._consumer_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def app_id(self, source: str) -> str:
        """The Delta application transaction id for one bus source."""
        return f"{self.group}/{source}"

    # --- the lake's versions ------------------------------------------------------------

    async def _retrying(self, what: str, call: Any) -> Any:
        """``await call()`` until the lake answers; the batch waits, it is never skipped."""
        backoff = 0.1
        while True:
            try:
                result = await call()
            except Exception as exc:  # whatever the lake's engine raises, hold and retry
                self.lake_failures += 1
                if self._lake_down is None:
                    log.error("lake %s failed, holding the batch until it is back: %s", what, exc)
                self._lake_down = f"{what}: {exc}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            if self._lake_down is not None:
                log.info("the lake is back; archiving resumes")
                self._lake_down = None
            return result

    async def _read_versions(self, sources: Sequence[str]) -> None:
        """Refresh what every table holds of ``sources`` from the lake."""
        for table in TABLES:
            versions: dict[str, int] = await self._retrying(
                f"versions({table})", lambda table=table: self.lake.versions(table)
            )
            written = self._written[table]
            for source in sources:
                app = self.app_id(source)
                if app in versions:
                    written[app] = versions[app]
                else:
                    written.pop(app, None)

    async def _assigned(self, sources: Sequence[str]) -> dict[str, int]:
        await self._read_versions(sources)
        starts: dict[str, int] = {}
        for source in sources:
            app = self.app_id(source)
            held = [self._written[table].get(app) for table in TABLES]
            if all(version is not None for version in held):
                starts[source] = min(v for v in held if v is not None) + 1
        if starts:
            log.info("archiver starts at %s", starts)
        return starts

    def _revoked(self, sources: Sequence[str]) -> None:
        # The member that gets them reads them again from where the lake says.
        self._pending.drop_sources(set(sources))

    # --- writing ------------------------------------------------------------------------

    def _new_rows(self) -> tuple[Batch, int]:
        """The pending events no table holds yet, and how many were left out."""
        rows = Batch()
        left_out = 0
        pending = self._pending
        for kind, table in TABLE_OF.items():
            written = self._written[table]
            held = {source: written.get(self.app_id(source), -1) for source in pending.first}
            if all(first > held[source] for source, first in pending.first.items()):
                rows.of(kind).extend(pending.events[kind])  # the usual case: all of it is new
                continue
            target = rows.of(kind)
            for event, (source, offset) in zip(
                pending.events[kind], pending.positions[kind], strict=True
            ):
                if offset > held[source]:
                    target.append(event)
                else:
                    left_out += 1
        return rows, left_out

    async def _append(self, rows: Batch, transactions: dict[str, int]) -> None:
        backoff = 0.1
        while True:
            try:
                await self.lake.append(rows, transactions)
            except Exception as exc:  # whatever the lake's engine raises, hold and retry
                self.lake_failures += 1
                if self._lake_down is None:
                    log.error("lake append failed, holding the batch until it is back: %s", exc)
                self._lake_down = f"append: {exc}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                # Some tables may have committed before the failure: ask them again.
                await self._read_versions(list(self._pending.last))
                rows, _ = self._new_rows()
                if not rows:
                    return
                continue
            if self._lake_down is not None:
                log.info("the lake is back; archiving resumes")
                self._lake_down = None
            return

    async def _flush(self, consumer: Consumer) -> None:
        pending = self._pending
        if not pending.count:
            return
        last = dict(pending.last)
        rows, left_out = self._new_rows()
        if rows:
            transactions = {self.app_id(source): offset for source, offset in last.items()}
            started = time.perf_counter()
            await self._append(rows, transactions)
            lake_committed(rows, TABLE_OF, time.perf_counter() - started)
            self.appends += 1
        for written in self._written.values():
            for source, offset in last.items():
                app = self.app_id(source)
                written[app] = max(written.get(app, -1), offset)
        self.archived += len(rows)
        self.duplicates += left_out
        self._pending = _Pending()
        # Only now: the lake has the batch. A failed commit is harmless, since whatever the
        # bus delivers again the lake's versions leave out.
        await consumer.commit()
        self.consumption.done()

    # --- the loops ----------------------------------------------------------------------

    async def _run(self, consumer: Consumer) -> None:
        deadline = 0.0
        loop = asyncio.get_running_loop()
        while True:
            if self._stopping.is_set():
                # Take what the bus already has (the ingest stopped first), then write it.
                while self._pending.count < self.max_batch:
                    batch = await consumer.poll(self.max_batch - self._pending.count, 0)
                    if not batch:
                        break
                    self._pending.add(batch, consumer.positions())
                    self.consumption.took(batch)
                await self._flush(consumer)
                return
            wait = self.flush_interval if not self._pending.count else deadline - loop.time()
            batch = await consumer.poll(
                max(self.max_batch - self._pending.count, 1), timeout=max(min(wait, 0.25), 0)
            )
            if batch:
                if not self._pending.count:
                    deadline = loop.time() + self.flush_interval
                self._pending.add(batch, consumer.positions())
                self.consumption.took(batch)
            if self._pending.count and (
                loop.time() >= deadline or self._pending.count >= self.max_batch
            ):
                await self._flush(consumer)
            elif batch:
                await asyncio.sleep(min(self.poll_rest, max(deadline - loop.time(), 0)))

    async def _join(self) -> Consumer:
        # It polls at most every ``poll_rest`` while it gathers, so the bus may hold what
        # arrives as long: at 60k msg/s Kafka took 11-12 % of a core instead of 13-16 with
        # fetches answered after 10 ms (BENCHMARKS.md).
        return await self.bus.consumer(self.group, self._placement, max_wait=self.poll_rest)

    async def _consume(self, consumer: Consumer | None) -> None:
        while True:
            try:
                if consumer is None:
                    consumer = await self._join()
                self.consumption.consumer = consumer
                async with consumer:
                    await self._run(consumer)
                    return
            except BusError as exc:
                # A new member starts where the lake says: what this one held is read again.
                consumer = None
                self.bus_failures += 1
                self._pending = _Pending()
                log.error("bus error, joining the group again: %s", exc)
                if self._stopping.is_set():
                    return
                await asyncio.sleep(1.0)

    async def _compact(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.lake.compact()
            except Exception as exc:  # the next round tries again
                log.warning("lake compaction failed: %s", exc)

    async def _expire(self, retention: float) -> None:
        while True:
            try:
                await self.lake.expire(time.time() - retention)
            except Exception as exc:  # the next round tries again
                log.warning("lake expiry failed: %s", exc)
            await asyncio.sleep(EXPIRE_PERIOD)

    async def start(self) -> None:
        self._stopping.clear()
        # Joined before start returns: the in-process bus keeps, for this group, every
        # event published from now on.
        consumer = await self._join()
        self._consumer_task = spawn(self._consume(consumer), "archiver")
        self._tasks.append(self._consumer_task)
        if self.compact_interval is not None:
            self._tasks.append(spawn(self._compact(self.compact_interval), "lake-compaction"))
        if self.retention is not None:
            self._tasks.append(spawn(self._expire(self.retention), "lake-expiry"))

    async def stop(self) -> None:
        """Write what was polled (and what the bus already holds), then stop."""
        self._stopping.set()
        if self._consumer_task is not None and self._lake_down is None:
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(self._consumer_task), STOP_TIMEOUT)
        await cancel_all(self._tasks)
        self._tasks.clear()

    def health(self) -> Health:
        stopped = [name for name in crashed(self._tasks) if not self._stopping.is_set()]
        if stopped:
            return Health(False, f"stopped: {', '.join(stopped)}")
        if self._lake_down is not None:
            return Health(False, f"waiting for the lake: {self._lake_down}")
        return Health(
            True,
            f"{self.archived} events archived in {self.appends} lake commits, "
            f"{self._pending.count} pending, {self.duplicates} redelivered events left out",
        )
