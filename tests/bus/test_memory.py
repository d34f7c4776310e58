"""The embedded bus against the shared bus suite, and its bound: nothing a group has not
committed is dropped; at the bound, publish waits for the slowest group."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from iotstream.bus import MemoryBus
from iotstream.errors import BusError

from .suite import BusSuite, Recorded, drain, readings, seqs


class TestMemoryBus(BusSuite):
    @pytest.fixture
    async def bus(self) -> AsyncIterator[MemoryBus]:
        async with MemoryBus() as bus:
            yield bus

    async def test_batches_every_group_committed_are_dropped(self) -> None:
        async with MemoryBus() as bus:
            first, second = await bus.consumer("a"), await bus.consumer("b")
            await bus.publish(readings("d", range(10)))
            for consumer in (first, second):
                assert len(await consumer.poll(1000, timeout=0.1)) == 10
            await first.commit()
            assert bus.retained == 10  # b has not committed yet
            assert "10 events retained" in bus.health().detail
            await second.commit()
            assert bus.retained == 0

    async def test_a_slow_group_loses_nothing_and_slows_no_other_below_the_bound(
        self,
    ) -> None:
        async with MemoryBus(max_events=100) as bus:
            fast, slow = await bus.consumer("fast"), await bus.consumer("slow")
            for start in range(0, 90, 10):
                await bus.publish(readings("a", range(start, start + 10)))
                assert len(await fast.poll(1000, timeout=0.1)) == 10
                await fast.commit()
            assert bus.retained == 90
            assert bus.lag() == {"fast": 0, "slow": 90}
            assert bus.health().ok
            assert seqs(await drain(slow, 90), "a") == list(range(90))

    async def test_at_the_bound_publish_waits_for_the_slowest_group(self) -> None:
        async with MemoryBus(max_events=30) as bus:
            fast, slow = await bus.consumer("fast"), await bus.consumer("slow")
            for start in range(0, 30, 10):
                await bus.publish(readings("a", range(start, start + 10)))
            assert len(await drain(fast, 30)) == 30
            await fast.commit()
            waiting = asyncio.create_task(bus.publish(readings("a", range(30, 40))))
            later = asyncio.create_task(bus.publish(readings("a", range(40, 45))))
            await asyncio.sleep(0.1)
            assert not waiting.done() and not later.done()
            health = bus.health()
            assert not health.ok
            assert "waits for group slow" in health.detail
            # The slow group reads on; its commit makes room, and the waiting batches enter
            # in the order they were published.
            assert seqs(await drain(slow, 30), "a") == list(range(30))
            await slow.commit()
            await asyncio.wait_for(asyncio.gather(waiting, later), 5)
            assert bus.health().ok
            assert seqs(await drain(slow, 15), "a") == list(range(30, 45))
            assert seqs(await drain(fast, 15), "a") == list(range(30, 45))

    async def test_a_slow_group_receives_every_event_of_a_long_stream(self) -> None:
        async with MemoryBus(max_events=50) as bus:
            slow = await bus.consumer("slow")

            async def publish() -> None:
                for start in range(0, 1000, 10):
                    await bus.publish(readings("a", range(start, start + 10)))

            publisher = asyncio.create_task(publish())
            got: list[int] = []
            while len(got) < 1000:
                batch = await slow.poll(7, timeout=1.0)
                got.extend(seqs(batch, "a"))
                await asyncio.sleep(0.001)
                await slow.commit()
            await asyncio.wait_for(publisher, 5)
            assert got == list(range(1000))
            assert bus.retained <= 50

    async def test_a_group_that_left_without_committing_still_holds_its_events(
        self,
    ) -> None:
        async with MemoryBus(max_events=20) as bus:
            gone = await bus.consumer("gone")
            await gone.close()
            await bus.publish(readings("a", range(20)))
            waiting = asyncio.create_task(bus.publish(readings("a", range(20, 30))))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            back = await bus.consumer("gone")
            assert seqs(await drain(back, 20), "a") == list(range(20))
            await back.commit()
            await asyncio.wait_for(waiting, 5)

    async def test_stopping_the_bus_fails_a_waiting_publish(self) -> None:
        bus = MemoryBus(max_events=10)
        async with bus:
            await bus.consumer("slow")
            await bus.publish(readings("a", range(10)))
            waiting = asyncio.create_task(bus.publish(readings("a", range(10, 20))))
            await asyncio.sleep(0.05)
        with pytest.raises(BusError):
            await asyncio.wait_for(waiting, 5)

    async def test_before_any_group_joined_the_oldest_batches_go_past_the_bound(
        self,
    ) -> None:
        async with MemoryBus(max_events=30) as bus:
            for start in range(0, 100, 10):
                await bus.publish(readings("a", range(start, start + 10)))
            assert bus.retained == 30
            consumer = await bus.consumer("late")
            assert seqs(await drain(consumer, 30), "a") == list(range(70, 100))

    async def test_a_batch_larger_than_the_bound_still_enters_an_empty_log(self) -> None:
        async with MemoryBus(max_events=5) as bus:
            consumer = await bus.consumer("g")
            await asyncio.wait_for(bus.publish(readings("a", range(8))), 1)
            assert len(await drain(consumer, 8)) == 8

    async def test_each_bus_is_a_source_of_its_own(self) -> None:
        async with MemoryBus() as first, MemoryBus() as second:
            assert first.source != second.source
            assert first.source.startswith("memory-")
            await first.publish(readings("a", range(3)))
            placement = Recorded()
            consumer = await first.consumer("g", placement)
            await consumer.poll(100, timeout=0.1)
            assert placement.assigned_sources == [first.source]
            assert {p.source for p in consumer.positions()} == {first.source}
