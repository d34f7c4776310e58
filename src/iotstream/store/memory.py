"""The embedded store: latest state and counters in process memory."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager

from ..errors import IdempotencyConflict
from ..health import Health
from ..models import QUEUED, Batch, Changes, Command, DeviceState, Reading, Rejected
from .base import COMMAND_RETENTION, CommandMove, Counters, Freshness, Store, merge


class MemoryStore(Store):
    def __init__(
        self,
        deadletter_limit: int = 1000,
        dedupe_window: int = 0,
        command_retention: float = COMMAND_RETENTION,
    ) -> None:
        self._states: dict[str, DeviceState] = {}
        # Nothing replays in one process, so the embedded server runs with no window.
        self.dedupe_window = dedupe_window
        self._recent: dict[str, deque[tuple[float, dict[str, object]]]] = {}
        self._last_seen: dict[str, float] = {}
        self._counters = Counters()
        self._deadletters: deque[Rejected] = deque(maxlen=deadletter_limit)
        self._subscribers: set[asyncio.Queue[Changes]] = set()
        self._running = False
        self.command_retention = command_retention
        self._commands: dict[str, Command] = {}
        """Every command kept, oldest first (dicts keep insertion order)."""
        self._device_commands: dict[str, dict[str, None]] = {}
        self._queued: dict[str, dict[str, None]] = {}
        """Device id -> its queued commands' ids, oldest first."""
        self._idempotency: dict[str, str] = {}

    async def start(self) -> None:
        self._running = True

    async def stop(self) -> None:
        self._running = False

    async def apply(self, batch: Batch, *, report: bool = True) -> Changes:
        states, last_seen, counters = self._states, self._last_seen, self._counters
        per_device = counters.per_device
        changed: dict[str, DeviceState] = {}
        counted = 0
        for reading in batch.readings:
            device_id = reading.device_id
            if self.dedupe_window and self._seen(reading):
                continue
            counted += 1
            per_device[device_id] = per_device.get(device_id, 0) + 1
            last_seen[device_id] = reading.received_at
            state = merge(
                states.get(device_id),
                device_id,
                reading.fields,
                reading.timestamp,
                reading.received_at,
            )
            if state is not None:
                states[device_id] = changed[device_id] = state
        counters.readings += counted
        for raw in batch.raw:
            counters.per_topic[raw.topic] = counters.per_topic.get(raw.topic, 0) + 1
        counters.raw += len(batch.raw)
        for rejected in batch.rejected:
            counters.per_reason[rejected.reason] = counters.per_reason.get(rejected.reason, 0) + 1
        counters.rejected += len(batch.rejected)
        self._deadletters.extend(batch.rejected)
        changes = Changes(updated=list(changed.values()))
        self._announce(changes)
        if batch.replies:
            await self._apply_replies(batch.replies)
        return changes

    def _seen(self, reading: Reading) -> bool:
        """Whether the reading repeats a recent one; remembers it when not."""
        recent = self._recent.get(reading.device_id)
        if recent is None:
            recent = self._recent[reading.device_id] = deque(maxlen=self.dedupe_window)
        key = (reading.timestamp, reading.fields)
        if key in recent:
            return True
        recent.append(key)
        return False

    async def devices(self) -> list[DeviceState]:
        return list(self._states.values())

    async def device(self, device_id: str) -> DeviceState | None:
        return self._states.get(device_id)

    async def counters(self) -> Counters:
        c = self._counters
        return Counters(
            c.readings, c.raw, c.rejected, dict(c.per_device), dict(c.per_topic), dict(c.per_reason)
        )

    async def deadletters(self, limit: int | None = None) -> list[Rejected]:
        newest_first = list(reversed(self._deadletters))
        return newest_first if limit is None else newest_first[:limit]

    async def expire(self, last_seen_before: float) -> list[str]:
        gone = [d for d, seen in self._last_seen.items() if seen < last_seen_before]
        for device_id in gone:
            del self._last_seen[device_id]
            self._states.pop(device_id, None)
            self._recent.pop(device_id, None)
        self._announce(Changes(removed=gone))
        return gone

    async def total(self) -> int:
        return self._counters.total

    async def freshness(self, seen_before: float) -> Freshness:
        seen = self._last_seen
        return Freshness(len(seen), sum(1 for at in seen.values() if at < seen_before))

    # -- commands ---------------------------------------------------------

    async def add_command(self, command: Command) -> Command:
        key = command.idempotency_key
        if key is not None:
            existing = self._commands.get(self._idempotency.get(key, ""))
            if existing is not None:
                if existing.fingerprint != command.fingerprint:
                    raise IdempotencyConflict(
                        f"the idempotency key {key!r} was used for another request"
                    )
                return existing
            self._idempotency[key] = command.id
        self._commands[command.id] = command
        self._device_commands.setdefault(command.device_id, {})[command.id] = None
        if command.status == QUEUED:
            self._queued.setdefault(command.device_id, {})[command.id] = None
        self._announce(Changes(commands=[command.to_json()]))
        return command

    async def command(self, command_id: str) -> Command | None:
        return self._commands.get(command_id)

    async def device_commands(
        self, device_id: str, status: str | None = None, limit: int = 100
    ) -> list[Command]:
        found = []
        for command_id in reversed(self._device_commands.get(device_id, {})):
            command = self._commands[command_id]
            if status is None or command.status == status:
                found.append(command)
                if len(found) >= limit:
                    break
        return found

    async def queued_by_device(self, device_ids: Collection[str]) -> dict[str, list[Command]]:
        found = {}
        for device_id in device_ids:
            queued = self._queued.get(device_id)
            if queued:
                found[device_id] = [self._commands[command_id] for command_id in queued]
        return found

    async def queued_devices(self) -> set[str]:
        return set(self._queued)

    async def due_commands(self, now: float) -> list[str]:
        self._forget_closed(now - self.command_retention)
        return [
            command.id
            for command in self._commands.values()
            if not command.closed and command.expires_at <= now
        ]

    async def move_commands(self, moves: Sequence[CommandMove]) -> list[Command]:
        moved = []
        for move in moves:
            command = self._commands.get(move.command_id)
            if command is None:
                continue
            after = move.apply(command)
            if after is None:
                continue
            self._commands[command.id] = after
            if command.status == QUEUED and after.status != QUEUED:
                self._unqueue(after)
            moved.append(after)
        # One announcement for the batch: its moves in order, in one WebSocket frame.
        self._announce(Changes(commands=[command.to_json() for command in moved]))
        return moved

    def _unqueue(self, command: Command) -> None:
        queued = self._queued.get(command.device_id)
        if queued is not None:
            queued.pop(command.id, None)
            if not queued:
                del self._queued[command.device_id]

    def _forget_closed(self, before: float) -> None:
        gone = [
            command
            for command in self._commands.values()
            if command.closed_at is not None and command.closed_at < before
        ]
        for command in gone:
            del self._commands[command.id]
            self._device_commands[command.device_id].pop(command.id, None)
            if command.idempotency_key is not None:
                self._idempotency.pop(command.idempotency_key, None)

    def _announce(self, changes: Changes) -> None:
        if changes:
            for queue in self._subscribers:
                queue.put_nowait(changes)

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Changes]]:
        queue: asyncio.Queue[Changes] = asyncio.Queue()
        self._subscribers.add(queue)

        async def changes() -> AsyncIterator[Changes]:
            while True:
                yield await queue.get()

        try:
            yield changes()
        finally:
            self._subscribers.discard(queue)

    def health(self) -> Health:
        return Health(self._running, f"in-process, {len(self._states)} devices")
