"""The distributed pipeline under faults at load (``python -m bench --distributed --scenarios
faults``): how long each fault takes to heal by itself, and what it loses.

The whole stack runs on its own engines, configured as the deployment runs them: Mosquitto
with persistence (sessions and queued messages on disk, saved on stop and every few seconds)
and Redis with its append-only file (docker-compose.yml); Kafka keeps its log anyway. Then,
one fault at a time, each in a phase of its own:

1. ``devices`` devices of the phase (a device-id prefix of their own, so each phase is
   counted on its own) publish at ``rate`` Hz each with QoS 1, every message carrying its
   ``seq`` (0, 1, 2, ... per device), over persistent sessions (clean session off) that
   reconnect by themselves and send again, flagged DUP, whatever the broker has not
   acknowledged. A message is *accepted* once its PUBACK came back; while the broker is
   unreachable a device keeps what falls due and sends it on reconnecting, as a device
   library's offline queue does. A message the broker never acknowledged is not the
   pipeline's to lose.
2. Once the pipeline is steady (the recovery condition below holds) and ``before`` seconds of
   load went by, the fault: an engine restarted (SIGTERM, then started again on the same
   ports and data: Mosquitto, Kafka, Redis), or a role killed with SIGKILL and a replacement
   started at once with the same options, as a supervisor would (bridge, processor,
   archiver, api).
3. The pipeline is watched (``RECOVERY``, defined in ``DEFINITION``) until it recovered,
   then the load goes on for ``after`` seconds and stops; the bench waits for the broker's
   last acknowledgements and for the latest state to settle, and counts the devices whose
   final ``seq`` in ``GET /api/coordinates`` is short of the last one accepted: *lost
   (state)*.

After the last phase the bench waits for the archiver to have committed everything on Kafka,
stops the roles and counts each phase's devices in the lake's readings table
(``bench.lake.count_lake``): a ``seq`` accepted but not there is *lost (lake)*, one there
twice *duplicated (lake)*. QoS 1 is at-least-once: a message the broker or the bridge sends
again after a restart can be archived twice; nothing may be missing.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import os
import time
import urllib.error
import uuid
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

from harness.engines import MOSQUITTO_AUTOSAVE_SECONDS
from iotstream.lifecycle import cancel_all

from .errors import BenchError
from .generator import CONNECT_TIMEOUT, HOST, PAYLOAD, _str16, _varint, device_ids
from .systems import DistributedServer, Engines, get_json
from .workers import Worker, WorkerGroup, next_message, run_worker

LIMIT = 30.0
"""Seconds within which every fault must have healed."""
FRESH = 1.0
"""The latest state may lag the devices by this much (seconds) and count as recovered."""
PROCESSOR_LAG = 1.0
ARCHIVER_LAG = 3.0
"""Bounds of the consumer groups' lags, in seconds of load: records on Kafka that the
processors (the archivers) have not committed yet. The archiver commits after its lake
commit, about once a second."""
OBSERVE_EVERY = 0.2
STEADY_TIMEOUT = 90.0
"""Seconds a phase may take to become steady before its fault."""
SETTLE_TIMEOUT = 60.0
"""Seconds the bench waits for the last acknowledgements, the final state and the archiver."""
ACK_TIMEOUT = 30.0
DEFINITION = (
    "Recovery time: from the fault (the moment the engine was stopped, or the role killed) "
    "to the first observation, every {every:g} s, at which (1) the latest state read from "
    "`GET /api/coordinates` holds, for every device, a reading the device produced after the "
    "fault and every reading it produced more than {fresh:g} s before the observation (the "
    "state lags the devices by at most {fresh:g} s; a device at {rate:g} Hz makes this at "
    "least {floor:.1f} s), and (2) the processors' and the archivers' Kafka consumer groups "
    "have each committed, on every partition, everything the topic held at the fault, and are "
    "at most {plag:g} s (processors) and {alag:g} s (archivers, which commit after their lake "
    "commit, about once a second) of load behind its end. "
    "*Healthy again*: the first observation at which every role answers `GET /api/health` "
    "with 200. Restart time: how long the engine took to stop and be ready again (for a "
    "role, to be killed and its replacement spawned)."
)


@dataclass(frozen=True)
class Fault:
    name: str
    title: str
    engine: bool
    """An engine restarted (else a role killed and replaced)."""


FAULTS = (
    Fault("mosquitto", "restart Mosquitto", True),
    Fault("kafka", "restart Kafka", True),
    Fault("redis", "restart Redis", True),
    Fault("bridge", "kill -9 the bridge", False),
    Fault("processor", "kill -9 the processor", False),
    Fault("archiver", "kill -9 the archiver", False),
    Fault("api", "kill -9 the api", False),
)
FAULT_NAMES = tuple(fault.name for fault in FAULTS)


@dataclass(frozen=True)
class Plan:
    """What the scenario runs: ``devices`` x ``rate`` Hz of QoS 1 load per phase, ``before``
    seconds of it before the fault and ``after`` seconds after recovery."""

    devices: int = 1000
    rate: float = 5.0
    before: float = 5.0
    after: float = 5.0
    faults: tuple[str, ...] = FAULT_NAMES
    patience: float = 90.0
    """Seconds to watch for a recovery at all (recovered means within ``LIMIT``)."""

    @property
    def messages_per_second(self) -> float:
        return self.devices * self.rate


FULL = Plan()
QUICK = Plan(devices=100, rate=10.0, before=1.0, after=1.0)


# -- the devices: QoS 1 over persistent sessions (worker processes) -------------------------

CONNECTIONS = 4
PUBLISHER_RATE = 10_000
"""Messages per second given to one publisher process (QoS 1, acknowledgements read)."""
TICK = 0.005
MAX_IN_FLIGHT = 20_000
"""Unacknowledged messages per connection; more wait in its queue."""
MAX_BUFFERED = 4 << 20
"""Bytes a connection's socket may hold unsent before it waits."""
RECONNECT_DELAY = 0.1
MAX_RECONNECT_DELAY = 1.0
PUBACK, CONNACK = 0x40, 0x20
DUP = 0x08


class _Link(asyncio.Protocol):
    """One TCP connection of a session: what the broker answers goes to the session."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.rest = b""
        loop = asyncio.get_running_loop()
        self.connack: asyncio.Future[bytes] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        self.session.lost(self)

    def data_received(self, data: bytes) -> None:
        data = self.rest + data
        pos = 0
        # The broker sends this client CONNACK, PUBACKs (and PINGRESP): 2-byte bodies at most.
        while len(data) - pos >= 2:
            length = data[pos + 1]
            if length & 0x80 or len(data) - pos < 2 + length:
                break
            kind, body = data[pos] & 0xF0, data[pos + 2 : pos + 2 + length]
            if kind == PUBACK:
                self.session.acknowledged((body[0] << 8) | body[1])
            elif kind == CONNACK and not self.connack.done():
                self.connack.set_result(body)
            pos += 2 + length
        self.rest = data[pos:]


@dataclass
class _Message:
    device: int
    seq: int
    head: bytes
    """The topic, length-prefixed."""
    payload: bytes


class _Session:
    """One MQTT 3.1.1 client with a persistent session that publishes QoS 1."""

    def __init__(self, port: int, client_id: str) -> None:
        self.port = port
        self.client_id = client_id
        self.queue: collections.deque[_Message] = collections.deque()
        self.in_flight: dict[int, tuple[_Message, bytes]] = {}
        """Packet id -> the message and its PUBLISH packet, in the order sent."""
        self.acked: collections.Counter[int] = collections.Counter()
        self.link: _Link | None = None
        self.reconnects = 0
        self.resent = 0
        self._next_id = 0
        self._closing = False
        self._keeper: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self.in_flight)

    async def start(self) -> None:
        await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT)
        self._keeper = asyncio.create_task(self._keep_connected())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, link = await loop.create_connection(lambda: _Link(self), HOST, self.port)
        assert link.transport is not None
        variable = b"\x00\x04MQTT\x04\x00\x00\x00"  # 3.1.1, clean session off, keep-alive 0
        payload = _str16(self.client_id.encode())
        link.transport.write(b"\x10" + _varint(len(variable) + len(payload)) + variable + payload)
        connack = await asyncio.wait_for(asyncio.shield(link.connack), CONNECT_TIMEOUT)
        if connack[1] != 0:
            link.transport.close()
            raise BenchError(f"broker refused {self.client_id}: CONNACK {connack.hex()}")
        # What the broker did not acknowledge goes again, first, in its order, flagged DUP.
        again = [bytes([packet[0] | DUP]) + packet[1:] for _, packet in self.in_flight.values()]
        if again:
            self.resent += len(again)
            link.transport.write(b"".join(again))
        self.link = link

    async def _keep_connected(self) -> None:
        delay = RECONNECT_DELAY
        while not self._closing:
            link = self.link
            if link is not None:
                await link.closed
                delay = RECONNECT_DELAY
                continue
            try:
                await self._connect()
                self.reconnects += 1
            except (OSError, TimeoutError, BenchError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RECONNECT_DELAY)

    def lost(self, link: _Link) -> None:
        if self.link is link:
            self.link = None

    def acknowledged(self, packet_id: int) -> None:
        sent = self.in_flight.pop(packet_id, None)
        if sent is not None:
            self.acked[sent[0].device] += 1

    def _packet_id(self) -> int:
        while True:
            self._next_id = self._next_id % 65535 + 1
            if self._next_id not in self.in_flight:
                return self._next_id

    def pump(self) -> None:
        """Send what waits, as far as the connection and the in-flight window allow."""
        link = self.link
        if link is None or link.transport is None or link.transport.is_closing():
            return
        transport = link.transport
        if transport.get_write_buffer_size() > MAX_BUFFERED:
            return
        packets = []
        while self.queue and len(self.in_flight) < MAX_IN_FLIGHT:
            message = self.queue.popleft()
            packet_id = self._packet_id()
            size = len(message.head) + 2 + len(message.payload)
            packet = (
                b"\x32"
                + _varint(size)
                + message.head
                + packet_id.to_bytes(2, "big")
                + message.payload
            )
            self.in_flight[packet_id] = (message, packet)
            packets.append(packet)
        if packets:
            transport.write(b"".join(packets))

    def unacknowledged(self) -> dict[int, int]:
        """Device -> its smallest seq the broker has not acknowledged."""
        first: dict[int, int] = {}
        waiting = [m for m, _ in self.in_flight.values()] + list(self.queue)
        for message in waiting:
            if message.seq < first.get(message.device, message.seq + 1):
                first[message.device] = message.seq
        return first

    async def close(self) -> None:
        self._closing = True
        if self._keeper is not None:
            await cancel_all([self._keeper])
        link = self.link
        if link is not None and link.transport is not None:
            link.transport.write(b"\xe0\x00")  # DISCONNECT; the session stays with the broker
            link.transport.close()


async def _devices(pipe: Connection, port: int, name: str, devices: list[str], rate: float) -> None:
    count = len(devices)
    heads = [_str16(f"sensors/{d}/coordinates".encode()) for d in devices]
    sessions = [_Session(port, f"{name}-{c}") for c in range(min(CONNECTIONS, count))]
    for session in sessions:
        await session.start()
    pipe.send(("ready", {"connections": len(sessions), "devices": count}))
    _, start_wall = await next_message(pipe, CONNECT_TIMEOUT)
    start = time.monotonic() + (start_wall - time.time())
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    total_rate = count * rate
    made = 0
    max_lag = 0.0
    while not pipe.poll():
        now = time.monotonic()
        due = int((now - start) * total_rate) + 1
        if due > made:
            max_lag = max(max_lag, now - (start + made / total_rate))
            wall = time.time()
            for m in range(made, due):
                d, seq = m % count, m // count
                x, y = (d * 7 + seq) % 600 / 10, (d * 3 + seq) % 400 / 10
                message = _Message(d, seq, heads[d], PAYLOAD % (x, y, wall, seq, wall))
                sessions[d % len(sessions)].queue.append(message)
            made = due
        for session in sessions:
            session.pump()
        await asyncio.sleep(max(0.0, TICK - (time.monotonic() - now)))
    pipe.recv()  # the stop
    stopped = time.monotonic()
    deadline = stopped + ACK_TIMEOUT
    while any(s.pending for s in sessions) and time.monotonic() < deadline:
        for session in sessions:
            session.pump()
        await asyncio.sleep(TICK)
    acked_after = time.monotonic() - stopped
    first_unacked: dict[int, int] = {}
    for session in sessions:
        first_unacked.update(session.unacknowledged())
        await session.close()
    sent = {d: made // count + (1 if d < made % count else 0) for d in range(count)}
    # The last seq of each device the broker accepted with all before it.
    accepted = {devices[d]: first_unacked.get(d, n) - 1 for d, n in sent.items()}
    pipe.send(
        (
            "report",
            {
                "sent": made,
                "acknowledged": sum(sum(s.acked.values()) for s in sessions),
                "unacknowledged": sum(s.pending for s in sessions),
                "reconnects": sum(s.reconnects for s in sessions),
                "resent": sum(s.resent for s in sessions),
                "maxLagMs": round(max_lag * 1000, 1),
                "ackWaitSeconds": round(acked_after, 3),
                "sentPerDevice": {devices[d]: n for d, n in sent.items()},
                "lastAccepted": accepted,
            },
        )
    )


def _devices_main(pipe: Connection, port: int, name: str, devices: list[str], rate: float) -> None:
    run_worker(pipe, _devices(pipe, port, name, devices, rate))


class Devices(WorkerGroup):
    """The QoS 1 devices of one phase, in as many processes as the rate needs."""

    def __init__(self, port: int, prefix: str, plan: Plan) -> None:
        ids = device_ids(prefix, plan.devices)
        processes = max(1, min(plan.devices, math.ceil(plan.messages_per_second / PUBLISHER_RATE)))
        self.shares = [ids[p::processes] for p in range(processes)]
        super().__init__(
            [
                Worker(f"devices-{p}", _devices_main, port, f"{prefix}-pub{p}", share, plan.rate)
                for p, share in enumerate(self.shares)
            ]
        )
        self.rate = plan.rate
        self.start_wall = 0.0

    def go(self, at: float) -> None:
        self.start_wall = at
        self.tell("go", at)

    def due(self, at: float) -> dict[str, int]:
        """Each device's newest seq due at wall time ``at`` (-1: none yet)."""
        elapsed = (at - self.start_wall) * self.rate
        return {
            device: max(-1, math.floor(elapsed - j / len(share)))
            for share in self.shares
            for j, device in enumerate(share)
        }

    def finish(self) -> dict[str, Any]:
        """Stop the load; what was sent and accepted, once the broker acknowledged it all
        (or ``ACK_TIMEOUT`` passed)."""
        self.tell("stop", None)
        reports = self.reports(ACK_TIMEOUT + 30)
        summary: dict[str, Any] = {
            key: sum(r[key] for r in reports)
            for key in ("sent", "acknowledged", "unacknowledged", "reconnects", "resent")
        }
        summary["maxLagMs"] = max(r["maxLagMs"] for r in reports)
        summary["ackWaitSeconds"] = max(r["ackWaitSeconds"] for r in reports)
        summary["sentPerDevice"] = {d: n for r in reports for d, n in r["sentPerDevice"].items()}
        summary["lastAccepted"] = {d: s for r in reports for d, s in r["lastAccepted"].items()}
        return summary


# -- watching the pipeline ---------------------------------------------------------------


@dataclass(frozen=True)
class Offsets:
    ends: dict[tuple[str, int], int]
    """Per partition, the offset the next record will get."""
    committed: dict[str, dict[tuple[str, int], int]]
    """Per role, per partition, where its consumer group goes on from."""

    def behind(self, role: str) -> int:
        """Records on the topic that ``role``'s group has not committed."""
        return sum(end - self.committed[role][key] for key, end in self.ends.items())

    def passed(self, role: str, ends: dict[tuple[str, int], int]) -> bool:
        """Whether ``role``'s group committed, on every partition, up to ``ends``."""
        return all(self.committed[role][key] >= end for key, end in ends.items())


class KafkaLags:
    """How far each consumer group is behind the end of the topic, read from Kafka the way
    a monitoring tool does (committed offsets against high watermarks)."""

    def __init__(self, bootstrap: str, topic: str, groups: dict[str, str]) -> None:
        from confluent_kafka import Consumer

        quiet = logging.getLogger("bench.faults.kafka")
        quiet.addHandler(logging.NullHandler())
        quiet.propagate = False
        self.topics = [topic, f"{topic}.deadletter"]
        self.consumers = {
            role: Consumer(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": group,
                    "enable.auto.commit": False,
                    "logger": quiet,
                    "error_cb": lambda error: None,
                }
            )
            for role, group in groups.items()
        }
        self._partitions: list[Any] = []

    def _topic_partitions(self, consumer: Any) -> list[Any]:
        from confluent_kafka import TopicPartition

        if not self._partitions:
            found = []
            for topic in self.topics:
                metadata = consumer.list_topics(topic, timeout=2)
                found += [TopicPartition(topic, p) for p in metadata.topics[topic].partitions]
            self._partitions = found
        return self._partitions

    def read(self) -> Offsets | None:
        """Where the topic ends and each group is; ``None`` when Kafka does not answer."""
        from confluent_kafka import KafkaException

        try:
            any_consumer = next(iter(self.consumers.values()))
            partitions = self._topic_partitions(any_consumer)
            marks = {
                (p.topic, p.partition): any_consumer.get_watermark_offsets(
                    p, timeout=2, cached=False
                )
                for p in partitions
            }
            committed = {
                # A group that committed nothing on a partition starts at its beginning.
                role: {
                    (p.topic, p.partition): max(p.offset, marks[p.topic, p.partition][0])
                    for p in consumer.committed(partitions, timeout=2)
                }
                for role, consumer in self.consumers.items()
            }
        except (KafkaException, RuntimeError, KeyError):
            return None
        return Offsets({key: high for key, (_, high) in marks.items()}, committed)

    def close(self) -> None:
        for consumer in self.consumers.values():
            consumer.close()


@dataclass
class Observation:
    at: float
    states: dict[str, int] | None
    """Each device's seq in the latest state (``None``: the API did not answer)."""
    offsets: Offsets | None
    healthy: bool


class Watch:
    """Reads the pipeline from the outside: the latest state over REST, the consumer groups'
    lags from Kafka, every role's health."""

    def __init__(self, system: DistributedServer, lags: KafkaLags, plan: Plan) -> None:
        self.system = system
        self.lags = lags
        self.bounds = {
            "processor": PROCESSOR_LAG * plan.messages_per_second,
            "archiver": ARCHIVER_LAG * plan.messages_per_second,
        }

    def states(self, devices: set[str]) -> dict[str, int] | None:
        try:
            states = get_json(self.system.http + "/api/coordinates", timeout=5)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return {s["deviceId"]: s.get("seq", -1) for s in states if s["deviceId"] in devices}

    def observe(self, devices: set[str]) -> Observation:
        at = time.time()
        states = self.states(devices)
        offsets = self.lags.read()
        healthy = all(self.system.healthy(name) for name in self.system.health_urls)
        return Observation(at, states, offsets, healthy)

    def recovered(self, seen: Observation, devices: Devices, fault: Mark | None) -> bool:
        """The recovery condition (``DEFINITION``) after ``fault``; with ``None``, whether
        the pipeline is steady."""
        return all(self.parts(seen, devices, fault).values())

    def parts(self, seen: Observation, devices: Devices, fault: Mark | None) -> dict[str, bool]:
        """Each part of the recovery condition: the latest state, each consumer group."""
        parts = {"state": False, **dict.fromkeys(self.bounds, False)}
        offsets = seen.offsets
        if offsets is not None:
            for role, bound in self.bounds.items():
                parts[role] = offsets.behind(role) <= bound and (
                    fault is None or offsets.passed(role, fault.ends)
                )
        if seen.states is not None:
            wanted = devices.due(seen.at - FRESH)
            if fault is not None:
                after = devices.due(fault.at)
                wanted = {device: max(seq, after[device] + 1) for device, seq in wanted.items()}
            parts["state"] = all(seen.states.get(d, -1) >= seq for d, seq in wanted.items())
        return parts

    def mark(self) -> Mark:
        """The moment of a fault, and where the topic ended then."""
        deadline = time.monotonic() + STEADY_TIMEOUT
        while (offsets := self.lags.read()) is None:
            if time.monotonic() > deadline:
                raise BenchError("Kafka did not say where its topic ends")
            time.sleep(OBSERVE_EVERY)
        return Mark(time.time(), offsets.ends)


@dataclass(frozen=True)
class Mark:
    at: float
    ends: dict[tuple[str, int], int]


# -- the scenario ----------------------------------------------------------------------------


def _inject(system: DistributedServer, fault: Fault) -> None:
    if fault.engine:
        system.engines.started[fault.name].restart()
    else:
        system.kill(fault.name)
        system.replace(fault.name)


def _every(period: float, since: float) -> None:
    """Sleep until ``period`` seconds after ``since`` (monotonic)."""
    time.sleep(max(0.0, since + period - time.monotonic()))


def _settled_state(watch: Watch, accepted: dict[str, int]) -> tuple[int, float | None]:
    """Wait until every device's seq in the latest state reached its last accepted one; the
    devices still short of it, and how long the wait took (``None``: it never got there)."""
    began = time.monotonic()
    devices = set(accepted)
    short = len(devices)
    while time.monotonic() - began < SETTLE_TIMEOUT:
        states = watch.states(devices)
        if states is not None:
            short = sum(1 for d, seq in accepted.items() if states.get(d, -1) < seq)
            if not short:
                return 0, round(time.monotonic() - began, 3)
        time.sleep(OBSERVE_EVERY)
    return short, None


def _phase(system: DistributedServer, watch: Watch, fault: Fault, plan: Plan) -> dict[str, Any]:
    """One fault under load: steady, fault, watched until it recovered, then counted."""
    prefix = f"faults-{fault.name}-{uuid.uuid4().hex[:6]}"
    with Devices(system.mqtt_port, prefix, plan) as devices:
        devices.start(CONNECT_TIMEOUT)
        ids = {device for share in devices.shares for device in share}
        start = time.time() + 0.3
        devices.go(start)
        deadline = time.monotonic() + STEADY_TIMEOUT
        while True:
            tick = time.monotonic()
            seen = watch.observe(ids)
            if seen.healthy and watch.recovered(seen, devices, None):
                break
            if tick > deadline:
                raise BenchError(f"{fault.title}: the pipeline was not steady before the fault")
            _every(OBSERVE_EVERY, tick)
        time.sleep(max(0.0, start + plan.before - time.time()))
        mark = watch.mark()
        at = mark.at
        _inject(system, fault)
        restart = time.time() - at
        recovery: float | None = None
        healthy: float | None = None
        # When each part of the condition first held, whatever the others did.
        first: dict[str, float | None] = dict.fromkeys(["state", *watch.bounds])
        observations = 0
        while (recovery is None or healthy is None) and time.time() - at < plan.patience:
            tick = time.monotonic()
            seen = watch.observe(ids)
            observations += 1
            parts = watch.parts(seen, devices, mark)
            for part, held in parts.items():
                if held and first[part] is None:
                    first[part] = round(seen.at - at, 2)
            if recovery is None and all(parts.values()):
                recovery = seen.at - at
            if healthy is None and seen.healthy:
                healthy = seen.at - at
            _every(OBSERVE_EVERY, tick)
        time.sleep(plan.after)
        generator = devices.finish()
    accepted = generator.pop("lastAccepted")
    sent = generator.pop("sentPerDevice")
    lost, settled = _settled_state(watch, accepted)
    return {
        "fault": fault.name,
        "title": fault.title,
        "prefix": prefix,
        "restartSeconds": round(restart, 2),
        "recoverySeconds": None if recovery is None else round(recovery, 2),
        "healthySeconds": None if healthy is None else round(healthy, 2),
        "recovered": recovery is not None and recovery <= LIMIT,
        "firstHeldSeconds": first,
        "observations": observations,
        "generator": generator,
        "stateSettleSeconds": settled,
        "lost": {"state": lost},
        # Counted in the lake once every phase ran; kept out of results.json.
        "accepted": {device: seq + 1 for device, seq in accepted.items()},
        "devicesSent": sum(sent.values()),
    }


def _archived(lags: KafkaLags) -> bool:
    """Wait until the archiver committed everything on Kafka (after its lake commit)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        offsets = lags.read()
        if offsets is not None and offsets.behind("archiver") == 0:
            return True
        time.sleep(OBSERVE_EVERY)
    return False


def run_faults(workdir: Path, plan: Plan = FULL) -> dict[str, Any]:
    """Every fault of ``plan`` in turn on one distributed stack of its own; see the module."""
    from iotstream.archiver import GROUP

    from .lake import count_lake

    began = time.time()
    load = [round(x, 2) for x in os.getloadavg()]
    faults = [f for f in FAULTS if f.name in plan.faults]
    phases: list[dict[str, Any]] = []
    prefix = f"faults-{uuid.uuid4().hex[:6]}"
    with Engines(workdir / "engines", persistent=True) as engines:
        # Info: each role logs what it lost and when it got it back.
        system = DistributedServer(workdir / "system", engines, log_level="info", instance_ids=True)
        with system:
            system.start(prefix)
            lags = KafkaLags(
                engines.started["kafka"].address,
                system.kafka_topic,
                {"processor": system.kafka_group, "archiver": GROUP},
            )
            try:
                watch = Watch(system, lags, plan)
                for fault in faults:
                    try:
                        phases.append(_phase(system, watch, fault, plan))
                    except BenchError as exc:
                        # The stack did not come back: what follows would measure that.
                        phases.append(
                            {"fault": fault.name, "title": fault.title, "error": str(exc)}
                        )
                        break
                caught_up = _archived(lags)
            finally:
                lags.close()
    # The roles have stopped; the archiver wrote what it held. Count each phase's devices.
    lake = workdir / "system" / "data" / "lake"
    for phase in phases:
        if "accepted" in phase:
            counted = count_lake(lake, phase.pop("accepted"))
            phase["lake"] = counted
            phase["lost"]["lake"] = counted["missing"]
            phase["duplicated"] = {"lake": counted["duplicates"]}
    done = [p for p in phases if "error" not in p]
    return {
        "kind": "faults",
        "title": "faults under load",
        "mode": "distributed",
        "devices": plan.devices,
        "rateHz": plan.rate,
        "targetRate": round(plan.messages_per_second),
        "beforeSeconds": plan.before,
        "afterSeconds": plan.after,
        "limitSeconds": LIMIT,
        "definition": definition(plan),
        "engines": "Mosquitto with persistence (autosave every "
        f"{MOSQUITTO_AUTOSAVE_SECONDS} s and on stop), Redis with its append-only file "
        "(fsync every second), Kafka (KRaft, one node); the processor and the archiver with a "
        "`--kafka-instance-id` each (static membership), kept by their replacements",
        "loadAverageBefore": load,
        "archiverCaughtUp": caught_up,
        "faults": phases,
        "allRecovered": len(done) == len(faults) and all(p["recovered"] for p in done),
        "lossFree": len(done) == len(faults)
        and not any(p["lost"]["state"] or p["lost"]["lake"] for p in done),
        "seconds": round(time.time() - began, 1),
    }


def definition(plan: Plan) -> str:
    return DEFINITION.format(
        every=OBSERVE_EVERY,
        fresh=FRESH,
        rate=plan.rate,
        floor=1 / plan.rate,
        plag=PROCESSOR_LAG,
        alag=ARCHIVER_LAG,
    )


# -- what the bench prints and writes -------------------------------------------------------


def _seconds(value: float | None) -> str:
    return "not within the watch" if value is None else f"{value:.1f}"


def summary_line(result: dict[str, Any]) -> str:
    parts = []
    for phase in result["faults"]:
        if "error" in phase:
            parts.append(f"{phase['fault']} failed")
            continue
        lake = phase["lake"]
        parts.append(
            f"{phase['fault']} {_seconds(phase['recoverySeconds'])} s "
            f"(lost {phase['lost']['state']}/{lake['missing']}, dup {lake['duplicates']})"
        )
    return (
        f"  at {result['targetRate']:,} msg/s: " + "; ".join(parts) + f"; all recovered within "
        f"{result['limitSeconds']:g} s: {result['allRecovered']}, loss-free: {result['lossFree']}"
    )


def markdown_lines(result: dict[str, Any] | None) -> list[str]:
    """The faults section of results.md (nothing when the scenario did not run)."""
    if result is None:
        return []
    lines = ["## Faults under load (distributed)", ""]
    if "error" in result:
        return [*lines, f"Failed: {result['error']}", ""]
    lines += [
        f"- load: {result['devices']:,} devices x {result['rateHz']:g} Hz = "
        f"{result['targetRate']:,} msg/s, QoS 1 over persistent sessions; "
        f"{result['beforeSeconds']:g} s of it before each fault, {result['afterSeconds']:g} s "
        f"after recovery; load average before: {result['loadAverageBefore']}",
        f"- engines: {result['engines']}",
        f"- {result['definition']}",
        "- lost (state): devices whose final seq in the latest state is short of the last one "
        "the broker acknowledged; lost / duplicated (lake): acknowledged readings missing from "
        "the readings table / there more than once, once the archiver caught up.",
        "",
        "| fault | recovery s | healthy again s | restart s | lost (state) | lost (lake) "
        "| duplicated (lake) | sent | unacknowledged | device reconnects |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for phase in result["faults"]:
        if "error" in phase:
            lines.append(f"| {phase['title']} | failed: {phase['error']} |" + " |" * 8)
            continue
        recovery = _seconds(phase["recoverySeconds"])
        if phase["recoverySeconds"] is not None and not phase["recovered"]:
            recovery += f" (over {result['limitSeconds']:g})"
        generator = phase["generator"]
        lines.append(
            f"| {phase['title']} | {recovery} | {_seconds(phase['healthySeconds'])} "
            f"| {phase['restartSeconds']:.1f} | {phase['lost']['state']} "
            f"| {phase['lost']['lake']} | {phase['duplicated']['lake']} "
            f"| {generator['sent']:,} | {generator['unacknowledged']:,} "
            f"| {generator['reconnects']} |"
        )
    return [*lines, ""]
