"""WebSocket watchers: clients of ``/coordinates`` in their own processes that measure what
they receive.

For each device state in each update frame, a watcher takes the latency from the state's
``sent`` field (set by the generator) to the moment the frame's bytes arrived. It checks that
frame ``seq`` grows by one (a gap or a reset to a snapshot is a loss) and that no device's
``seq`` goes back; at the end the bench compares each device's last ``seq`` with the last one
sent.

The hub sends the same text for the same frame ``seq`` to every client that watches
everything, so a watcher process parses each frame once, whichever of its clients got it
first, and the others only note when it arrived (and that its length matches): hundreds of
clients cost the machine little more than their sockets. The clients speak just enough
WebSocket for that, and offer ``permessage-deflate`` as browsers do; the server decides.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import re
import time
import zlib
from array import array
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, cast
from urllib.parse import urlsplit

import numpy as np
import orjson

from .errors import BenchError
from .latency import LATENCY_PARTS, Histogram
from .workers import Worker, WorkerGroup, next_message, run_worker

CONNECT_TIMEOUT = 30.0
QUIET = 0.5
"""After the load, a watcher stops once none of its clients got a frame for this long."""
_HEADER = re.compile(rb'"type":\s*"(\w+)".*?"seq":\s*(\d+)', re.DOTALL)
_HEADER_SPAN = 64
_DEFLATE_TAIL = b"\x00\x00\xff\xff"


@dataclass
class _Frame:
    size: int
    devices: list[str]
    seqs: list[int]
    sents: array[float]
    received: array[float]
    """Each state's ``receivedAt`` (NaN without one): when the server's MQTT client took the
    reading in."""


@dataclass
class FrameTable:
    """The update frames this process received, each parsed once."""

    frames: dict[int, _Frame] = field(default_factory=dict)
    size_mismatches: int = 0

    def add(self, seq: int, text: bytes, document: Any = None) -> None:
        known = self.frames.get(seq)
        if known is not None:
            if known.size != len(text):
                self.size_mismatches += 1
            return
        if document is None:
            document = orjson.loads(text)
        frame = _Frame(len(text), [], [], array("d"), array("d"))
        for state in document.get("devices", ()):
            # Only the generator's devices carry seq and sent (the bench's probe does not).
            if "sent" in state and "seq" in state:
                frame.devices.append(state["deviceId"])
                frame.seqs.append(state["seq"])
                frame.sents.append(state["sent"])
                received = state.get("receivedAt")
                frame.received.append(received if type(received) is float else math.nan)
        self.frames[seq] = frame


def _header(text: bytes) -> tuple[str, int | None, Any]:
    """The frame's type and seq, read from its first bytes when they hold them."""
    match = _HEADER.search(text, 0, _HEADER_SPAN)
    if match is not None:
        return match.group(1).decode(), int(match.group(2)), None
    document = orjson.loads(text)
    seq = document.get("seq")
    return str(document.get("type")), seq if isinstance(seq, int) else None, document


def _masked(opcode: int, payload: bytes) -> bytes:
    """A client frame (clients must mask); only short control frames are ever sent."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + body


class WatchClient(asyncio.Protocol):
    def __init__(self, table: FrameTable, host: str, port: int, path: str) -> None:
        self.table = table
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        ).encode()
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.inflater: Any = None
        self.fragments: list[bytes] = []
        self.compressed = False
        self.snapshot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        # What it saw: update frame seqs with their arrival times, and what went wrong.
        self.seqs = array("q")
        self.times = array("d")
        self.last_seq: int | None = None
        self.last_at = 0.0
        self.snapshots = 0
        self.missed = 0
        self.gaps = 0
        self.bytes = 0

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without deriving from it.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.snapshot.done():
            self.snapshot.set_exception(BenchError(f"WebSocket closed before a snapshot: {exc}"))

    def data_received(self, data: bytes) -> None:
        at = time.time()
        self.bytes += len(data)
        buffer = self.buffer
        buffer += data
        if not self.upgraded and not self._upgrade():
            return
        offset = 0
        end = len(buffer)
        while end - offset >= 2:
            first, second = buffer[offset], buffer[offset + 1]
            length = second & 0x7F
            start = offset + 2
            if length == 126:
                if end - start < 2:
                    break
                length = int.from_bytes(buffer[start : start + 2], "big")
                start += 2
            elif length == 127:
                if end - start < 8:
                    break
                length = int.from_bytes(buffer[start : start + 8], "big")
                start += 8
            if end - start < length:
                break
            self._frame(first, bytes(buffer[start : start + length]), at)
            offset = start + length
        del buffer[:offset]

    # -- WebSocket ---------------------------------------------------------

    def _upgrade(self) -> bool:
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        head = bytes(self.buffer[:head_end]).decode("latin-1").lower()
        if not head.startswith("http/1.1 101"):
            self._fail(f"no WebSocket upgrade: {head.splitlines()[0]}")
            return False
        for line in head.split("\r\n"):
            if line.startswith("sec-websocket-extensions:") and "permessage-deflate" in line:
                self.inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        del self.buffer[: head_end + 4]
        self.upgraded = True
        return True

    def _fail(self, reason: str) -> None:
        if not self.snapshot.done():
            self.snapshot.set_exception(BenchError(reason))
        if self.transport is not None:
            self.transport.close()

    def _frame(self, first: int, payload: bytes, at: float) -> None:
        opcode = first & 0x0F
        if opcode in (0, 1, 2):
            if opcode:
                self.compressed = bool(first & 0x40)
            self.fragments.append(payload)
            if first & 0x80:
                message = b"".join(self.fragments)
                self.fragments = []
                if self.compressed:
                    message = self.inflater.decompress(message + _DEFLATE_TAIL)
                self._message(message, at)
        elif opcode == 9 and self.transport is not None:
            self.transport.write(_masked(0xA, payload))
        elif opcode == 8:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked(0x8, (1000).to_bytes(2, "big")))
            self.transport.close()

    # -- iotstream frames --------------------------------------------------

    def _message(self, text: bytes, at: float) -> None:
        kind, seq, document = _header(text)
        if seq is None:  # pong or error: not part of the stream
            return
        self.last_at = at
        if kind == "snapshot":
            self.snapshots += 1
            if self.last_seq is not None and seq > self.last_seq:
                # A reset: the frames up to the snapshot were dropped from this client's queue.
                self.missed += seq - self.last_seq
            self.last_seq = seq
            if not self.snapshot.done():
                self.snapshot.set_result(None)
            return
        if self.last_seq is not None and seq != self.last_seq + 1:
            self.gaps += 1
            self.missed += max(0, seq - self.last_seq - 1)
        self.last_seq = seq
        if kind == "update":
            self.seqs.append(seq)
            self.times.append(at)
            self.table.add(seq, text, document)


def _analyse(
    table: FrameTable, clients: list[WatchClient], window: tuple[float, float]
) -> dict[str, Any]:
    order = sorted(table.frames)
    frames = [table.frames[s] for s in order]
    last: dict[str, int] = {}
    regressions = duplicates = 0
    for frame in frames:
        for device, seq in zip(frame.devices, frame.seqs, strict=True):
            previous = last.get(device)
            if previous is None or seq > previous:
                last[device] = seq
            elif seq == previous:
                duplicates += 1
            else:
                regressions += 1
    histogram, to_server, in_server = Histogram(), Histogram(), Histogram()
    if frames:
        position = {seq: i for i, seq in enumerate(order)}
        sizes = np.array([len(f.sents) for f in frames], dtype=np.int64)
        sents = np.concatenate([np.frombuffer(f.sents, dtype=np.float64) for f in frames])
        received = np.concatenate([np.frombuffer(f.received, dtype=np.float64) for f in frames])
        in_window = (sents >= window[0]) & (sents <= window[1])
        for client in clients:
            if not client.seqs:
                continue
            arrived = np.full(len(order), np.nan)
            where = np.fromiter((position[s] for s in client.seqs), np.int64, len(client.seqs))
            arrived[where] = np.frombuffer(client.times, dtype=np.float64)
            arrivals = np.repeat(arrived, sizes)
            latency = arrivals - sents
            counted = in_window & ~np.isnan(latency)
            histogram.add(latency[counted])
            after = arrivals - received
            in_server.add(after[counted & ~np.isnan(after)])
        # A state's way to the server is the same for every client: counted once a process.
        before = received - sents
        to_server.add(before[in_window & ~np.isnan(before)])
    newest = max((c.last_seq for c in clients if c.last_seq is not None), default=None)
    return {
        "clients": len(clients),
        "deflate": any(c.inflater is not None for c in clients),
        "frames": len(frames),
        "states": sum(len(f.seqs) for f in frames),
        "framesReceived": sum(len(c.seqs) for c in clients),
        "bytes": sum(c.bytes for c in clients),
        "missedFrames": sum(c.missed for c in clients),
        "gaps": sum(c.gaps for c in clients),
        "resets": sum(max(0, c.snapshots - 1) for c in clients),
        "sizeMismatches": table.size_mismatches,
        "seqRegressions": regressions,
        "duplicateStates": duplicates,
        "clientsBehind": sum(1 for c in clients if c.last_seq != newest),
        "clientsClosed": sum(1 for c in clients if c.closed),
        "lastSeq": last,
        "latency": histogram,
        LATENCY_PARTS[0]: to_server,
        LATENCY_PARTS[1]: in_server,
    }


async def _watch(pipe: Connection, url: str, count: int, patience: float) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    table = FrameTable()
    loop = asyncio.get_running_loop()
    clients: list[WatchClient] = []
    for _ in range(count):
        _, client = await asyncio.wait_for(
            loop.create_connection(
                lambda: WatchClient(table, host, port, parts.path or "/"), host, port
            ),
            CONNECT_TIMEOUT,
        )
        clients.append(client)
    await asyncio.wait_for(asyncio.gather(*(c.snapshot for c in clients)), CONNECT_TIMEOUT)
    pipe.send(("ready", {"clients": len(clients)}))
    _, window, stop_timeout = await next_message(pipe, patience)
    # Frames still in flight belong to the run: stop once every client has been quiet.
    deadline = time.monotonic() + stop_timeout
    while time.monotonic() < deadline:
        newest = max(c.last_at for c in clients)
        if time.time() - newest >= QUIET:
            break
        await asyncio.sleep(0.05)
    for client in clients:
        client.close()
    report = _analyse(table, clients, window)
    report["quietAfter"] = round(max(0.0, max(c.last_at for c in clients) - window[1]), 3)
    pipe.send(("report", report))


def _watcher_main(pipe: Connection, url: str, count: int, patience: float) -> None:
    run_worker(pipe, _watch(pipe, url, count, patience))


class Watchers(WorkerGroup):
    """``clients`` WebSocket clients of ``url`` spread over ``processes`` processes.

    ``patience`` bounds how long they wait for the stop order."""

    def __init__(self, url: str, clients: int, processes: int, patience: float) -> None:
        processes = max(1, min(processes, clients))
        shares = [
            clients // processes + (1 if p < clients % processes else 0) for p in range(processes)
        ]
        super().__init__(
            [
                Worker(f"watcher-{p}", _watcher_main, url, share, patience)
                for p, share in enumerate(shares)
            ]
        )
        self.clients = clients

    def finish(self, window: tuple[float, float], timeout: float) -> list[dict[str, Any]]:
        """Stop once the stream went quiet (at most ``timeout`` s) and collect the reports;
        latency counts the states sent within ``window`` (wall-clock seconds)."""
        self.tell("stop", window, timeout)
        return self.reports(timeout + 60)
