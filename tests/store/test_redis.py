"""The Redis store against the shared store suite, and what only a shared, remote store does:
several instances on one prefix, exact values through Lua, concurrent writers, outages."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import itertools
import math
import random
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

import harness
from iotstream.errors import ConfigError, StoreError
from iotstream.models import SENT, Batch, Changes, RawMessage, Reading, Rejected
from iotstream.store import MemoryStore
from iotstream.store.base import CommandMove
from iotstream.store.redis import RedisStore

from .command_suite import CommandSuite, new_command
from .suite import DEADLETTER_LIMIT, DEDUPE_WINDOW, T0, StoreSuite, reading, rejected

pytestmark = pytest.mark.redis


def url_of(server: harness.Service) -> str:
    return f"redis://{server.address}/0"


def unique_prefix() -> str:
    return f"test-{uuid.uuid4().hex}"


class TestRedisStore(StoreSuite, CommandSuite):
    @pytest.fixture
    async def store(self, redis_server: harness.Service) -> AsyncIterator[RedisStore]:
        async with RedisStore(
            url_of(redis_server),
            prefix=unique_prefix(),
            deadletter_limit=DEADLETTER_LIMIT,
            dedupe_window=DEDUPE_WINDOW,
        ) as store:
            yield store

    async def test_values_round_trip_exactly(self, store: RedisStore) -> None:
        # Redis's Lua cjson would give 1691234567.1235, 1 and {} here.
        fields = {
            "x": 1691234567.123456,
            "y": 0.1 + 0.2,
            "one": 1.0,
            "count": 2**53 + 1,
            "path": [[1.5, 2.25], [], {}],
            "label": 'a "quoted"\nline, with: commas}',
            'we"ird': True,
            "tail\\": None,
        }
        await store.apply(Batch(readings=[Reading('r"1\\', fields, T0 + 0.123456789, T0)]))
        await store.apply(Batch(readings=[Reading('r"1\\', {"tail\\": "é\u2028"}, T0 + 1, T0)]))
        state = await store.device('r"1\\')
        assert state == {
            "deviceId": 'r"1\\',
            **fields,
            "tail\\": "é\u2028",
            "timestamp": T0 + 1,
            "receivedAt": T0,
        }
        assert state is not None and type(state["one"]) is float

    @pytest.mark.parametrize("writers", [1, 2])
    @pytest.mark.parametrize("order", ["scattered", "mostly in order"])
    async def test_merges_and_dedupes_exactly_like_the_memory_store(
        self, store: RedisStore, order: str, writers: int, redis_server: harness.Service
    ) -> None:
        """A device the client has not seen takes the script's merged form when its readings
        are in order and the reading-by-reading form otherwise; a device it has seen is
        merged by the client against the state it last saw, which the script takes only if
        no other writer moved it since (with two writers taking turns, the first batch of a turn
        finds every device moved)."""
        rng = random.Random(7)
        names = ["x", "y", "heading", 'q"k', "b\\s", "ünï", "new\nline"]
        # No booleans: Python's == (the memory store's) finds False == -0.0 and True == 1.0.
        values: list[Any] = [1.0, -0.0, 2**40, 's"\\\n', [[0.1, []], {"a": None}], None]
        devices = ["a", "b", 'c"', "d\\"]
        clock = dict.fromkeys(devices, T0)

        def value() -> Any:
            return rng.choice([*values, rng.uniform(-1, 1) * 10 ** rng.randint(-8, 12)])

        def timestamp(device: str) -> float:
            if order == "scattered" or rng.random() < 0.02:
                return T0 + rng.randint(0, 30) + rng.choice([0.0, 0.01, 1e-6])
            clock[device] += rng.choice([0.0, 0.01, 1.0])
            return clock[device]

        sent: list[Reading] = []
        newest = dict.fromkeys(devices, -math.inf)
        late = 0  # readings not newer than every reading of their device before them

        def random_reading() -> Reading:
            nonlocal late
            if sent and rng.random() < (0.2 if order == "scattered" else 0.01):
                late += 1
                return rng.choice(sent[-30:])  # a redelivery, in or out of the window
            fields = {name: value() for name in rng.sample(names, rng.randint(1, 4))}
            device = rng.choice(devices)
            ts = timestamp(device)
            late += ts <= newest[device]
            newest[device] = max(newest[device], ts)
            new = Reading(device, fields, ts, ts + rng.random())
            sent.append(new)
            return new

        forms: Counter[bytes] = Counter()
        deferred = 0

        def counting(one: RedisStore) -> None:
            apply_call = one._apply_call

            async def counted(args: list[Any], writes: dict[str, Any]) -> Any:
                nonlocal deferred
                changed, late = await apply_call(args, writes)
                forms.update({b"w": len(writes), b"m": args.count(b"m"), b"r": args.count(b"r")})
                deferred += len(late)
                return changed, late

            one._apply_call = counted  # type: ignore[method-assign]

        batches = [Batch(readings=[random_reading() for _ in range(40)]) for _ in range(15)]
        async with (
            MemoryStore(dedupe_window=DEDUPE_WINDOW) as memory,
            RedisStore(
                url_of(redis_server),
                prefix=store._channel.removesuffix(":changes"),
                deadletter_limit=DEADLETTER_LIMIT,
                dedupe_window=DEDUPE_WINDOW,
            ) as other,
        ):
            stores = [store, other][:writers]
            for one in stores:
                counting(one)
            for n, batch in enumerate(batches):
                await memory.apply(batch)
                await stores[n // 3 % writers].apply(batch)  # turns of three batches
            # Key order too: states go to clients as they are.
            expected = {s["deviceId"]: list(s.items()) for s in await memory.devices()}
            assert {s["deviceId"]: list(s.items()) for s in await store.devices()} == expected
            assert await store.counters() == await memory.counters()
            assert (await memory.counters()).readings < sum(len(b) for b in batches)
        # A writer merges a device itself in every batch but its first sight of it and the
        # first of its turns after the other writer moved it.
        assert forms[b"w"] - deferred >= len(batches) * len(devices) / 2
        if writers == 2:
            assert deferred > 0
        if order == "mostly in order" and writers == 1:
            # Only a device with a late reading goes reading by reading: into its window,
            # which the client does not keep once it merged readings all newer than the state.
            assert forms[b"m"] and forms[b"r"] <= late

    async def test_a_window_left_without_its_state_still_finds_repeats(
        self, store: RedisStore, redis_server: harness.Service
    ) -> None:
        """A device's batch merged at once is checked against the window only through the
        state's time; a window whose state is gone sends the batch reading by reading. (A
        second instance writes it: one that has seen the device would merge it itself.)"""
        first = Reading("r1", {"x": 1.0}, T0, T0)
        await store.apply(Batch(readings=[first]))
        await store._redis.hdel(store._state, "r1")
        prefix = store._channel.removesuffix(":changes")
        async with RedisStore(
            url_of(redis_server), prefix=prefix, dedupe_window=DEDUPE_WINDOW
        ) as other:
            batch = Batch(readings=[first, Reading("r1", {"x": 2.0}, T0 + 1, T0 + 1)])
            await other.apply(batch)
        assert (await store.counters()).per_device == {"r1": 2}
        state = await store.device("r1")
        assert state is not None and state["x"] == 2.0

    async def test_a_replay_does_not_move_last_seen_back(self, store: RedisStore) -> None:
        await store.apply(Batch(readings=[Reading("r1", {"x": 1.0}, T0 + 100, T0 + 100)]))
        await store.apply(Batch(readings=[Reading("r1", {"x": 0.0}, T0, T0)]))
        assert await store.expire(T0 + 50) == []

    @pytest.mark.parametrize("seen", [T0 + 0.123456789, 1.0e16 + 2.0, 3.0e-5])
    async def test_last_seen_is_the_exact_receive_time(
        self, store: RedisStore, redis_server: harness.Service, seen: float
    ) -> None:
        # The second batch takes the merged path (the store knows the device), whose last-seen
        # score is written as text: it must name the very same double, however it is spelled.
        await store.apply(Batch(readings=[Reading("r1", {"x": 1.0}, T0, 0.0)]))
        await store.apply(Batch(readings=[Reading("r1", {"x": 2.0}, T0 + 1, seen)]))
        admin = Redis.from_url(url_of(redis_server))
        try:
            assert await admin.zscore(store._lastseen, "r1") == seen
        finally:
            await admin.aclose()

    async def test_counters_and_deadletters_accumulate_over_batches(
        self, store: RedisStore
    ) -> None:
        binary = Rejected("sensors/a/b\n", b"\n{\x00\xff\n", 5000, "payload_too_large", "é\n", T0)
        for n in range(3):
            await store.apply(
                Batch(raw=[RawMessage("test/hello", b"hi", T0)], rejected=[rejected(n), binary])
            )
        counters = await store.counters()
        assert (counters.raw, counters.rejected, counters.readings) == (3, 6, 0)
        assert counters.per_topic == {"test/hello": 3}
        assert counters.per_reason == {"invalid_json": 3, "payload_too_large": 3}
        assert await store.deadletters() == [binary, rejected(2), binary, rejected(1), binary]
        assert await store.deadletters(0) == []


def test_a_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redis.asyncio", None)
    monkeypatch.delitem(sys.modules, "iotstream.store.redis")
    with pytest.raises(ConfigError, match=r"iotstream\[redis\]"):
        importlib.import_module("iotstream.store.redis")


def test_a_bad_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        RedisStore("http://127.0.0.1:1")


async def test_an_unreachable_server_fails_start() -> None:
    store = RedisStore(f"redis://127.0.0.1:{harness.free_port()}/0")
    with pytest.raises(StoreError):
        await store.start()
    assert not store.health().ok


async def test_instances_on_one_prefix_share_state_and_changes(
    redis_server: harness.Service,
) -> None:
    prefix = unique_prefix()
    async with (
        RedisStore(url_of(redis_server), prefix=prefix) as one,
        RedisStore(url_of(redis_server), prefix=prefix) as two,
        RedisStore(url_of(redis_server), prefix=unique_prefix()) as elsewhere,
    ):
        changes = await one.apply(Batch(readings=[reading("r1", T0, x=1.0, y=2.0)]))
        assert await two.devices() == changes.updated
        await two.apply(Batch(readings=[reading("r1", T0 + 1, x=5.0)]))
        assert await one.device("r1") == await two.device("r1")
        assert (await one.counters()).per_device == {"r1": 2}
        assert await elsewhere.devices() == []

        async with one.subscribe() as at_one, two.subscribe() as at_two:
            sent = []
            for n in range(10):
                batch = Batch(readings=[reading("r1", T0 + 2 + n, n=n)])
                sent.append(await (one if n % 2 else two).apply(batch))
            for changes_iter in (at_one, at_two):
                got = [await asyncio.wait_for(anext(changes_iter), 10) for _ in sent]
                assert got == sent
                assert [change.updated[0]["n"] for change in got] == list(range(10))


async def test_a_replay_beyond_the_window_is_counted_but_reports_no_change(
    redis_server: harness.Service,
) -> None:
    batch = Batch(readings=[reading("r1", T0, x=1.0, y=2.0), reading("r2", T0, x=3.0)])
    async with RedisStore(url_of(redis_server), prefix=unique_prefix()) as store:
        assert len((await store.apply(batch)).updated) == 2
        assert not await store.apply(batch)
        assert (await store.counters()).per_device == {"r1": 2, "r2": 2}


async def test_a_device_another_instance_expired_starts_a_new_state(
    redis_server: harness.Service,
) -> None:
    """The instance that wrote the device last merges its next readings itself, but not
    against a state that another instance's expiry removed meanwhile."""
    prefix = unique_prefix()
    async with (
        RedisStore(url_of(redis_server), prefix=prefix, dedupe_window=DEDUPE_WINDOW) as one,
        RedisStore(url_of(redis_server), prefix=prefix, dedupe_window=DEDUPE_WINDOW) as two,
    ):
        await one.apply(Batch(readings=[reading("r1", T0, x=1.0, y=1.0)]))
        assert await two.expire(T0 + 50) == ["r1"]
        changes = await one.apply(Batch(readings=[reading("r1", T0 + 100, x=2.0)]))
        state = {"deviceId": "r1", "x": 2.0, "timestamp": T0 + 100, "receivedAt": T0 + 100.01}
        assert changes.updated == [state]
        assert await two.device("r1") == state
        assert (await two.counters()).per_device == {"r1": 2}


async def test_concurrent_writers_keep_the_newest_reading(redis_server: harness.Service) -> None:
    prefix = unique_prefix()
    devices = [f"r{d}" for d in range(5)]
    batches = [
        Batch(readings=[reading(device, T0 + n, x=float(n)) for device in devices])
        for n in range(60)
    ]
    random.Random(3).shuffle(batches)
    async with (
        RedisStore(url_of(redis_server), prefix=prefix) as one,
        RedisStore(url_of(redis_server), prefix=prefix) as two,
    ):
        writers = itertools.cycle((one, two))
        await asyncio.gather(*(next(writers).apply(batch) for batch in batches))
        for state in await one.devices():
            assert (state["x"], state["timestamp"]) == (59.0, T0 + 59)
        assert (await two.counters()).per_device == dict.fromkeys(devices, 60)


async def collect(changes: AsyncIterator[Changes], into: asyncio.Queue[Changes]) -> None:
    async for change in changes:
        into.put_nowait(change)


async def announce_until_received(
    store: RedisStore, received: asyncio.Queue[Changes], marker: str
) -> None:
    """Write readings of device ``marker`` until the subscriber passes one of its announcements
    on; resubscribing takes a moment, and what is announced meanwhile is lost to it."""
    async with asyncio.timeout(15):
        for attempt in itertools.count():
            await store.apply(Batch(readings=[reading(marker, T0 + attempt, x=float(attempt))]))
            try:
                async with asyncio.timeout(0.2):
                    while True:
                        change = await received.get()
                        if any(s["deviceId"] == marker for s in change.updated):
                            return
            except TimeoutError:
                continue


async def test_reconnects_and_resubscribes_after_a_restart(tmp_path: Path) -> None:
    with harness.start_redis(harness.free_port(), tmp_path) as server:
        async with RedisStore(url_of(server), prefix=unique_prefix()) as store:
            received: asyncio.Queue[Changes] = asyncio.Queue()
            async with store.subscribe() as changes:
                follower = asyncio.create_task(collect(changes, received))
                await announce_until_received(store, received, "before")

                server.stop()
                with pytest.raises(StoreError):
                    await store.apply(Batch(readings=[reading("r1", T0, x=1.0)]))
                health = store.health()
                assert not health.ok and "apply failed" in health.detail, health
                with pytest.raises(StoreError):
                    await store.expire(T0)

                server.restart()
                batch = Batch(readings=[reading("r1", T0, x=1.0)])
                assert [s["x"] for s in (await store.apply(batch)).updated] == [1.0]
                assert store.health().ok
                assert await store.device("r1") is not None
                await announce_until_received(store, received, "after")
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            assert store.health().ok


async def test_a_resubscribed_subscriber_catches_up(tmp_path: Path) -> None:
    with harness.start_redis(harness.free_port(), tmp_path) as server:
        async with RedisStore(url_of(server), prefix=unique_prefix()) as store:
            await store.apply(Batch(readings=[reading("r1", T0, x=1.0)]))
            async with store.subscribe() as changes:
                admin = Redis.from_url(url_of(server))
                try:
                    assert await admin.client_kill_filter(_type="pubsub") == 1
                finally:
                    await admin.aclose()
                # Nothing was published: what arrives is the catch-up after resubscribing.
                change = await asyncio.wait_for(anext(changes), 10)
                state = await store.device("r1")
                assert state is not None and change == Changes(updated=[state])


async def test_a_batch_of_command_moves_loads_the_script_a_restarted_redis_forgot(
    redis_server: harness.Service,
) -> None:
    async with RedisStore(url_of(redis_server), prefix=unique_prefix()) as store:
        commands = [await store.add_command(new_command(f"r{n}")) for n in range(3)]
        admin = Redis.from_url(url_of(redis_server))
        try:
            await admin.script_flush()
        finally:
            await admin.aclose()
        moved = await store.move_commands([CommandMove(c.id, SENT, T0 + 1) for c in commands])
        assert [(c.id, c.status) for c in moved] == [(c.id, SENT) for c in commands]
        assert await store.queued_devices() == set()
