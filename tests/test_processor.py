"""The processor on the memory bus and the memory store, with failures on demand."""

from __future__ import annotations

import asyncio
import itertools
import logging
import statistics
import time
from collections.abc import AsyncIterator

import pytest

from iotstream.models import Batch, Changes, DeviceId, RawMessage, Reading, Rejected
from iotstream.processor import Processor

from .faults import FlakyBus, FlakyStore, wait_until

GROUP = "test-processor"
T0 = 1_800_000_000.0


def reading(device: str, seq: int, received_at: float = T0) -> Reading:
    return Reading(
        DeviceId.parse(device), {"x": float(seq), "y": -1.0, "seq": seq}, T0 + seq, received_at
    )


def readings(device: str, seqs: range) -> Batch:
    return Batch(readings=[reading(device, seq) for seq in seqs])


class Heard:
    """Every ``Changes`` a store's subscriber received, collected in the background."""

    def __init__(self) -> None:
        self.changes: list[Changes] = []

    @property
    def updated(self) -> list[tuple[str, int]]:
        """``(device, seq)`` of every announced state, in order."""
        return [(s["deviceId"], s["seq"]) for c in self.changes for s in c.updated]

    @property
    def removed(self) -> list[str]:
        return [device for c in self.changes for device in c.removed]


@pytest.fixture
def bus() -> FlakyBus:
    return FlakyBus()


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


@pytest.fixture
async def heard(store: FlakyStore) -> AsyncIterator[Heard]:
    """What subscribers hear from ``store``, subscribed before the processor starts."""
    heard = Heard()
    async with store.subscribe() as changes:

        async def listen() -> None:
            async for change in changes:
                heard.changes.append(change)

        listener = asyncio.create_task(listen())
        yield heard
        listener.cancel()
        with pytest.raises(asyncio.CancelledError):
            await listener


async def test_a_batch_on_the_bus_reaches_the_store_and_its_subscribers(
    bus: FlakyBus, store: FlakyStore, heard: Heard
) -> None:
    raw = RawMessage("test/hello", b"Hello World!", T0)
    bad = Rejected("sensors/r1/coordinates", b"{oops", 5, "invalid_json", "not JSON", T0)
    batch = Batch(readings=[reading("r1", 1), reading("r2", 1), reading("r1", 2)], raw=[raw])
    batch.rejected.append(bad)
    async with bus, store, Processor(bus, store, group=GROUP) as processor:
        await bus.publish(batch)
        await wait_until(lambda: processor.processed == 5, "the batch was processed")
        await wait_until(lambda: len(heard.changes) == 1, "subscribers heard of it")
        assert processor.health().ok
        assert processor.health().detail == "5 events processed"
        assert sorted(heard.updated) == [("r1", 2), ("r2", 1)]
        r1 = await store.device("r1")
        assert r1 is not None
        assert (r1["x"], r1["seq"], r1["timestamp"]) == (2.0, 2, T0 + 2)
        counters = await store.counters()
        assert (counters.readings, counters.raw, counters.rejected) == (3, 1, 1)
        assert counters.per_device == {"r1": 2, "r2": 1}
        assert counters.per_topic == {"test/hello": 1}
        assert await store.deadletters() == [bad]
        # Committed once, when the stream paused (commits are spaced out, not one per batch).
        await wait_until(lambda: bus.commits == 1, "the batch was committed")
        assert "0 events retained" in bus.health().detail


async def test_batches_are_applied_in_bus_order(
    bus: FlakyBus, store: FlakyStore, heard: Heard
) -> None:
    async with bus, store, Processor(bus, store, group=GROUP) as processor:
        for start in range(0, 50, 10):
            await bus.publish(readings("r1", range(start, start + 10)))
        await wait_until(lambda: processor.processed == 50, "every batch was processed")
        await wait_until(lambda: ("r1", 49) in heard.updated, "subscribers heard the last")
    state = await store.device("r1")
    assert state is not None and state["seq"] == 49
    seqs = [seq for _, seq in heard.updated]
    assert seqs == sorted(seqs)
    assert (await store.counters()).readings == 50


async def test_a_store_that_fails_before_writing_holds_the_batch_until_it_is_back(
    bus: FlakyBus, store: FlakyStore, heard: Heard, caplog: pytest.LogCaptureFixture
) -> None:
    store.before_write.fail_next()  # until healed
    async with bus, store, Processor(bus, store, group=GROUP) as processor:
        await bus.publish(readings("r1", range(10)))
        await wait_until(lambda: store.before_write.injected >= 3, "the processor retried")
        # Held: nothing written, nothing committed, and health says why.
        health = processor.health()
        assert not health.ok
        assert health.detail.startswith("waiting for the store: store write failed")
        await bus.publish(readings("r2", range(5)))
        assert store.writes == 0
        assert bus.commits == 0
        assert processor.processed == 0
        assert await store.devices() == []
        assert heard.changes == []

        store.before_write.heal()
        await wait_until(lambda: processor.processed == 15, "the held batches were processed")
        await wait_until(lambda: ("r2", 4) in heard.updated, "subscribers heard of them")
        assert processor.health().ok
        counters = await store.counters()
        # Exactly once: this store does not dedupe, so a second write would count twice.
        assert counters.readings == 15
        assert counters.per_device == {"r1": 10, "r2": 5}
        await wait_until(
            lambda: "0 events retained" in bus.health().detail, "the batches were committed"
        )
        assert processor.store_failures == store.before_write.injected
    held = [r for r in caplog.records if "holding the batch" in r.getMessage()]
    assert len(held) == 1  # one outage, one error in the log


async def test_subscribers_hear_of_a_write_whose_reply_was_lost(bus: FlakyBus) -> None:
    """The store wrote the batch, then the call failed (as when Redis ran the script but
    the reply was lost). The processor retries; the store sees a replay and changes
    nothing, so unless the write announced itself, nobody ever hears of the update."""
    # As the distributed store does, this one ignores replays (its dedupe window).
    store = FlakyStore(dedupe_window=8)
    store.after_write.fail_next(1)
    async with store.subscribe() as changes, bus, store:
        async with Processor(bus, store, group=GROUP) as processor:
            await bus.publish(readings("r1", range(3)))
            await wait_until(lambda: processor.processed == 3, "the batch was processed")
            assert store.after_write.injected == 1
            assert store.writes == 2  # the lost reply, then the replay
            try:
                heard = await asyncio.wait_for(anext(changes), 5.0)
            except TimeoutError:
                pytest.fail("the update was written but never announced to subscribers")
        assert [(s["deviceId"], s["seq"]) for s in heard.updated] == [("r1", 2)]
        assert (await store.counters()).readings == 3


async def test_silent_devices_expire_and_subscribers_hear_the_removal(
    bus: FlakyBus, store: FlakyStore, heard: Heard
) -> None:
    now = time.time()
    # The store's clock is the receive time: one device was last heard long ago, the
    # other is seen as current for the whole test.
    batch = Batch(readings=[reading("silent", 1, now - 60), reading("current", 1, now + 60)])
    async with bus, store, Processor(bus, store, group=GROUP, device_ttl=1.0) as processor:
        await bus.publish(batch)
        await wait_until(lambda: processor.processed == 2, "the batch was processed")
        await wait_until(lambda: heard.removed == ["silent"], "subscribers heard the removal")
        assert await store.device("silent") is None
        current = await store.device("current")
        assert current is not None and current["receivedAt"] == now + 60
        assert sorted(heard.updated) == [("current", 1), ("silent", 1)]
        assert heard.changes[-1] == Changes(removed=["silent"])


async def test_bus_errors_in_poll_and_commit_do_not_stop_the_processor(
    bus: FlakyBus, store: FlakyStore, caplog: pytest.LogCaptureFixture
) -> None:
    bus.poll_fault.fail_next(1)
    async with bus, store, Processor(bus, store, group=GROUP) as processor:
        await wait_until(lambda: processor.bus_failures == 1, "the poll failed")
        await bus.publish(readings("r1", range(5)))
        await wait_until(lambda: processor.processed == 5, "the first batch was processed")

        bus.commit_fault.fail_next(1)
        await bus.publish(readings("r2", range(5)))
        await wait_until(lambda: processor.bus_failures == 2, "the commit failed")
        # A later commit covers what the failed one left uncommitted.
        await bus.publish(readings("r3", range(5)))
        await wait_until(
            lambda: bus.commits >= 2 and "0 events retained" in bus.health().detail,
            "a later commit went through",
        )
        assert processor.health().ok
    counters = await store.counters()
    assert counters.per_device == {"r1": 5, "r2": 5, "r3": 5}
    assert (bus.poll_fault.injected, bus.commit_fault.injected) == (1, 1)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2, errors
    assert "bus poll failed" in errors[0]
    assert "bus commit failed" in errors[1]


async def test_a_lost_consumer_is_replaced_by_a_new_member(
    bus: FlakyBus, store: FlakyStore
) -> None:
    """A consumer Kafka fenced takes nothing more: carrying on with it would stall the
    processor for good."""
    async with bus, store, Processor(bus, store, group=GROUP) as processor:
        await bus.publish(readings("r1", range(5)))
        await wait_until(lambda: processor.processed == 5, "the first batch was processed")
        joined = len(bus.max_waits)
        bus.lost.fail_next(1)
        await wait_until(lambda: processor.bus_failures == 1, "the consumer was lost")
        await bus.publish(readings("r2", range(5)))
        await wait_until(lambda: processor.processed == 10, "a new member took the next batch")
        assert len(bus.max_waits) == joined + 1
        assert processor.health().ok
    counters = await store.counters()
    assert counters.per_device == {"r1": 5, "r2": 5}


class HeldStore(FlakyStore):
    """Its first write waits for ``release``; it records the devices of every write."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.writing = asyncio.Event()
        self.batches: list[list[str]] = []

    async def apply(self, batch: Batch, *, report: bool = True) -> Changes:
        self.batches.append([r.device_id for r in batch.readings])
        if len(self.batches) == 1:
            self.writing.set()
            await self.release.wait()
        return await super().apply(batch, report=report)


async def test_what_arrives_during_a_write_goes_into_the_next_one_together(
    bus: FlakyBus,
) -> None:
    """A batch is polled when the write before it is done, not while it runs: polled early, it
    would hold only what had arrived then, and what came after would wait two writes."""
    store = HeldStore()
    bus.commit_interval = 60.0  # as Kafka's, commits spaced: none comes between the two
    async with store, bus, Processor(bus, store, group=GROUP):
        await bus.publish(readings("a", range(1)))
        await asyncio.wait_for(store.writing.wait(), 5)
        await bus.publish(readings("b", range(1)))
        for _ in range(20):  # a poll running meanwhile would now take b alone
            await asyncio.sleep(0)
        await bus.publish(readings("c", range(1)))
        store.release.set()
        await wait_until(lambda: sum(map(len, store.batches)) == 3, "all three were written")
    assert store.batches == [["a"], ["b", "c"]]


class SlowStore(FlakyStore):
    """Each write takes ``seconds``; it records when each began and ended, and its size."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds
        self.writes_at: list[tuple[float, float, int]] = []

    async def apply(self, batch: Batch, *, report: bool = True) -> Changes:
        loop = asyncio.get_running_loop()
        began = loop.time()
        await asyncio.sleep(self.seconds)
        changes = await super().apply(batch, report=report)
        self.writes_at.append((began, loop.time(), len(batch)))
        return changes


async def feed(bus: FlakyBus, seconds: float, *, one_device: bool) -> int:
    """A reading every millisecond or so for ``seconds``, of one device or each of its own;
    how many were published."""
    loop = asyncio.get_running_loop()
    end, seq = loop.time() + seconds, 0
    while loop.time() < end:
        await bus.publish(readings("r1" if one_device else f"r{seq}", range(seq, seq + 1)))
        seq += 1
        await asyncio.sleep(0.001)
    return seq


def gaps_after_merges(writes: list[tuple[float, float, int]]) -> list[float]:
    """From the end of each write of more than one reading to the start of the next."""
    return [
        began - ended for (_, ended, size), (began, _, _) in itertools.pairwise(writes) if size > 1
    ]


@pytest.mark.parametrize(("write", "rest"), [(0.04, 0.02), (0.1, 0.025)])
async def test_after_a_write_that_merged_it_rests_half_as_long_at_most_max_rest(
    bus: FlakyBus, write: float, rest: float
) -> None:
    """Under load the next poll waits, so what arrives meanwhile joins one bigger write."""
    store = SlowStore(write)
    async with store, bus, Processor(bus, store, group=GROUP) as processor:
        sent = await feed(bus, 1.0, one_device=True)
        await wait_until(lambda: processor.processed == sent, "every reading was written")
    gaps = gaps_after_merges(store.writes_at)
    assert len(gaps) >= 5
    # Between two writes: the rest, the poll and (sometimes) a commit.
    assert min(gaps) >= rest - 0.001, gaps
    assert statistics.median(gaps) < rest + 0.015, gaps
    assert sum(size for _, _, size in store.writes_at) == sent


async def test_after_a_write_of_one_reading_a_device_it_polls_at_once(bus: FlakyBus) -> None:
    """Resting would only make the next write longer by as many devices as readings."""
    store = SlowStore(0.04)
    async with store, bus, Processor(bus, store, group=GROUP) as processor:
        sent = await feed(bus, 1.0, one_device=False)
        await wait_until(lambda: processor.processed == sent, "every reading was written")
    gaps = gaps_after_merges(store.writes_at)
    assert len(gaps) >= 5
    assert statistics.median(gaps) < 0.01, gaps
