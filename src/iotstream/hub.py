"""The WebSocket hub: store changes in, coalesced frames out to every client.

Frames (JSON text): ``{"type": "snapshot" | "update" | "removed", "seq": n,
"devices": [...]}``, and ``{"type": "command", "seq": n, "devices": [], "commands": [...]}``
with every move of a tracked command (``Command.to_json``) in the order they happened, none
coalesced away. ``seq`` grows by one per broadcast frame. A snapshot
carries the ``seq`` of the last broadcast it already contains, so a client's
next frame is ``seq + 1``. Each broadcast frame is encoded once and the same
string goes to every client.

A client may narrow what it sees to a set of devices or a rectangle of the
plane (a ``View``); it still gets every frame, so ``seq`` stays contiguous, but
with only the devices in its view, encoded for it alone.

Changes are coalesced per device: the first change after a quiet period goes
out at once, later ones at most every ``interval`` seconds. Each client has a
bounded queue; a client that falls behind loses its backlog and is sent a
fresh snapshot instead, so it never delays the others.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from .health import Health
from .lifecycle import Component, cancel_all, crashed, spawn
from .metrics import WEBSOCKET_FRAMES, WEBSOCKET_RESETS
from .models import DEVICE_ID, Changes, DeviceState
from .store import Store

log = logging.getLogger(__name__)

Send = Callable[[str], Awaitable[None]]
Receive = Callable[[], Awaitable[str]]

HISTORY = 1024
CLIENT_MESSAGES = (
    'expected {"type": "ping"}, {"type": "snapshot"} or '
    '{"type": "subscribe", "devices": [...], "rect": [x_min, y_min, x_max, y_max]}'
)


def encode(frame: dict[str, Any]) -> str:
    return orjson.dumps(frame).decode()


@dataclass(frozen=True, slots=True)
class View:
    """The part of the fleet a client watches: some devices, a rectangle, or (empty) all."""

    devices: frozenset[str] | None = None
    rect: tuple[float, float, float, float] | None = None
    """``(x_min, y_min, x_max, y_max)`` in metres."""

    @classmethod
    def parse(cls, devices: Any = None, rect: Any = None) -> View:
        """A view from a subscribe message or query parameters; ``ValueError`` says why not."""
        if isinstance(devices, str):
            devices = [d for d in devices.split(",") if d]
        if isinstance(rect, str):
            rect = rect.split(",")
        if devices is not None and (
            not isinstance(devices, list) or not all(isinstance(d, str) for d in devices)
        ):
            raise ValueError("'devices' must be a list of device ids")
        if rect is not None:
            try:
                x0, y0, x1, y1 = (float(v) for v in rect)
            except (TypeError, ValueError):
                raise ValueError("'rect' must be [x_min, y_min, x_max, y_max]") from None
            if not (x0 <= x1 and y0 <= y1):
                raise ValueError("'rect' must have x_min <= x_max and y_min <= y_max")
            rect = (x0, y0, x1, y1)
        return cls(frozenset(devices) if devices is not None else None, rect)

    @property
    def everything(self) -> bool:
        return self.devices is None and self.rect is None

    def _shows(self, state: DeviceState) -> bool:
        if self.devices is not None and state[DEVICE_ID] not in self.devices:
            return False
        if self.rect is not None:
            x, y = state.get("x"), state.get("y")
            if x is None or y is None:
                return False
            x0, y0, x1, y1 = self.rect
            return bool(x0 <= x <= x1 and y0 <= y <= y1)
        return True

    def narrow(self, kind: str, devices: list[Any]) -> list[Any]:
        if kind == COMMAND:
            # Commands have no place on the plane: a view narrows them by device only.
            if self.devices is None:
                return devices
            return [c for c in devices if c[DEVICE_ID] in self.devices]
        if kind == "removed":
            # A device that left may have been inside the rectangle: always say so.
            return [d for d in devices if self.devices is None or d in self.devices]
        return [d for d in devices if self._shows(d)]


COMMAND = "command"


def _frame(kind: str, seq: int, items: list[Any]) -> dict[str, Any]:
    if kind == COMMAND:
        # An empty ``devices`` too: clients that read it from every frame keep working.
        return {"type": kind, "seq": seq, "devices": [], "commands": items}
    return {"type": kind, "seq": seq, "devices": items}


def _for_view(view: View | None, seq: int, kind: str, devices: list[Any], frame: str) -> str:
    """The shared frame, or one cut down and encoded for a client's view."""
    if view is None:
        return frame
    return encode(_frame(kind, seq, view.narrow(kind, devices)))


class Subscriber:
    """One connected client: its queue of ``(seq, frame)``; seq ``None`` marks a control frame."""

    def __init__(self, limit: int, view: View | None = None) -> None:
        self.limit = limit
        self.view = view if view is not None and not view.everything else None
        self.queue: deque[tuple[int | None, str]] = deque()
        self.ready = asyncio.Event()
        self.needs_snapshot = True
        self.ready.set()
        self.closed = False
        self.resets = 0

    def close(self) -> None:
        self.closed = True
        self.ready.set()

    def offer(self, seq: int | None, frame: str) -> None:
        if len(self.queue) >= self.limit:
            # Stale backlog is worth less than a fresh snapshot.
            self.queue.clear()
            self.needs_snapshot = True
            self.resets += 1
            WEBSOCKET_RESETS.inc()
        else:
            self.queue.append((seq, frame))
        self.ready.set()


class Hub(Component):
    def __init__(self, store: Store, *, interval: float = 0.01, client_buffer: int = 64) -> None:
        self.store = store
        self.interval = interval
        self.client_buffer = client_buffer
        # Names this hub's run: a seq from another run or another api instance means nothing here.
        self.epoch = secrets.token_hex(6)
        self.seq = 0
        self.frames = 0
        self.subscribers: set[Subscriber] = set()
        self._history: deque[tuple[int, str, list[Any], str]] = deque(maxlen=HISTORY)
        self._updated: dict[str, DeviceState] = {}
        self._removed: set[str] = set()
        self._commands: list[dict[str, Any]] = []
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
        for command in change.commands:
            shown = dict(command)
            shown.pop("fingerprint", None)  # the store's, to compare repeated requests
            self._commands.append(shown)
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
        if self._commands:
            self._broadcast(COMMAND, self._commands)
            self._commands = []

    def _broadcast(self, kind: str, devices: list[Any]) -> None:
        self.seq += 1
        self.frames += 1
        frame = encode(_frame(kind, self.seq, devices))
        self._history.append((self.seq, kind, devices, frame))
        for subscriber in self.subscribers:
            subscriber.offer(self.seq, _for_view(subscriber.view, self.seq, kind, devices, frame))
        WEBSOCKET_FRAMES.inc(len(self.subscribers))

    def _backlog(self, since: int, view: View | None) -> list[str] | None:
        """The frames broadcast after ``since``, or ``None`` when history does not reach back."""
        if since > self.seq:
            return None
        if since == self.seq:
            return []
        if not self._history or self._history[0][0] > since + 1:
            return None
        return [
            _for_view(view, seq, kind, devices, frame)
            for seq, kind, devices, frame in self._history
            if seq > since
        ]

    # -- per-client side ------------------------------------------------

    async def serve(
        self,
        send: Send,
        receive: Receive,
        since: int | None = None,
        view: View | None = None,
        epoch: str | None = None,
    ) -> None:
        """Feed one client until its connection ends (``receive`` or ``send`` raising).

        With ``since`` (the last seq the client saw) and the ``epoch`` of the snapshot it
        started from, the frames it missed are replayed when the history reaches back that
        far; otherwise it starts with a snapshot.
        """
        subscriber = Subscriber(self.client_buffer, view)
        resumable = since is not None and epoch in (None, self.epoch)
        backlog = self._backlog(since, subscriber.view) if resumable and since is not None else None
        if backlog is not None:
            subscriber.needs_snapshot = False
        # No await between taking the backlog and registering: no frame falls between.
        self.subscribers.add(subscriber)
        # The reader ends when the client leaves; that is the normal way out, not a failure.
        reader = asyncio.create_task(self._read(subscriber, receive), name="ws-reader")
        # Waking the sender through the subscriber's one event keeps a frame's cost per client
        # to a wake-up and a send; no future per frame to watch the reader too.
        reader.add_done_callback(lambda _: subscriber.close())
        try:
            for frame in backlog or ():
                await send(frame)
            while True:
                await subscriber.ready.wait()
                subscriber.ready.clear()
                if subscriber.closed:
                    break
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
        if subscriber.view is not None:
            devices = subscriber.view.narrow("snapshot", devices)
        await send(
            encode({"type": "snapshot", "seq": seq, "epoch": self.epoch, "devices": devices})
        )

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
            elif kind == "subscribe":
                try:
                    view = View.parse(message.get("devices"), message.get("rect"))
                except ValueError as exc:
                    subscriber.offer(None, encode({"type": "error", "reason": str(exc)}))
                    continue
                subscriber.view = None if view.everything else view
                # Frames already queued were cut for the old view: start over from a snapshot.
                subscriber.queue.clear()
                subscriber.needs_snapshot = True
                subscriber.ready.set()
            else:
                subscriber.offer(None, encode({"type": "error", "reason": CLIENT_MESSAGES}))

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
