"""The archiver on the memory bus and a real local Delta lake: every event once, through
lake failures, restarts and replays; about one lake commit per flush interval. The tables
are read back with ``deltalake`` and pyarrow, not through iotstream."""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

import harness
from iotstream.archiver import POLL_REST, Archiver
from iotstream.bus.kafka import KafkaBus
from iotstream.lake import RAW_MESSAGES, READINGS, REJECTED, TABLES
from iotstream.lake.delta import DeltaLake, readings_table
from iotstream.models import Batch, DeviceId, RawMessage, Reading, Rejected

from .faults import FlakyBus, FlakyLake, wait_until

T0 = 1_800_000_000.0
FLUSH = 0.2


def batch(round_: int, devices: int = 5, raw: int = 0, rejected: int = 0) -> Batch:
    """One reading per device numbered ``round_`` (as x), plus raw and rejected messages."""
    return Batch(
        readings=[
            Reading(
                DeviceId(f"d{d}"), {"x": float(round_), "y": float(d)}, T0 + round_, T0 + round_
            )
            for d in range(devices)
        ],
        raw=[RawMessage(f"test/{round_}/{i}", b"hello", T0 + round_) for i in range(raw)],
        rejected=[
            Rejected(f"sensors/r{round_}/{i}", b"{", 1, "invalid_json", "bad", T0 + round_)
            for i in range(rejected)
        ],
    )


def rows(lake: DeltaLake, table: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = DeltaTable(lake.uri(table)).to_pyarrow_table().to_pylist()
    return rows


def readings_held(lake: DeltaLake) -> Counter[tuple[str, float]]:
    return Counter((str(r["device_id"]), float(r["x"])) for r in rows(lake, READINGS))  # type: ignore[arg-type]


def expected(rounds: range, devices: int = 5) -> Counter[tuple[str, float]]:
    return Counter((f"d{d}", float(n)) for n in rounds for d in range(devices))


@pytest.fixture
async def bus() -> AsyncIterator[FlakyBus]:
    async with FlakyBus() as started:
        yield started


@pytest.fixture
async def lake(tmp_path: Path) -> AsyncIterator[FlakyLake]:
    async with FlakyLake(str(tmp_path / "lake")) as started:
        yield started


def archiver(bus: FlakyBus, lake: FlakyLake, **options: float) -> Archiver:
    return Archiver(bus, lake, flush_interval=options.pop("flush_interval", FLUSH), **options)  # type: ignore[arg-type]


async def test_every_event_is_archived_once(bus: FlakyBus, lake: FlakyLake) -> None:
    async with archiver(bus, lake) as running:
        for n in range(20):
            await bus.publish(batch(n, raw=1, rejected=1 if n % 5 == 0 else 0))
        await wait_until(lambda: running.archived == 20 * 5 + 20 + 4, "everything was archived")
        await wait_until(lambda: bus.lag().get(running.group) == 0, "the bus was committed")
        assert running.health().ok
    assert readings_held(lake) == expected(range(20))
    assert sorted(str(r["topic"]) for r in rows(lake, RAW_MESSAGES)) == sorted(
        f"test/{n}/0" for n in range(20)
    )
    assert sorted(str(r["topic"]) for r in rows(lake, REJECTED)) == sorted(
        f"sensors/r{n}/0" for n in range(0, 20, 5)
    )
    # Every table records where the archive stands on the bus.
    for table in TABLES:
        versions = await lake.versions(table)
        assert versions == {running.app_id(bus.source): 19}


async def test_a_failing_lake_holds_the_batch_and_loses_nothing(
    bus: FlakyBus, lake: FlakyLake
) -> None:
    async with archiver(bus, lake) as running:
        await bus.publish(batch(0))
        await wait_until(lambda: running.archived == 5, "the first batch was archived")
        lake.before_write.fail_next()
        for n in range(1, 10):
            await bus.publish(batch(n))
        await wait_until(lambda: lake.before_write.injected >= 3, "the lake refused appends")
        health = running.health()
        assert not health.ok
        assert "waiting for the lake" in health.detail
        assert running.archived == 5
        assert bus.lag()[running.group] == 45  # nothing committed past what the lake has
        lake.before_write.heal()
        await wait_until(lambda: running.archived == 50, "the held batch was archived")
        await wait_until(lambda: bus.lag().get(running.group) == 0, "the bus was committed")
        assert running.health().ok
    assert readings_held(lake) == expected(range(10))


async def test_a_lost_consumer_is_replaced_and_the_lake_gets_each_event_once(
    bus: FlakyBus, lake: FlakyLake
) -> None:
    async with archiver(bus, lake) as running:
        await bus.publish(batch(0))
        await wait_until(lambda: running.archived == 5, "the first batch was archived")
        joined = len(bus.max_waits)
        bus.lost.fail_next(1)
        await wait_until(lambda: running.bus_failures == 1, "the consumer was lost")
        for n in range(1, 5):
            await bus.publish(batch(n))
        await wait_until(lambda: running.archived == 25, "a new member archived the rest")
        assert len(bus.max_waits) == joined + 1
        assert running.health().ok
    assert readings_held(lake) == expected(range(5))


async def test_an_append_whose_reply_was_lost_is_not_written_twice(
    bus: FlakyBus, lake: FlakyLake
) -> None:
    async with archiver(bus, lake) as running:
        for round_ in range(2):
            lake.after_write.fail_next(1)
            for n in range(round_ * 10, round_ * 10 + 10):
                await bus.publish(batch(n))

            def settled(lost: int = round_ + 1) -> bool:
                return lake.after_write.injected == lost and bus.lag().get(running.group) == 0

            await wait_until(settled, "a reply was lost and the bus committed")
        await bus.publish(batch(20))
        await wait_until(lambda: running.archived == 105, "the next batch was archived")
        assert running.health().ok
    assert readings_held(lake) == expected(range(21))


async def test_a_restarted_archiver_writes_no_duplicate_of_replayed_events(
    bus: FlakyBus, lake: FlakyLake
) -> None:
    # The first archiver writes the lake but never gets its bus commit through, as if it
    # was killed right after each lake commit: the bus delivers everything again.
    bus.commit_fault.fail_next()
    first = archiver(bus, lake)
    async with first:
        for n in range(10):
            await bus.publish(batch(n))
        await wait_until(lambda: first.archived == 50, "the first archiver wrote the lake")
    assert bus.commits == 0
    assert bus.lag()[first.group] == 50
    bus.commit_fault.heal()
    for n in range(10, 15):
        await bus.publish(batch(n))
    second = archiver(bus, lake)
    async with second:
        await wait_until(lambda: second.archived == 25, "the second archiver wrote the rest")
        await wait_until(lambda: bus.lag().get(second.group) == 0, "the bus was committed")
        await asyncio.sleep(3 * FLUSH)
        assert second.archived == 25
    assert readings_held(lake) == expected(range(15))


async def test_a_table_left_behind_by_a_crash_gets_only_what_it_misses(
    bus: FlakyBus, lake: FlakyLake
) -> None:
    """A crash between two tables' commits: ``readings`` has rounds 0-9, the other tables
    do not. The restarted archiver writes rounds 0-9 to them only, and goes on."""
    group = Archiver(bus, lake).group
    for n in range(10):
        await bus.publish(batch(n, raw=1))
    held = Batch()
    for n in range(10):
        held.extend(batch(n))
    app = f"{group}/{bus.source}"
    write_deltalake(
        lake.uri(READINGS),
        readings_table(held.readings),
        mode="append",
        partition_by=["date"],
        commit_properties=CommitProperties(app_transactions=[Transaction(app, 9)]),
    )
    async with archiver(bus, lake) as running:
        await wait_until(lambda: bus.lag().get(running.group) == 0, "the bus was committed")
        assert running.duplicates == 50
        await bus.publish(batch(10, raw=1))
        await wait_until(lambda: running.archived == 10 + 6, "the next round was archived")
    assert readings_held(lake) == expected(range(11))
    assert len(rows(lake, RAW_MESSAGES)) == 11


async def test_a_table_deleted_under_it_is_made_again_and_archiving_goes_on(
    bus: FlakyBus, lake: FlakyLake
) -> None:
    async with archiver(bus, lake) as running:
        await bus.publish(batch(0))
        await wait_until(lambda: running.archived == 5, "the first batch was archived")
        shutil.rmtree(lake.uri(READINGS))
        await bus.publish(batch(1))
        await wait_until(lambda: running.archived == 10, "the next batch was archived")
    assert readings_held(lake) == expected(range(1, 2))


async def stream(
    bus: FlakyBus, running: Archiver, seconds: float, every: float
) -> tuple[int, float]:
    """Publish a batch every ``every`` seconds for ``seconds``; once all of it is archived, the
    batches published and the seconds since the first."""
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < seconds:
        await bus.publish(batch(n))
        n += 1
        await asyncio.sleep(every)
    await wait_until(lambda: running.archived == n * 5, "everything was archived")
    return n, time.monotonic() - started


async def test_about_one_lake_commit_per_flush_interval(bus: FlakyBus, lake: FlakyLake) -> None:
    async with archiver(bus, lake, flush_interval=0.5) as running:
        n, elapsed = await stream(bus, running, 3.0, 0.01)
    # One commit per half second, give or take the first and the last.
    assert elapsed / 0.5 - 2 <= lake.appends <= elapsed / 0.5 + 2
    assert n > 50  # many bus batches per lake commit
    assert readings_held(lake) == expected(range(n))


async def test_it_rests_between_polls_while_it_gathers(bus: FlakyBus, lake: FlakyLake) -> None:
    async with archiver(bus, lake, flush_interval=1.0) as running:
        assert running.poll_rest == POLL_REST
        assert bus.max_waits == [POLL_REST]  # the bus may hold what arrives as long
        n, elapsed = await stream(bus, running, 2.0, 0.005)
    # A poll after each rest, and one after each lake commit; not one per bus batch.
    assert n > 150
    assert bus.polls_with_events <= elapsed / POLL_REST + lake.appends + 2
    assert readings_held(lake) == expected(range(n))


async def test_a_full_batch_is_written_before_the_interval(bus: FlakyBus, lake: FlakyLake) -> None:
    async with Archiver(bus, lake, flush_interval=60, max_batch=20) as running:
        for n in range(8):
            await bus.publish(batch(n))
        await wait_until(lambda: running.archived >= 20, "a full batch was archived", timeout=10)


async def test_stopping_writes_what_the_bus_holds(bus: FlakyBus, lake: FlakyLake) -> None:
    async with Archiver(bus, lake, flush_interval=60) as running:
        for n in range(5):
            await bus.publish(batch(n))
        await asyncio.sleep(0.1)
    assert running.archived == 25
    assert bus.lag().get(running.group) == 0
    assert readings_held(lake) == expected(range(5))


async def test_compaction_and_expiry_run_in_the_background(bus: FlakyBus, lake: FlakyLake) -> None:
    async with archiver(bus, lake, compact_interval=0.3, retention=86_400.0) as running:
        for n in range(30):
            await bus.publish(batch(n))
            await asyncio.sleep(0.03)
        await wait_until(lambda: lake.compactions >= 2, "the lake was compacted twice")
        await wait_until(lambda: running.archived == 150, "archiving went on meanwhile")
        assert lake.expiries and abs(lake.expiries[0] - (time.time() - 86_400)) < 60
    assert readings_held(lake) == expected(range(30))


@pytest.mark.kafka
async def test_archivers_sharing_a_group_on_kafka_write_each_event_once(
    tmp_path: Path, kafka: harness.Service
) -> None:
    """A second archiver joins mid-stream and leaves again: partitions move between them
    both ways, and every event is still written once."""
    topic = f"test-{uuid.uuid4().hex[:12]}"
    devices = 20

    async def publish(bus: KafkaBus, rounds: range) -> None:
        for n in rounds:
            await bus.publish(batch(n, devices))
            await asyncio.sleep(0.02)

    async with (
        KafkaBus(kafka.address, topic=topic, partitions=4, group_prefix=f"{topic}.") as bus,
        DeltaLake(str(tmp_path / "lake")) as lake,
    ):
        first = Archiver(bus, lake, flush_interval=0.2)
        second = Archiver(bus, lake, flush_interval=0.2)
        async with first:
            await publish(bus, range(20))
            rounds = 20
            async with second:
                # The group rebalances in its own time: publish until the newcomer writes.
                async with asyncio.timeout(60):
                    while second.archived == 0:
                        await publish(bus, range(rounds, rounds + 5))
                        rounds += 5
                await wait_until(
                    lambda: first.archived + second.archived >= rounds * devices,
                    "what was published while both ran was archived",
                    timeout=60,
                )
            await publish(bus, range(rounds, rounds + 20))
            rounds += 20
            await wait_until(
                lambda: first.archived + second.archived >= rounds * devices,
                "every round was archived",
                timeout=60,
            )
            await asyncio.sleep(1.0)
        assert readings_held(lake) == expected(range(rounds), devices)


async def test_it_has_joined_the_group_when_start_returns(bus: FlakyBus, lake: FlakyLake) -> None:
    """Another group that reads and commits at once does not make the bus drop what the
    archiver has not read yet, even before the archiver's task first ran."""
    processor = await bus.consumer("processor")
    async with archiver(bus, lake) as running:
        await bus.publish(batch(0))
        assert len(await processor.poll(100, timeout=0)) == 5
        await processor.commit()
        assert bus.retained == 5
        await wait_until(lambda: running.archived == 5, "the batch was archived")
    assert readings_held(lake) == expected(range(1))
