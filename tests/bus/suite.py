"""The bus contract, written once. A backend's test module subclasses ``BusSuite``
and provides a ``bus`` fixture: a started bus of its own (own topic or namespace)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

import pytest

from iotstream.bus import Bus, Consumer, Placement, Position
from iotstream.errors import BusError
from iotstream.models import Batch, RawMessage, Reading, Rejected

T0 = 1_800_000_000.0


def readings(device: str, seqs: range) -> Batch:
    return Batch(
        readings=[
            Reading(device, {"x": float(s), "y": 0.0, "seq": s}, T0 + s, T0 + s) for s in seqs
        ]
    )


async def drain(consumer: Consumer, count: int, timeout: float = 30.0) -> Batch:
    """Poll until ``count`` events arrived (or time ran out)."""
    got = Batch()
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        batch = await consumer.poll(1000, timeout=0.5)
        got.readings.extend(batch.readings)
        got.raw.extend(batch.raw)
        got.rejected.extend(batch.rejected)
    return got


class Recorded(Placement):
    """Starts each source where ``starts`` says, and records what the bus told."""

    def __init__(self, starts: Mapping[str, int] | None = None) -> None:
        self.starts = dict(starts or {})
        self.assigned_sources: list[str] = []
        self.revoked_sources: list[str] = []

    async def assigned(self, sources: Sequence[str]) -> Mapping[str, int]:
        self.assigned_sources.extend(sources)
        return {source: self.starts[source] for source in sources if source in self.starts}

    async def revoked(self, sources: Sequence[str]) -> None:
        self.revoked_sources.extend(sources)


async def drain_positioned(
    consumer: Consumer, count: int, timeout: float = 30.0
) -> list[tuple[Position, Reading]]:
    """Poll until ``count`` readings arrived, each with its position."""
    got: list[tuple[Position, Reading]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        batch = await consumer.poll(1000, timeout=0.5)
        positions = consumer.positions()
        assert len(positions) == len(batch)
        events = batch.events()
        got.extend((p, e) for p, e in zip(positions, events, strict=True) if isinstance(e, Reading))
    return got


def seqs(batch: Batch, device: str) -> list[int]:
    return [r.fields["seq"] for r in batch.readings if r.device_id == device]


class BusSuite:
    async def test_a_group_receives_every_event_in_order_per_device(self, bus: Bus) -> None:
        for start in range(0, 100, 20):
            await bus.publish(readings("a", range(start, start + 20)))
            await bus.publish(readings("b", range(start, start + 20)))
        consumer = await bus.consumer("g")
        got = await drain(consumer, 200)
        await consumer.close()
        assert seqs(got, "a") == list(range(100))
        assert seqs(got, "b") == list(range(100))

    async def test_a_member_that_takes_in_bulk_receives_every_event(self, bus: Bus) -> None:
        for start in range(0, 60, 20):
            await bus.publish(readings("a", range(start, start + 20)))
        consumer = await bus.consumer("g", max_wait=0.2)
        got = await drain(consumer, 60)
        await bus.publish(readings("a", range(60, 65)))
        got.extend(await drain(consumer, 5))
        await consumer.close()
        assert seqs(got, "a") == list(range(65))

    async def test_every_group_receives_every_event(self, bus: Bus) -> None:
        await bus.publish(readings("a", range(10)))
        first, second = await bus.consumer("g1"), await bus.consumer("g2")
        got1, got2 = await drain(first, 10), await drain(second, 10)
        await first.close()
        await second.close()
        assert seqs(got1, "a") == seqs(got2, "a") == list(range(10))

    async def test_uncommitted_events_are_delivered_again(self, bus: Bus) -> None:
        await bus.publish(readings("a", range(10)))
        consumer = await bus.consumer("g")
        assert seqs(await drain(consumer, 10), "a") == list(range(10))
        await consumer.close()  # no commit: as if the processor died here
        again = await bus.consumer("g")
        assert seqs(await drain(again, 10), "a") == list(range(10))
        await again.close()

    async def test_a_new_consumer_resumes_after_the_commit(self, bus: Bus) -> None:
        await bus.publish(readings("a", range(10)))
        consumer = await bus.consumer("g")
        assert len(await drain(consumer, 10)) == 10
        await consumer.commit()
        await consumer.close()
        await bus.publish(readings("a", range(10, 15)))
        resumed = await bus.consumer("g")
        got = await drain(resumed, 5)
        extra = await resumed.poll(1000, timeout=1.0)
        await resumed.close()
        assert seqs(got, "a") == list(range(10, 15))
        assert len(extra) == 0

    async def test_poll_returns_an_empty_batch_when_idle(self, bus: Bus) -> None:
        consumer = await bus.consumer("g")
        started = time.monotonic()
        batch = await consumer.poll(100, timeout=0.3)
        await consumer.close()
        assert len(batch) == 0
        assert time.monotonic() - started >= 0.25

    async def test_every_kind_of_event_round_trips(self, bus: Bus) -> None:
        reading = Reading(
            "r-1",
            {"x": 1.5, "y": -2.0, "z": 0.25, "tags": ["a", {"b": None}], "motorRPM": 1500},
            T0,
            T0 + 0.5,
        )
        raw = RawMessage("test/hello", b"Hello \xff World!", T0)
        rejected = Rejected("sensors/r-1/coordinates", b"{oops", 5, "invalid_json", "not JSON", T0)
        await bus.publish(Batch(readings=[reading], raw=[raw], rejected=[rejected]))
        consumer = await bus.consumer("g")
        got = await drain(consumer, 3)
        await consumer.close()
        assert got.readings == [reading]
        assert got.raw == [raw]
        assert got.rejected == [rejected]

    async def test_publishing_from_many_tasks_loses_nothing(self, bus: Bus) -> None:
        await asyncio.gather(*(bus.publish(readings(f"d{i}", range(50))) for i in range(8)))
        consumer = await bus.consumer("g")
        got = await drain(consumer, 400)
        await consumer.close()
        for i in range(8):
            assert seqs(got, f"d{i}") == list(range(50))

    async def test_health_reports_up(self, bus: Bus) -> None:
        assert bus.health().ok

    async def test_lag_counts_what_the_group_has_not_committed(self, bus: Bus) -> None:
        consumer = await bus.consumer("g")
        await bus.publish(readings("a", range(10)))
        await bus.publish(readings("b", range(5)))
        assert len(await drain(consumer, 15)) == 15
        lag = await consumer.lag()
        assert 0 < sum(lag.values()) <= 15, lag  # a Kafka record may pack several readings
        await consumer.commit()
        deadline = time.monotonic() + 10  # a Kafka commit is asynchronous
        while sum((lag := await consumer.lag()).values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await consumer.close()
        assert lag and sum(lag.values()) == 0, lag

    async def test_positions_say_where_each_polled_event_sits(self, bus: Bus) -> None:
        for start in range(0, 30, 10):
            await bus.publish(readings("a", range(start, start + 10)))
            await bus.publish(readings("b", range(start, start + 10)))
        placement = Recorded()
        consumer = await bus.consumer("g", placement)
        got = await drain_positioned(consumer, 60)
        await consumer.close()
        assert len(got) == 60
        assert {p.source for p, _ in got} <= set(placement.assigned_sources)
        for device in ("a", "b"):
            mine = [(p, r) for p, r in got if r.device_id == device]
            assert [r.fields["seq"] for _, r in mine] == list(range(30))
            # A device's events stay in one source, at offsets that never go back.
            assert len({p.source for p, _ in mine}) == 1
            offsets = [p.offset for p, _ in mine]
            assert offsets == sorted(offsets)
            assert offsets[0] < offsets[-1]

    async def test_a_placed_member_starts_where_the_placement_says(self, bus: Bus) -> None:
        for start in range(0, 30, 10):
            await bus.publish(readings("a", range(start, start + 10)))
        first = await bus.consumer("g1", Recorded())
        got = await drain_positioned(first, 30)
        await first.close()
        # Start every source at the offset of its last event: only that offset is read.
        starts: dict[str, int] = {}
        for position, _ in got:
            starts[position.source] = max(starts.get(position.source, 0), position.offset)
        expected = [r.fields["seq"] for p, r in got if p.offset >= starts[p.source]]
        placed = await bus.consumer("g2", Recorded(starts))
        again = await drain_positioned(placed, len(expected))
        extra = await placed.poll(1000, timeout=0.5)
        await placed.close()
        assert [r.fields["seq"] for _, r in again] == expected
        assert 0 < len(expected) < 30
        assert len(extra) == 0

    async def test_a_source_the_placement_leaves_out_resumes_after_the_commit(
        self, bus: Bus
    ) -> None:
        await bus.publish(readings("a", range(10)))
        consumer = await bus.consumer("g")
        assert len(await drain(consumer, 10)) == 10
        await consumer.commit()
        await consumer.close()
        await bus.publish(readings("a", range(10, 15)))
        placed = await bus.consumer("g", Recorded())
        got = await drain_positioned(placed, 5)
        await placed.close()
        assert [r.fields["seq"] for _, r in got] == list(range(10, 15))

    async def test_positions_need_a_placement(self, bus: Bus) -> None:
        await bus.publish(readings("a", range(3)))
        consumer = await bus.consumer("g")
        await drain(consumer, 3)
        with pytest.raises(BusError):
            consumer.positions()
        await consumer.close()
