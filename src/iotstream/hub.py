"""The WebSocket hub: store changes in, coalesced frames out to every client.

Frames (JSON text): ``{"type": "snapshot" | "update" | "removed", "seq": n,
"devices": [...]}``. ``seq`` grows by one per broadcast frame. A snapshot
carries the ``seq`` of the last broadcast it already contains, so a client's
next frame is ``seq + 1``. Each broadcast frame is encoded once and the same
string goes to every client.

Changes are coalesced per device: the first change after a quiet period goes
out at once, later ones at most every ``interval`` seconds. Each client has a
bounded queue; a client that falls behind loses its backlog and is sent a
fresh snapshot instead, so it never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .health import Health
from .lifecycle import Component, cancel_all, crashed, spawn
from .models import DEVICE_ID, Changes, DeviceState
from .store import Store

log = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]
Receive = Callable[[], Awaitable[str]]

HISTORY = 1024


def encode(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


class Subscriber:
    """One connected client: its queue of ``(seq, frame)``; seq ``None`` marks a control frame."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.queue: deque[tuple[int | None, str]] = deque()
        self.ready = asyncio.Event()
        self.needs_snapshot = True
        self.ready.set()
        self.resets = 0

    def offer(self, seq: int | None, frame: str) -> None:
        if len(self.queue) >= self.limit:
            # Stale backlog is worth less than a fresh snapshot.
            self.queue.clear()
            self.needs_snapshot = True
            self.resets += 1
        else:
            self.queue.append((seq, frame))
        self.ready.set()


class Hub(Component):
    def __init__(self, store: Store, *, interval: float = 0.02, client_buffer: int = 64) -> None:
        self.store = store
        self.interval = interval
        self.client_buffer = client_buffer
        self.seq = 0
        self.frames = 0
        self.subscribers: set[Subscriber] = set()
        self._history: deque[tuple[int, str]] = deque(maxlen=HISTORY)
        self._updated: dict[str, DeviceState] = {}
        self._removed: set[str] = set()
        self._last_flush = 0.0
        self._flush_scheduled = False
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    # -- broadcast side -------------------------------------------------

    async def _follow(self) -> None:
        async with self.store.subscribe() as changes:
            self._subscribed.set()
            async for change in changes:
                self._collect(change)

    def _collect(self, change: Changes) -> None:
        for state in change.updated:
            device_id = state[DEVICE_ID]
            self._updated[device_id] = state
            self._removed.discard(device_id)
        for device_id in change.removed:
            self._removed.add(device_id)
            self._updated.pop(device_id, None)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop = asyncio.get_running_loop()
            delay = self._last_flush + self.interval - loop.time()
            loop.call_later(max(delay, 0.0), self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self._last_flush = asyncio.get_running_loop().time()
        if self._removed:
            self._broadcast("removed", sorted(self._removed))
            self._removed = set()
        if self._updated:
            self._broadcast("update", list(self._updated.values()))
            self._updated = {}

    def _broadcast(self, kind: str, devices: list[Any]) -> None:
        self.seq += 1
        self.frames += 1
        frame = encode({"type": kind, "seq": self.seq, "devices": devices})
        self._history.append((self.seq, frame))
        for subscriber in self.subscribers:
            subscriber.offer(self.seq, frame)

    def _backlog(self, since: int) -> list[str] | None:
        """The frames broadcast after ``since``, or ``None`` when history does not reach back."""
        if since > self.seq:
            return None
        if since == self.seq:
            return []
        if not self._history or self._history[0][0] > since + 1:
            return None
        return [frame for seq, frame in self._history if seq > since]

    # -- per-client side ------------------------------------------------

    async def serve(self, send: Send, receive: Receive, since: int | None = None) -> None:
        """Feed one client until its connection ends (``receive`` or ``send`` raising).

        With ``since`` (the last seq the client saw), the frames it missed are
        replayed when the history reaches back that far; otherwise it starts
        with a snapshot.
        """
        subscriber = Subscriber(self.client_buffer)
        backlog = self._backlog(since) if since is not None else None
        if backlog is not None:
            subscriber.needs_snapshot = False
        # No await between taking the backlog and registering: no frame falls between.
        self.subscribers.add(subscriber)
        # The reader ends when the client leaves; that is the normal way out, not a failure.
        reader = asyncio.create_task(self._read(subscriber, receive), name="ws-reader")
        try:
            for frame in backlog or ():
                await send(frame)
            while not reader.done():
                waiter = asyncio.ensure_future(subscriber.ready.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                subscriber.ready.clear()
                if subscriber.needs_snapshot:
                    subscriber.needs_snapshot = False
                    await self._send_snapshot(subscriber, send)
                while subscriber.queue:
                    _, frame = subscriber.queue.popleft()
                    await send(frame)
        finally:
            self.subscribers.discard(subscriber)
            if reader.done() and not reader.cancelled():
                reader.exception()  # retrieved: the disconnect is expected
            await cancel_all([reader])

    async def _send_snapshot(self, subscriber: Subscriber, send: Send) -> None:
        seq = self.seq
        devices = await self.store.devices()
        # The snapshot already holds every change up to ``seq``; later frames stay queued.
        subscriber.queue = deque(
            item for item in subscriber.queue if item[0] is None or item[0] > seq
        )
        await send(encode({"type": "snapshot", "seq": seq, "devices": devices}))

    async def _read(self, subscriber: Subscriber, receive: Receive) -> None:
        while True:
            text = await receive()
            try:
                message = orjson.loads(text)
                kind = message.get("type") if isinstance(message, dict) else None
            except orjson.JSONDecodeError:
                kind = None
            if kind == "ping":
                subscriber.offer(None, encode({"type": "pong"}))
            elif kind == "snapshot":
                subscriber.needs_snapshot = True
                subscriber.ready.set()
            else:
                subscriber.offer(
                    None,
                    encode({"type": "error", "reason": 'expected {"type": "ping" | "snapshot"}'}),
                )

    # -- lifecycle ------------------------------------------------------

    async def start(self) -> None:
        self._tasks.append(spawn(self._follow(), "hub"))
        await asyncio.wait_for(self._subscribed.wait(), 10)

    async def stop(self) -> None:
        await cancel_all(self._tasks)

    def health(self) -> Health:
        stopped = crashed(self._tasks)
        if stopped:
            return Health(False, "hub stopped")
        return Health(True, f"{len(self.subscribers)} clients, {self.frames} frames sent")
