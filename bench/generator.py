"""The load generator: N simulated devices at R Hz each, spread over processes and connections.

Every message is QoS 0 on ``sensors/{id}/coordinates`` in the reference format plus two
fields the bench reads back: ``seq`` (0, 1, 2, ... per device) and ``sent`` (epoch seconds
when it was written to the socket; ``timestamp`` carries the same value)::

    {"x": 12.3, "y": 4.5, "timestamp": 1795400000.123456, "seq": 41, "sent": 1795400000.123456}

The publishers speak just enough MQTT 3.1.1 (CONNECT, then PUBLISH QoS 0) to write each
tick's messages with one ``write`` per connection: a client library's one syscall per
message would make the generator the bottleneck on a small machine. Each process paces its
share on a schedule (message ``m`` is due at ``start + m / rate``), sends whatever is due
every ``TICK``, waits for the socket to drain (so a broker that cannot keep up slows the
generator down instead of piling up bytes in memory), and reports what it really sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import struct
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from .errors import BenchError
from .workers import Worker, WorkerGroup, next_message, run_worker

HOST = "127.0.0.1"
TICK = 0.005
PUBLISHER_RATE = 40_000
"""Messages per second given to one publisher process, well below what one can send."""
CONNECTIONS = 4
"""MQTT connections per publisher process."""
SHORTFALL = 0.97
"""Below this fraction of the target rate the generator fell short."""
CONNECT_TIMEOUT = 30.0
PAYLOAD = b'{"x":%.2f,"y":%.2f,"timestamp":%.6f,"seq":%d,"sent":%.6f}'
_PARTS = b'{"x":%s,"y":%s,"timestamp":%s,"seq":%d,"sent":%s}'
_TENTHS = [b"%.2f" % (tenths / 10) for tenths in range(600)]


def payload(d: int, seq: int, wall: bytes) -> bytes:
    """Device ``d``'s message ``seq``, sent at ``wall`` (``b"%.6f" % time.time()``): the
    bytes ``PAYLOAD`` formats from ``x`` = ((7d + seq) mod 600) / 10 and ``y`` = ((3d + seq)
    mod 400) / 10, made of parts formatted ahead (tenths, and the time once a batch).
    Formatting every number of every message, and each packet's length, took the publishers
    2.9 µs a message; this and ``_VARINTS`` take 0.8: CPU that the systems measured on the
    same cores get instead."""
    return _PARTS % (_TENTHS[(d * 7 + seq) % 600], _TENTHS[(d * 3 + seq) % 400], wall, seq, wall)


def device_ids(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i:05d}" for i in range(count)]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        value, byte = divmod(value, 128)
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _str16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


_VARINTS = [_varint(size) for size in range(1 << 14)]
"""The remaining lengths that fit two bytes."""


def publish_packet(head: bytes, payload: bytes) -> bytes:
    """An MQTT 3.1.1 PUBLISH, QoS 0, no retain; ``head`` is the length-prefixed topic."""
    size = len(head) + len(payload)
    return b"\x30" + (_VARINTS[size] if size < 1 << 14 else _varint(size)) + head + payload


class Publisher:
    """One MQTT connection that only publishes QoS 0 (keep-alive off, so no pings to answer)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int, client_id: str) -> Publisher:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(HOST, port), CONNECT_TIMEOUT
        )
        variable = b"\x00\x04MQTT\x04\x02\x00\x00"  # MQTT 3.1.1, clean session, keep-alive 0
        payload = _str16(client_id.encode())
        writer.write(b"\x10" + _varint(len(variable) + len(payload)) + variable + payload)
        connack = await asyncio.wait_for(reader.readexactly(4), CONNECT_TIMEOUT)
        if connack[0] != 0x20 or connack[3] != 0:
            writer.close()
            raise BenchError(f"broker refused {client_id}: CONNACK {connack.hex()}")
        return cls(reader, writer)

    async def close(self) -> None:
        self.writer.write(b"\xe0\x00")  # DISCONNECT: the broker drops the session quietly
        self.writer.close()
        with contextlib.suppress(TimeoutError, OSError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


async def publish_once(port: int, topic: str, payload: bytes) -> None:
    """One message on its own connection (the bench's pipeline probe)."""
    publisher = await Publisher.connect(port, f"bench-probe-{time.monotonic_ns()}")
    publisher.writer.write(publish_packet(_str16(topic.encode()), payload))
    await publisher.writer.drain()
    await publisher.close()


@dataclass(frozen=True)
class Load:
    """``devices`` devices named ``{prefix}-00000``... each publishing ``rate`` times a second
    for ``duration`` seconds."""

    prefix: str
    devices: int
    rate: float
    duration: float

    @property
    def messages_per_second(self) -> float:
        return self.devices * self.rate

    @property
    def per_device(self) -> int:
        return max(1, round(self.rate * self.duration))

    @property
    def processes(self) -> int:
        return max(1, min(self.devices, math.ceil(self.messages_per_second / PUBLISHER_RATE)))


async def _publish(pipe: Connection, port: int, name: str, devices: list[str], load: Load) -> None:
    links = [
        await Publisher.connect(port, f"{name}-{c}") for c in range(min(CONNECTIONS, len(devices)))
    ]
    heads = [_str16(f"sensors/{d}/coordinates".encode()) for d in devices]
    count = len(devices)
    total = count * load.per_device
    rate = count * load.rate
    pipe.send(("ready", {"connections": len(links), "devices": count}))
    _, start_wall = await next_message(pipe, CONNECT_TIMEOUT)
    start = time.monotonic() + (start_wall - time.time())
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    # A generator that cannot keep up stops at twice the planned time and says so.
    give_up = start + 2 * load.duration + 5
    sent = 0
    max_lag = 0.0
    last_write = start
    while sent < total:
        now = time.monotonic()
        if now > give_up:
            break
        due = min(total, int((now - start) * rate) + 1)
        if due > sent:
            max_lag = max(max_lag, now - (start + sent / rate))
            wall = b"%.6f" % time.time()
            batches: list[list[bytes]] = [[] for _ in links]
            for m in range(sent, due):
                d, seq = m % count, m // count
                batches[d % len(links)].append(publish_packet(heads[d], payload(d, seq, wall)))
            for link, batch in zip(links, batches, strict=True):
                if batch:
                    link.writer.write(b"".join(batch))
            await asyncio.gather(*(link.writer.drain() for link in links))
            sent = due
            last_write = time.monotonic()
        await asyncio.sleep(max(0.0, TICK - (time.monotonic() - now)))
    for link in links:
        await link.close()
    per_device = {d: sent // count + (1 if i < sent % count else 0) for i, d in enumerate(devices)}
    pipe.send(
        (
            "report",
            {
                "planned": total,
                "sent": sent,
                "seconds": last_write - start,
                "maxLagMs": round(max_lag * 1000, 1),
                "perDevice": per_device,
            },
        )
    )


def _publisher_main(pipe: Connection, port: int, name: str, devices: list[str], load: Load) -> None:
    run_worker(pipe, _publish(pipe, port, name, devices, load))


class Generator(WorkerGroup):
    """The publisher processes of one load; ``go(at)`` starts them all at wall time ``at``."""

    def __init__(self, port: int, load: Load) -> None:
        ids = device_ids(load.prefix, load.devices)
        processes = load.processes
        super().__init__(
            [
                Worker(
                    f"publisher-{p}",
                    _publisher_main,
                    port,
                    f"{load.prefix}-pub{p}",
                    ids[p::processes],
                    load,
                )
                for p in range(processes)
            ]
        )
        self.load = load
        self.ready: list[Any] = []

    def start(self, timeout: float = CONNECT_TIMEOUT) -> list[Any]:
        self.ready = super().start(timeout)
        return self.ready

    def go(self, at: float) -> None:
        self.tell("go", at)

    def finish(self) -> tuple[dict[str, Any], dict[str, int]]:
        """What the processes sent, in total and per device (messages, so the last seq is one
        less); waits as long as a generator that fell behind may take."""
        reports = self.reports(timeout=2 * self.load.duration + 30)
        sent = sum(r["sent"] for r in reports)
        seconds = max(r["seconds"] for r in reports)
        target = self.load.messages_per_second
        achieved = sent / seconds if seconds > 0 else 0.0
        planned = sum(r["planned"] for r in reports)
        per_device: dict[str, int] = {}
        for r in reports:
            per_device.update(r["perDevice"])
        summary = {
            "processes": len(reports),
            "connections": sum(r["connections"] for r in self.ready),
            "targetRate": round(target),
            "achievedRate": round(achieved),
            "planned": planned,
            "sent": sent,
            "seconds": round(seconds, 3),
            "maxLagMs": max(r["maxLagMs"] for r in reports),
            "fellShort": sent < planned or achieved < SHORTFALL * target,
        }
        return summary, per_device
