"""The WebSocket hub on the memory store: coalescing, encode-once, slow clients, resume."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from iotstream.hub import Hub, View
from iotstream.models import Batch, Reading
from iotstream.store import MemoryStore


class FakeClient:
    """A WebSocket peer: records what it is sent; ``gate`` cleared makes it stall."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.arrived = asyncio.Event()
        self.inbox: asyncio.Queue[str] = asyncio.Queue()

    async def send(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(text)
        self.arrived.set()

    async def receive(self) -> str:
        return await self.inbox.get()

    def frames(self) -> list[dict[str, Any]]:
        return [orjson.loads(t) for t in self.sent]

    async def wait_for(self, predicate: Any, timeout: float = 5.0) -> None:
        async def until() -> None:
            while not predicate(self.frames()):
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(until(), timeout)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    async with MemoryStore() as store:
        yield store


T0 = 1_800_000_000.0
_clock = itertools.count()


async def put(store: MemoryStore, device: str, seen: float | None = None, **fields: Any) -> None:
    """Write a reading the store takes as news (a later device time each call); ``seen`` is its
    receive time (default: its device time), which ``expire`` goes by."""
    at = T0 + next(_clock)
    await store.apply(Batch(readings=[Reading(device, fields, at, at if seen is None else seen)]))


async def connect(
    hub: Hub, client: FakeClient, since: int | None = None, view: View | None = None
) -> asyncio.Task[None]:
    task = asyncio.create_task(hub.serve(client.send, client.receive, since, view))
    await client.wait_for(lambda f: len(f) >= 1)
    return task


async def test_first_frame_is_a_snapshot_and_updates_follow_in_sequence(store: MemoryStore) -> None:
    async with Hub(store, interval=0.01) as hub:
        client = FakeClient()
        task = await connect(hub, client)
        for i in range(5):
            await put(store, "a", x=i)
            await asyncio.sleep(0.02)
        await client.wait_for(lambda f: f[-1].get("devices", [{}])[0].get("x") == 4)
        frames = client.frames()
        assert frames[0]["type"] == "snapshot"
        assert [f["seq"] for f in frames] == list(
            range(frames[0]["seq"], frames[0]["seq"] + len(frames))
        )
        task.cancel()


async def test_changes_within_a_tick_coalesce_into_one_frame(store: MemoryStore) -> None:
    async with Hub(store, interval=0.2) as hub:
        client = FakeClient()
        task = await connect(hub, client)
        await put(store, "warm-up")  # starts a tick: the next flush is 0.2 s later
        await client.wait_for(lambda f: len(f) == 2)
        for i in range(100):
            await put(store, "a", x=i)
            await put(store, f"b{i % 3}", x=i)
        await client.wait_for(lambda f: len(f) == 3)
        last = client.frames()[-1]
        assert last["type"] == "update"
        assert {d["deviceId"]: d["x"] for d in last["devices"]} == {
            "a": 99,
            "b0": 99,
            "b1": 97,
            "b2": 98,
        }
        task.cancel()


async def test_a_frame_is_encoded_once_for_every_client(store: MemoryStore) -> None:
    async with Hub(store, interval=0.01) as hub:
        clients = [FakeClient() for _ in range(3)]
        tasks = [await connect(hub, c) for c in clients]
        await put(store, "a", x=1)
        for c in clients:
            await c.wait_for(lambda f: len(f) == 2)
        first, *others = (c.sent[1] for c in clients)
        assert all(other is first for other in others)  # the same object, not equal copies
        for t in tasks:
            t.cancel()


async def test_a_stalled_client_gets_a_snapshot_and_never_delays_the_others(
    store: MemoryStore,
) -> None:
    async with Hub(store, interval=0.001, client_buffer=4) as hub:
        fast, slow = FakeClient(), FakeClient()
        tasks = [await connect(hub, fast), await connect(hub, slow)]
        slow.gate.clear()
        for i in range(50):
            await put(store, "a", x=i)
            await asyncio.sleep(0.003)
        await fast.wait_for(lambda f: f[-1].get("devices", [{}])[0].get("x") == 49)
        fast_seqs = [f["seq"] for f in fast.frames()]
        assert fast_seqs == list(range(fast_seqs[0], fast_seqs[0] + len(fast_seqs)))
        assert len(slow.sent) == 1  # still stalled on its second frame
        slow.gate.set()
        await slow.wait_for(lambda f: any(x["type"] == "snapshot" for x in f[1:]))
        assert len(slow.sent) < len(fast.sent)
        assert hub.subscribers and max(s.resets for s in hub.subscribers) >= 1
        for t in tasks:
            t.cancel()


async def test_resume_replays_history_or_falls_back_to_a_snapshot(store: MemoryStore) -> None:
    async with Hub(store, interval=0.001) as hub:
        for i in range(3):
            await put(store, "a", x=i)
            await asyncio.sleep(0.005)
        assert hub.seq == 3
        client = FakeClient()
        task = await connect(hub, client, since=1)
        await client.wait_for(lambda f: len(f) == 2)
        assert [f["seq"] for f in client.frames()] == [2, 3]
        task.cancel()
        stale = FakeClient()
        task = await connect(hub, stale, since=42)
        assert stale.frames()[0]["type"] == "snapshot"
        assert stale.frames()[0]["epoch"] == hub.epoch
        task.cancel()
        elsewhere = FakeClient()  # a seq from another server run or another api instance
        task = asyncio.create_task(hub.serve(elsewhere.send, elsewhere.receive, 1, None, "other"))
        await elsewhere.wait_for(lambda f: len(f) >= 1)
        assert elsewhere.frames()[0]["type"] == "snapshot"
        task.cancel()
        same = FakeClient()
        task = asyncio.create_task(hub.serve(same.send, same.receive, 1, None, hub.epoch))
        await same.wait_for(lambda f: len(f) == 2)
        assert [f["seq"] for f in same.frames()] == [2, 3]
        task.cancel()


async def test_removed_devices_are_announced(store: MemoryStore) -> None:
    async with Hub(store, interval=0.001) as hub:
        client = FakeClient()
        task = await connect(hub, client)
        await put(store, "a", x=1)
        assert await store.expire(T0 + 1e9) == ["a"]
        await client.wait_for(lambda f: f[-1]["type"] == "removed")
        assert client.frames()[-1]["devices"] == ["a"]
        task.cancel()


async def test_client_messages(store: MemoryStore) -> None:
    async with Hub(store) as hub:
        client = FakeClient()
        task = await connect(hub, client)
        client.inbox.put_nowait('{"type": "ping"}')
        client.inbox.put_nowait("gibberish")
        client.inbox.put_nowait('{"type": "snapshot"}')
        await client.wait_for(lambda f: len(f) == 4)
        assert sorted(f["type"] for f in client.frames()) == [
            "error",
            "pong",
            "snapshot",
            "snapshot",
        ]
        task.cancel()


async def test_a_view_narrows_frames_but_keeps_the_sequence(store: MemoryStore) -> None:
    async with Hub(store, interval=0.001) as hub:
        everything, some, area = FakeClient(), FakeClient(), FakeClient()
        tasks = [
            await connect(hub, everything),
            await connect(hub, some, view=View.parse(devices="a,b")),
            await connect(hub, area, view=View.parse(rect=[0, 0, 10, 10])),
        ]
        for state in ({"x": 1, "y": 1}, {"x": 50, "y": 1}):
            for device in ("a", "c"):
                # c is seen long ago, so that expiring silent devices removes it alone.
                await put(store, device, seen=T0 - 100 if device == "c" else None, **state)
                await asyncio.sleep(0.005)
        assert await store.expire(T0 - 50) == ["c"]
        for client in (everything, some, area):
            await client.wait_for(lambda f: f[-1]["type"] == "removed")

        def seen(client: FakeClient) -> list[tuple[str, int]]:
            return [
                (d["deviceId"], d["x"])
                for f in client.frames()
                if f["type"] == "update"
                for d in f["devices"]
            ]

        assert seen(everything) == [("a", 1), ("c", 1), ("a", 50), ("c", 50)]
        assert seen(some) == [("a", 1), ("a", 50)]
        assert seen(area) == [("a", 1), ("c", 1)]
        assert [f["devices"] for f in some.frames() if f["type"] == "removed"] == [[]]
        assert [f["devices"] for f in area.frames() if f["type"] == "removed"] == [["c"]]
        for client in (everything, some, area):
            seqs = [f["seq"] for f in client.frames()]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        for t in tasks:
            t.cancel()


async def test_subscribe_changes_the_view_with_a_fresh_snapshot(store: MemoryStore) -> None:
    for device, x in (("a", 1.0), ("b", 2.0)):
        await store.apply(Batch(readings=[Reading(device, {"x": x, "y": 0.0}, 1.0, 1.0)]))
    async with Hub(store) as hub:
        client = FakeClient()
        task = await connect(hub, client)
        client.inbox.put_nowait('{"type": "subscribe", "devices": ["b"]}')
        client.inbox.put_nowait('{"type": "subscribe", "rect": [5, 0]}')
        await client.wait_for(lambda f: len(f) == 3)
        first, narrowed, error = client.frames()
        assert {d["deviceId"] for d in first["devices"]} == {"a", "b"}
        assert narrowed["type"] == "snapshot" and [d["deviceId"] for d in narrowed["devices"]] == [
            "b"
        ]
        assert error["type"] == "error" and "rect" in error["reason"]
        task.cancel()


def test_view_parsing_reports_what_is_wrong() -> None:
    assert View.parse().everything
    assert View.parse(devices="a,b").devices == {"a", "b"}
    assert View.parse(rect="0,0,1,2").rect == (0.0, 0.0, 1.0, 2.0)
    for devices, rect in ((5, None), (None, "1,2,3"), (None, "2,0,1,1"), (None, ["a", 1, 2, 3])):
        with pytest.raises(ValueError):
            View.parse(devices, rect)


async def test_every_command_move_is_a_frame_of_its_own_devices(store: MemoryStore) -> None:
    from iotstream.models import CANCELED, QUEUED, SENT

    from .store.command_suite import new_command

    async with Hub(store, interval=0.001) as hub:
        everything, some = FakeClient(), FakeClient()
        tasks = [
            await connect(hub, everything),
            await connect(hub, some, view=View.parse(devices="a")),
        ]
        mine, other = new_command("a"), new_command("b")
        # Three moves of one command within a tick: none is coalesced away.
        await store.add_command(mine)
        await store.update_command(mine.id, SENT, mine.created_at + 1)
        await store.update_command(mine.id, CANCELED, mine.created_at + 2)
        await store.add_command(other)

        def moves(client: FakeClient) -> list[tuple[str, str]]:
            return [
                (c["deviceId"], c["status"])
                for f in client.frames()
                if f["type"] == "command"
                for c in f["commands"]
            ]

        await everything.wait_for(lambda f: len(moves(everything)) == 4)
        await some.wait_for(lambda f: f[-1]["type"] == "command" and f[-1]["seq"] == hub.seq)
        assert moves(everything) == [("a", QUEUED), ("a", SENT), ("a", CANCELED), ("b", QUEUED)]
        assert moves(some) == [("a", QUEUED), ("a", SENT), ("a", CANCELED)]
        for client in (everything, some):
            frames = [f for f in client.frames() if f["type"] == "command"]
            assert all(f["devices"] == [] and "fingerprint" not in f["commands"][0] for f in frames)
            seqs = [f["seq"] for f in client.frames()]
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
        for t in tasks:
            t.cancel()
