"""The embedded bus against the shared bus suite, and its bounded retention."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iotstream.bus import MemoryBus
from iotstream.models import Batch

from .suite import BusSuite, readings


class TestMemoryBus(BusSuite):
    @pytest.fixture
    async def bus(self) -> AsyncIterator[MemoryBus]:
        async with MemoryBus() as bus:
            yield bus

    async def test_retention_moves_slow_groups_to_the_oldest_kept_batch(self) -> None:
        async with MemoryBus(retention_events=30) as bus:
            consumer = await bus.consumer("slow")
            for start in range(0, 100, 10):
                await bus.publish(readings("a", range(start, start + 10)))
            batch: Batch = await consumer.poll(1000, timeout=0.1)
            assert [r.fields["seq"] for r in batch.readings] == list(range(70, 100))

    async def test_batches_every_group_committed_are_dropped(self) -> None:
        async with MemoryBus() as bus:
            first, second = await bus.consumer("a"), await bus.consumer("b")
            await bus.publish(readings("d", range(10)))
            for consumer in (first, second):
                assert len(await consumer.poll(1000, timeout=0.1)) == 10
            await first.commit()
            assert "10 events retained" in bus.health().detail  # b has not committed yet
            await second.commit()
            assert "0 events retained" in bus.health().detail
