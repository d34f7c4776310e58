"""Tracked commands under load: the round trip, and an offline queue drained on return.

``python -m bench --scenarios commands`` (or ``python -m bench.commands`` for this alone) starts
``iotstream run`` on free ports and ``devices`` MQTT 5 devices spread over ``workers``
processes. Each device says it is online (the retained presence topic, as the device SDK does),
acknowledges every command at once and reports it succeeded. Then:

1. Round trip: ``rate`` commands a second for ``seconds`` seconds, each to a random device with
   ``POST /api/devices/{id}/commands``; for each, the time from the request to its result
   being visible as a ``succeeded`` WebSocket ``command`` frame and in
   ``GET /api/commands/{id}`` (polled every ``POLL`` seconds), as p50/p99.
2. Offline queue: every device goes offline (retained ``offline``, as its will would say),
   ``queued`` commands are posted across them (each must answer ``queued``; their TTL,
   ``QUEUED_TTL``, outlasts the posting and the wait, or the bench stops), the devices
   return at once, and the bench times each command from that return (when the devices are
   told to reconnect) to its ``delivered`` (or later) frame: how many are delivered within
   ``TARGET_SECONDS``. Also from each device's own return (its ``online`` presence on the
   WebSocket), the state of every queued command at the end as the REST API says, and the
   WebSocket resyncs the watcher went through (each loses frames, so should be 0).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from .errors import BenchError
from .latency import Histogram
from .systems import EmbeddedServer

DEVICES = 1000
RATE = 100.0
SECONDS = 30.0
QUEUED = 10_000
WORKERS = 4
POLL = 0.005
"""Seconds between a REST poller's reads of one command."""
TARGET_SECONDS = 5.0
QUEUED_TTL = 600
"""Seconds the queued commands live: longer than posting them and waiting for them."""
POSTERS = 64
"""Requests in flight at once while posting the queued commands."""
DONE = ("succeeded", "failed", "rejected", "expired", "canceled")
PHASE_TIMEOUT = 120.0


def device_ids(count: int) -> list[str]:
    return [f"cmd-{n:05d}" for n in range(count)]


# -- the devices (worker processes) ---------------------------------------------------------


def _responders(
    port: int, ids: list[str], ready: Event, offline: Event, went_offline: Event, online: Event
) -> None:
    asyncio.run(_respond(port, ids, ready, offline, went_offline, online))


async def _respond(
    port: int, ids: list[str], ready: Event, offline: Event, went_offline: Event, online: Event
) -> None:
    from gmqtt import Client, Message
    from gmqtt.mqtt.constants import MQTTv50

    def make(device_id: str) -> Any:
        presence = f"sensors/{device_id}/presence"
        client = Client(
            f"bench-{device_id}", will_message=Message(presence, b"offline", qos=1, retain=True)
        )

        def on_message(client: Any, topic: str, payload: bytes, qos: int, props: Any) -> int:
            correlation = props.get("correlation_data")
            if correlation:
                command_id = correlation[0].decode()
                base = f"orin/{device_id}/command"
                ack = orjson.dumps({"id": command_id, "status": "delivered"})
                client.publish(f"{base}/ack", ack, qos=1)
                result = orjson.dumps({"id": command_id, "status": "succeeded", "result": None})
                client.publish(f"{base}/result", result, qos=1)
            return 0

        client.on_message = on_message
        return client

    async def connect(device_id: str) -> Any:
        client = make(device_id)
        await client.connect("127.0.0.1", port, version=MQTTv50)
        client.subscribe(f"orin/{device_id}/command", qos=1)
        client.publish(f"sensors/{device_id}/presence", b"online", qos=1, retain=True)
        return client

    async def connect_all() -> list[Any]:
        clients = []
        for first in range(0, len(ids), 50):  # in steps: the broker accepts a burst at a time
            clients += await asyncio.gather(*(connect(d) for d in ids[first : first + 50]))
        await asyncio.sleep(0.5)  # subscriptions in
        return clients

    async def wait(event: Event) -> None:
        await asyncio.to_thread(event.wait)

    clients = await connect_all()
    ready.set()
    await wait(offline)
    for client, device_id in zip(clients, ids, strict=True):
        client.publish(f"sensors/{device_id}/presence", b"offline", qos=1, retain=True)
    await asyncio.sleep(0.5)
    await asyncio.gather(*(client.disconnect() for client in clients))
    went_offline.set()
    await wait(online)
    clients = await connect_all()
    await asyncio.sleep(PHASE_TIMEOUT)  # until the bench stops this process


# -- the bench --------------------------------------------------------------------------------


class Watcher:
    """Every command frame of the WebSocket: when each command reached each state first."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reached: dict[str, dict[str, float]] = {}
        self.online_at: dict[str, float] = {}
        """Device id -> when its presence last turned ``online``."""
        self._presence: dict[str, str] = {}
        self.resyncs = 0
        """Snapshots after the first: the hub dropped this client's backlog, frames were lost."""
        self.ready = asyncio.Event()

    async def run(self) -> None:
        import websockets

        async with websockets.connect(self.url, max_size=None) as ws:
            async for text in ws:
                frame = orjson.loads(text)
                now = time.time()
                if frame.get("type") == "snapshot":
                    self.resyncs += self.ready.is_set()
                    self.ready.set()
                if frame.get("type") in ("snapshot", "update"):
                    for state in frame["devices"]:
                        presence = state.get("presence")
                        if presence is not None:
                            if presence == "online" != self._presence.get(state["deviceId"]):
                                self.online_at[state["deviceId"]] = now
                            self._presence[state["deviceId"]] = presence
                if frame.get("type") != "command":
                    continue
                for command in frame["commands"]:
                    self.reached.setdefault(command["id"], {}).setdefault(command["status"], now)

    def at(self, command_id: str, *statuses: str) -> float | None:
        times = [t for s, t in self.reached.get(command_id, {}).items() if s in statuses]
        return min(times) if times else None


def _histogram(seconds: list[float]) -> dict[str, Any]:
    histogram = Histogram()
    histogram.add(np.array(seconds, dtype=np.float64))
    return histogram.summary()


async def _round_trip(
    http: str, watcher: Watcher, ids: list[str], rate: float, seconds: float
) -> dict[str, Any]:
    import httpx

    rng = random.Random(13)
    posted: dict[str, float] = {}
    via_rest: dict[str, float] = {}
    failures: list[str] = []

    async with httpx.AsyncClient(base_url=http, timeout=30) as client:

        async def one(device_id: str) -> None:
            began = time.time()
            response = await client.post(
                f"/api/devices/{device_id}/commands", json={"command": "goto", "args": [1, 2]}
            )
            if response.status_code != 202:
                failures.append(f"{response.status_code} {response.text[:120]}")
                return
            command_id = response.json()["id"]
            posted[command_id] = began
            deadline = began + PHASE_TIMEOUT
            while time.time() < deadline:
                state = (await client.get(f"/api/commands/{command_id}")).json()
                if state["status"] in DONE:
                    via_rest[command_id] = time.time()
                    return
                await asyncio.sleep(POLL)

        tasks = []
        started = time.monotonic()
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(rng.choice(ids))))
        sent_for = time.monotonic() - started
        await asyncio.gather(*tasks)
    deadline = time.time() + 10

    def missing() -> bool:
        return any(watcher.at(c, "succeeded") is None for c in posted)

    # The watcher fills its table as frames come; polled, as the frames carry no wake-up.
    while time.time() < deadline and missing():  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    ws = [t - posted[c] for c in posted if (t := watcher.at(c, "succeeded")) is not None]
    rest = [via_rest[c] - posted[c] for c in via_rest]
    return {
        "commands": len(posted),
        "achievedRate": round(len(posted) / sent_for, 1) if sent_for else None,
        "refused": len(failures),
        "refusals": failures[:5],
        "websocket": _histogram(ws),
        "rest": _histogram(rest),
        "missingOnWebSocket": len(posted) - len(ws),
    }


async def _offline_queue(
    http: str,
    watcher: Watcher,
    ids: list[str],
    queued: int,
    events: dict[str, Event],
    gone: list[Event],
) -> dict[str, Any]:
    import httpx

    events["offline"].set()
    for event in gone:
        await asyncio.to_thread(event.wait, PHASE_TIMEOUT)
    async with httpx.AsyncClient(base_url=http, timeout=30) as client:
        # Until the server has seen every device go offline, a command would be sent.
        deadline = time.time() + PHASE_TIMEOUT
        wanted = set(ids)
        while True:
            states = (await client.get("/api/coordinates")).json()
            offline = {s["deviceId"] for s in states if s.get("presence") == "offline"}
            if wanted <= offline:
                break
            if time.time() > deadline:
                raise BenchError(f"{len(wanted - offline)} devices never showed as offline")
            await asyncio.sleep(0.2)
        made: dict[str, str] = {}
        """Command id -> its device."""
        statuses: dict[str, int] = {}
        limit = asyncio.Semaphore(POSTERS)

        async def post(device_id: str) -> None:
            async with limit:
                response = await client.post(
                    f"/api/devices/{device_id}/commands",
                    json={"command": "slam", "ttl": QUEUED_TTL},
                )
            body = response.json()
            status = body.get("status", str(response.status_code))
            statuses[status] = statuses.get(status, 0) + 1
            if response.status_code == 202:
                made[body["id"]] = device_id

        began = time.monotonic()
        await asyncio.gather(*(post(ids[n % len(ids)]) for n in range(queued)))
        posting = time.monotonic() - began
        if posting + PHASE_TIMEOUT >= QUEUED_TTL:
            # The first commands could expire while waiting: the figures would be of expiry.
            raise BenchError(f"posting took {posting:.0f} s, too long for a {QUEUED_TTL} s TTL")
        returned = time.time()
        events["online"].set()
        deadline = returned + PHASE_TIMEOUT
        while time.time() < deadline and any(  # noqa: ASYNC110
            watcher.at(c, "delivered", "succeeded") is None for c in made
        ):
            await asyncio.sleep(0.05)
        at = {c: t for c in made if (t := watcher.at(c, "delivered", "succeeded")) is not None}
        delays = [t - returned for t in at.values()]
        # From the device's own return as the WebSocket showed it: the server's part alone.
        own = [
            t - watcher.online_at[made[c]] for c, t in at.items() if made[c] in watcher.online_at
        ]
        back = [
            watcher.online_at[d] - returned for d in set(made.values()) if d in watcher.online_at
        ]
        ended = await _statuses(client, sorted(set(made.values())), set(made))
    return {
        "queued": len(made),
        "ttlSeconds": QUEUED_TTL,
        "statusesWhenPosted": statuses,
        "postingSeconds": round(posting, 2),
        "postedPerSecond": round(len(made) / posting, 1) if posting else None,
        "delivered": len(delays),
        "deliveredWithinTarget": sum(1 for d in delays if d <= TARGET_SECONDS),
        "targetSeconds": TARGET_SECONDS,
        "afterReturn": _histogram(delays),
        "afterOwnReturn": _histogram(own),
        "devicesBackWithinSeconds": round(max(back), 2) if back else None,
        "statusesAtEnd": ended,
        "watcherResyncs": watcher.resyncs,
    }


async def _statuses(client: Any, devices: list[str], commands: set[str]) -> dict[str, int]:
    """How many of ``commands`` are in each state now, as ``GET /api/devices/{id}/commands``
    says (the store's word, not the WebSocket's)."""
    counts: dict[str, int] = {}
    limit = asyncio.Semaphore(POSTERS)

    async def count(device_id: str) -> None:
        async with limit:
            response = await client.get(
                f"/api/devices/{device_id}/commands", params={"limit": 1000}
            )
        for command in response.json():
            if command["id"] in commands:
                counts[command["status"]] = counts.get(command["status"], 0) + 1

    await asyncio.gather(*(count(d) for d in devices))
    return dict(sorted(counts.items()))


async def _measure(
    system: EmbeddedServer,
    ids: list[str],
    rate: float,
    seconds: float,
    queued: int,
    events: dict[str, Event],
    gone: list[Event],
) -> dict[str, Any]:
    watcher = Watcher(system.ws_url)
    watching = asyncio.create_task(watcher.run())
    try:
        await asyncio.wait_for(watcher.ready.wait(), 30)
        round_trip = await _round_trip(system.http, watcher, ids, rate, seconds)
        offline = await _offline_queue(system.http, watcher, ids, queued, events, gone)
    finally:
        watching.cancel()
    return {"roundTrip": round_trip, "offlineQueue": offline}


def run_commands(
    workdir: Path,
    devices: int = DEVICES,
    rate: float = RATE,
    seconds: float = SECONDS,
    queued: int = QUEUED,
    workers: int = WORKERS,
) -> dict[str, Any]:
    """Both phases against a fresh embedded server; the figures as a dict."""
    ids = device_ids(devices)
    context = multiprocessing.get_context("spawn")
    events = {name: context.Event() for name in ("offline", "online")}
    readies = [context.Event() for _ in range(workers)]
    gone = [context.Event() for _ in range(workers)]
    server = EmbeddedServer(workdir / "server", ["--lake", "off"])
    server.start("cmd")
    processes = []
    try:
        for n in range(workers):
            process = context.Process(
                target=_responders,
                args=(
                    server.mqtt_port,
                    ids[n::workers],
                    readies[n],
                    events["offline"],
                    gone[n],
                    events["online"],
                ),
                daemon=True,
            )
            process.start()
            processes.append(process)
        for ready in readies:
            if not ready.wait(PHASE_TIMEOUT):
                raise BenchError("the devices did not all connect in time")
        figures = asyncio.run(_measure(server, ids, rate, seconds, queued, events, gone))
    finally:
        for process in processes:
            process.terminate()
            process.join(10)
        server.stop()
    return {
        "kind": "commands",
        "devices": devices,
        "rate": rate,
        "seconds": seconds,
        **figures,
    }


def summary_line(result: dict[str, Any]) -> str:
    trip, queue = result["roundTrip"], result["offlineQueue"]
    return (
        f"  round trip at {trip['achievedRate']}/s: WebSocket p50 {trip['websocket']['p50Ms']} ms "
        f"p99 {trip['websocket']['p99Ms']} ms, REST p50 {trip['rest']['p50Ms']} ms "
        f"p99 {trip['rest']['p99Ms']} ms; {queue['deliveredWithinTarget']:,} of "
        f"{queue['queued']:,} queued delivered within {queue['targetSeconds']:g} s of the return"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commands", description=__doc__)
    parser.add_argument("--devices", type=int, default=DEVICES)
    parser.add_argument("--rate", type=float, default=RATE, help="commands per second")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--queued", type=int, default=QUEUED)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="iotstream-bench-commands-") as scratch:
        result = run_commands(
            Path(scratch), args.devices, args.rate, args.seconds, args.queued, args.workers
        )
    text = orjson.dumps(result, option=orjson.OPT_INDENT_2).decode()
    if args.out is not None:
        args.out.write_text(text + "\n")
    print(text)
    print(summary_line(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
