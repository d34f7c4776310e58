"""The store contract, written once. A backend's test module subclasses
``StoreSuite`` and provides a ``store`` fixture: a started store of its own (own
key prefix) that keeps at most ``DEADLETTER_LIMIT`` dead letters and dedupes over
``DEDUPE_WINDOW`` readings per device."""

from __future__ import annotations

import asyncio
import time

from iotstream.models import Batch, Changes, RawMessage, Reading, Rejected
from iotstream.store import Store
from iotstream.store.base import Freshness

DEADLETTER_LIMIT = 5
DEDUPE_WINDOW = 8
T0 = 1_800_000_000.0


def reading(device: str, ts: float, **fields: object) -> Reading:
    return Reading(device, dict(fields), ts, ts + 0.01)


def rejected(n: int, reason: str = "invalid_json") -> Rejected:
    return Rejected("sensors/a/coordinates", f"bad{n}".encode(), 4, reason, "not JSON", T0 + n)


class StoreSuite:
    async def test_apply_sets_and_returns_the_latest_state(self, store: Store) -> None:
        changes = await store.apply(Batch(readings=[reading("r1", T0, x=1.0, y=2.0, heading=90)]))
        expected = {
            "deviceId": "r1",
            "x": 1.0,
            "y": 2.0,
            "heading": 90,
            "timestamp": T0,
            "receivedAt": T0 + 0.01,
        }
        assert changes.updated == [expected]
        assert await store.device("r1") == expected
        assert await store.devices() == [expected]
        assert await store.device("nobody") is None

    async def test_fields_merge_and_a_batch_reports_each_device_once(self, store: Store) -> None:
        changes = await store.apply(
            Batch(
                readings=[
                    reading("r1", T0, x=1.0, y=2.0),
                    reading("r1", T0 + 1, motorRPM=1500),
                    reading("r1", T0 + 2, x=3.0),
                ]
            )
        )
        assert len(changes.updated) == 1
        state = await store.device("r1")
        assert state is not None
        assert (state["x"], state["y"], state["motorRPM"], state["timestamp"]) == (
            3.0,
            2.0,
            1500,
            T0 + 2,
        )

    async def test_an_older_reading_is_counted_but_does_not_overwrite(self, store: Store) -> None:
        await store.apply(Batch(readings=[reading("r1", T0 + 10, x=10.0, y=10.0)]))
        changes = await store.apply(Batch(readings=[reading("r1", T0, x=0.0, y=0.0)]))
        assert not changes
        state = await store.device("r1")
        assert state is not None and state["x"] == 10.0
        assert (await store.counters()).per_device == {"r1": 2}

    async def test_replaying_a_batch_changes_nothing(self, store: Store) -> None:
        batch = Batch(readings=[reading("r1", T0 + s, x=float(s), y=0.0) for s in range(5)])
        await store.apply(batch)
        before = (await store.devices(), await store.counters())
        changes = await store.apply(batch)
        assert not changes
        assert (await store.devices(), await store.counters()) == before

    async def test_only_equal_readings_are_duplicates(self, store: Store) -> None:
        first = reading("r1", T0, x=1.0, y=1.0)
        await store.apply(Batch(readings=[first]))
        await store.apply(
            Batch(
                readings=[
                    first,  # a redelivery: ignored
                    reading(
                        "r1", T0, x=2.0, y=1.0
                    ),  # same time, other fields: a reading of its own
                    Reading("r1", {"x": 1.0, "y": 1.0}, T0 + 1, T0 + 1),  # same fields, later
                ]
            )
        )
        assert (await store.counters()).per_device == {"r1": 3}

    async def test_the_dedupe_window_is_bounded(self, store: Store) -> None:
        old = reading("r1", T0, x=0.0, y=0.0)
        newer = [reading("r1", T0 + s, x=float(s), y=0.0) for s in range(1, DEDUPE_WINDOW + 1)]
        await store.apply(Batch(readings=[old, *newer]))
        await store.apply(Batch(readings=[old]))  # fell out of the window: counted again
        assert (await store.counters()).per_device == {"r1": DEDUPE_WINDOW + 2}

    async def test_counters_per_device_topic_and_reason(self, store: Store) -> None:
        await store.apply(
            Batch(
                readings=[
                    reading("a", T0, x=1.0, y=1.0),
                    reading("a", T0 + 1, x=1.0, y=1.0),
                    reading("b", T0, x=1.0, y=1.0),
                ],
                raw=[
                    RawMessage("test/hello", b"hi", T0),
                    RawMessage("test/hello", b"hi", T0),
                    RawMessage("orin/a/command", b"slam", T0),
                ],
                rejected=[rejected(1), rejected(2, "payload_too_large")],
            )
        )
        counters = await store.counters()
        assert (counters.readings, counters.raw, counters.rejected, counters.total) == (3, 3, 2, 8)
        assert counters.per_device == {"a": 2, "b": 1}
        assert counters.per_topic == {"test/hello": 2, "orin/a/command": 1}
        assert counters.per_reason == {"invalid_json": 1, "payload_too_large": 1}

    async def test_deadletters_are_newest_first_and_bounded(self, store: Store) -> None:
        await store.apply(Batch(rejected=[rejected(n) for n in range(DEADLETTER_LIMIT + 3)]))
        kept = await store.deadletters()
        assert [r.payload for r in kept] == [
            f"bad{n}".encode() for n in reversed(range(3, DEADLETTER_LIMIT + 3))
        ]
        assert kept[0] == rejected(DEADLETTER_LIMIT + 2)
        assert len(await store.deadletters(2)) == 2

    async def test_expire_removes_only_silent_devices(self, store: Store) -> None:
        now = time.time()
        await store.apply(
            Batch(
                readings=[
                    Reading("old", {"x": 1.0, "y": 1.0}, now - 100, now - 100),
                    Reading("new", {"x": 1.0, "y": 1.0}, now, now),
                ]
            )
        )
        assert await store.expire(now - 50) == ["old"]
        assert [s["deviceId"] for s in await store.devices()] == ["new"]
        assert await store.device("old") is None
        assert await store.expire(now - 50) == []

    async def test_a_device_heard_again_after_it_expired_starts_a_new_state(
        self, store: Store
    ) -> None:
        now = time.time()
        first = Reading("r1", {"x": 1.0, "y": 1.0}, now - 100, now - 100)
        await store.apply(Batch(readings=[first]))
        assert await store.expire(now - 50) == ["r1"]
        again = Reading("r1", {"x": 2.0}, now, now)
        changes = await store.apply(Batch(readings=[again]))
        assert changes.updated == [
            {"deviceId": "r1", "x": 2.0, "timestamp": now, "receivedAt": now}
        ]
        assert not await store.apply(Batch(readings=[again]))  # a repeat
        await store.apply(Batch(readings=[Reading("r1", {"x": 3.0}, now, now)]))  # same time
        assert await store.device("r1") == {
            "deviceId": "r1",
            "x": 3.0,
            "timestamp": now,
            "receivedAt": now,
        }
        assert (await store.counters()).per_device == {"r1": 3}

    async def test_freshness_counts_known_and_silent_devices(self, store: Store) -> None:
        now = time.time()
        assert await store.freshness(now) == Freshness(0, 0)
        await store.apply(
            Batch(
                readings=[
                    Reading("quiet", {"x": 1.0, "y": 1.0}, now - 100, now - 100),
                    Reading("talking", {"x": 1.0, "y": 1.0}, now - 100, now - 100),
                    Reading("talking", {"x": 2.0, "y": 1.0}, now, now),
                ]
            )
        )
        assert await store.freshness(now - 50) == Freshness(known=2, silent=1)
        assert await store.freshness(now + 1) == Freshness(known=2, silent=2)
        assert await store.freshness(now - 200) == Freshness(known=2, silent=0)

    async def test_every_write_announces_its_changes_to_every_subscriber_in_order(
        self, store: Store
    ) -> None:
        now = time.time()

        async def collect(ready: asyncio.Event, count: int) -> list[Changes]:
            async with store.subscribe() as changes:
                ready.set()
                got = []
                async for change in changes:
                    got.append(change)
                    if len(got) == count:
                        return got
            return got

        readies = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(collect(r, 22)) for r in readies]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 10)
        sent = []
        for i in range(20):
            batch = Batch(readings=[Reading(f"d{i}", {"x": float(i)}, now - i, now - i)])
            sent.append(await store.apply(batch))
        assert not await store.apply(Batch(readings=[reading("d0", now - 1, x=-1.0)]))  # older
        assert not await store.apply(Batch(raw=[RawMessage("test/hello", b"hi", now)]))
        sent.append(await store.apply(Batch(readings=[reading("d1", now, x=1.5)])))
        assert await store.expire(now - 18.5) == ["d19"]
        sent.append(Changes(removed=["d19"]))
        assert await store.expire(now - 18.5) == []  # nothing to announce
        results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert results == [sent, sent]
        assert [c.updated[0]["deviceId"] for c in sent[:20]] == [f"d{i}" for i in range(20)]

    async def test_a_write_that_reports_nothing_still_announces(self, store: Store) -> None:
        async with store.subscribe() as changes:
            await store.apply(Batch(readings=[reading("r1", T0, x=1.0)]))
            assert (await asyncio.wait_for(anext(changes), 10)).updated
            await store.apply(Batch(readings=[reading("r1", T0 + 1, x=2.0)]), report=False)
            announced = await asyncio.wait_for(anext(changes), 10)
        assert announced.updated == [await store.device("r1")]
        assert announced.updated[0]["x"] == 2.0

    async def test_the_total_counts_every_message(self, store: Store) -> None:
        assert await store.total() == 0
        await store.apply(
            Batch(
                readings=[reading("a", T0, x=1.0), reading("b", T0, x=1.0)],
                raw=[RawMessage("test/hello", b"hi", T0)],
                rejected=[rejected(1)],
            )
        )
        assert await store.total() == 4 == (await store.counters()).total

    async def test_health_reports_up(self, store: Store) -> None:
        assert store.health().ok
