"""The store seam: the latest state of every device, counters, dead letters, and change fan-out.

Contract, shared by every backend and checked by ``tests/store/suite.py``:

- ``apply`` merges a batch into the latest state: a reading's fields overwrite
  the device's, unless its device timestamp is older than the stored one (then
  only the counters and the last-seen time move). It counts messages per
  device, per raw topic and per rejection reason, and keeps the newest
  rejected messages. It announces what changed to every ``subscribe``-r, as part of
  the same write (a write that happened is always announced, even when its caller
  never hears back), and returns it.
- With a ``dedupe_window`` of N, a reading equal to one of the device's last N
  readings (same device timestamp, same fields) is a duplicate and is ignored,
  counters included: replays after a processor crash and broker redeliveries
  after a bridge crash are not counted twice. Readings without a device
  timestamp carry their receive time, so only replays of the same record match.
- Subscribers receive every announced ``Changes`` in the order of the writes.
- ``expire`` removes devices not seen since a time, announces their removal, and
  returns their ids.
- ``total`` is the number of messages counted, without reading any per-device count.

Commands (``iotstream.models.Command``), shared by every api instance and processor:

- ``add_command`` keeps a new command; with an idempotency key already used it keeps
  nothing and returns the command that key made, or raises ``IdempotencyConflict`` when that
  one came from a request with another fingerprint.
- ``move_commands`` moves commands by ``advance``'s rules, each atomically against every
  other writer, announces the new states (``Changes.commands``) as part of the same writes,
  and returns those moved; a move that does not apply (a repeat, a late or unknown report)
  is left out. A batch costs a backend a few round trips, not a few per command, and two
  moves of one command in a batch apply in order. ``update_command`` is one such move.
- ``apply`` moves commands by the ``CommandReply`` events of a batch the same way, so a
  replayed reply changes nothing.
- ``queued_by_device`` are some devices' commands still ``queued``, oldest first (one call
  for them all), ``queued_commands`` one device's, and ``queued_devices`` the devices that
  have some; ``device_commands`` a device's commands newest first; ``due_commands`` the ids
  of open commands whose TTL has passed. ``expire_commands`` closes those.
- A closed command is kept for ``command_retention`` seconds after it closed.
"""

from __future__ import annotations

import dataclasses
from abc import abstractmethod
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from ..lifecycle import Component
from ..models import (
    CANCELED,
    CONFIRMED,
    DELIVERED,
    EXPIRED,
    FAILED,
    OUTCOMES,
    QUEUED,
    RECEIVED_AT,
    REJECTED,
    SENT,
    SUCCEEDED,
    UNCONFIRMED,
    Batch,
    Changes,
    Command,
    CommandReply,
    DeviceState,
    Rejected,
    Transition,
)

COMMAND_RETENTION = 86_400.0
"""Seconds a closed command stays readable."""


@dataclass(frozen=True, slots=True)
class CommandMove:
    """One move of a command by ``advance``: to ``status`` at ``at``, with a device's report
    (``result``, ``error``) and, for a report, the ``device_id`` that sent it."""

    command_id: str
    status: str
    at: float
    result: Any = None
    error: str | None = None
    device_id: str | None = None

    def apply(self, command: Command) -> Command | None:
        """``command`` after this move, or ``None`` when it does not apply (``advance``)."""
        return advance(
            command,
            self.status,
            self.at,
            result=self.result,
            error=self.error,
            device_id=self.device_id,
        )


@dataclass(slots=True)
class Counters:
    """Message counts since the store was created."""

    readings: int = 0
    raw: int = 0
    rejected: int = 0
    per_device: dict[str, int] = field(default_factory=dict)
    per_topic: dict[str, int] = field(default_factory=dict)
    per_reason: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.readings + self.raw + self.rejected


@dataclass(slots=True, frozen=True)
class Freshness:
    """How many devices the store knows, and how many of them are silent."""

    known: int
    silent: int


class Store(Component):
    """Latest state and counters; start and stop it with ``async with``."""

    @abstractmethod
    async def apply(self, batch: Batch, *, report: bool = True) -> Changes:
        """Merge a batch and count it; announces the devices whose state changed, and returns
        them unless ``report`` is false (a writer that only needs the announcement)."""

    @abstractmethod
    async def devices(self) -> list[DeviceState]:
        """The latest state of every device."""

    @abstractmethod
    async def device(self, device_id: str) -> DeviceState | None: ...

    @abstractmethod
    async def counters(self) -> Counters: ...

    @abstractmethod
    async def total(self) -> int:
        """Messages counted so far (``counters().total``), cheap enough to sample often."""

    async def freshness(self, seen_before: float) -> Freshness:
        """The devices known, and those whose last reading was received before
        ``seen_before`` (epoch seconds); backends answer it without reading every state."""
        states = await self.devices()
        return Freshness(len(states), sum(1 for s in states if s[RECEIVED_AT] < seen_before))

    @abstractmethod
    async def deadletters(self, limit: int | None = None) -> list[Rejected]:
        """The newest rejected messages, newest first."""

    @abstractmethod
    async def expire(self, last_seen_before: float) -> list[str]:
        """Remove devices not seen since ``last_seen_before`` (epoch seconds); announces it."""

    @abstractmethod
    def subscribe(self) -> AbstractAsyncContextManager[AsyncIterator[Changes]]:
        """``async with store.subscribe() as changes: async for change in changes: ...``"""

    # -- commands ---------------------------------------------------------

    @abstractmethod
    async def add_command(self, command: Command) -> Command:
        """Keep a new command and announce it; with a used idempotency key, the command that
        key made (raises ``IdempotencyConflict`` if its fingerprint differs)."""

    @abstractmethod
    async def command(self, command_id: str) -> Command | None: ...

    @abstractmethod
    async def device_commands(
        self, device_id: str, status: str | None = None, limit: int = 100
    ) -> list[Command]:
        """A device's commands (only those in ``status``, if given), newest first."""

    @abstractmethod
    async def queued_by_device(self, device_ids: Collection[str]) -> dict[str, list[Command]]:
        """Each device's commands still waiting to be sent, oldest first (devices without any
        are left out)."""

    async def queued_commands(self, device_id: str) -> list[Command]:
        """A device's commands still waiting to be sent, oldest first."""
        return (await self.queued_by_device([device_id])).get(device_id, [])

    @abstractmethod
    async def queued_devices(self) -> set[str]:
        """The devices with commands still queued."""

    @abstractmethod
    async def due_commands(self, now: float) -> list[str]:
        """The ids of open commands whose TTL ran out by ``now``."""

    @abstractmethod
    async def move_commands(self, moves: Sequence[CommandMove]) -> list[Command]:
        """Apply each move by ``advance``, in order, and announce them; the commands moved, in
        the order of their moves (moves that do not apply, or of unknown commands, left out)."""

    async def update_command(
        self,
        command_id: str,
        status: str,
        at: float,
        *,
        result: Any = None,
        error: str | None = None,
        device_id: str | None = None,
    ) -> Command | None:
        """Move a command by ``advance`` and announce it; ``None`` when the move does not apply
        (or there is no such command)."""
        move = CommandMove(command_id, status, at, result, error, device_id)
        moved = await self.move_commands([move])
        return moved[0] if moved else None

    async def expire_commands(self, now: float) -> list[Command]:
        """Close every open command whose TTL ran out (``advance`` with ``expired``)."""
        due = await self.due_commands(now)
        return await self.move_commands([CommandMove(c, EXPIRED, now) for c in due])

    async def _apply_replies(self, replies: list[CommandReply]) -> None:
        """Move commands by the devices' reports (``apply`` calls it)."""
        await self.move_commands(
            [
                CommandMove(
                    reply.command_id,
                    reply.status,
                    reply.received_at,
                    reply.result,
                    reply.error,
                    reply.device_id,
                )
                for reply in replies
            ]
        )


def merge(
    state: DeviceState | None,
    device_id: str,
    fields: dict[str, object],
    timestamp: float,
    received_at: float,
) -> DeviceState | None:
    """The new latest state after a reading, or ``None`` when the reading is older.

    Returns a new dict; stored states are never mutated, so readers may keep them.
    """
    if state is None:
        return {"deviceId": device_id, **fields, "timestamp": timestamp, "receivedAt": received_at}
    if timestamp < state["timestamp"]:
        return None
    return {**state, **fields, "timestamp": timestamp, "receivedAt": received_at}


_NO_RESULT = "the device confirmed delivery but reported no outcome within the TTL"
_DEFAULT_MESSAGES = {
    SUCCEEDED: "the device carried the command out",
    FAILED: "the device could not carry the command out",
    REJECTED: "the device refused the command",
}


def advance(
    command: Command,
    status: str,
    at: float,
    *,
    result: Any = None,
    error: str | None = None,
    device_id: str | None = None,
) -> Command | None:
    """``command`` after the move to ``status`` at ``at``, or ``None`` when it does not apply.

    - ``sent``: a queued command whose TTL has not passed; only once, so of the api
      instances that try to send it, one does.
    - ``delivered``: the device's acknowledgement, while queued or sent; also once the TTL
      closed it as sent (it did arrive, only its report came late).
    - ``succeeded`` / ``failed`` / ``rejected``: the device's outcome, while queued, sent or
      delivered (a result that overtakes the acknowledgement counts), or closed by the TTL.
    - ``canceled``: while queued or sent.
    - ``expired`` (once the TTL passed): a queued command ends ``expired``; a sent one is
      closed with ``delivery`` unconfirmed, a delivered one with reason ``no_result``.

    Nothing applies to a command in an end state, nor, with ``device_id`` (the device that
    reported), to another device's command.
    """
    if device_id is not None and device_id != command.device_id:
        return None
    current = command.status
    if current in (SUCCEEDED, FAILED, REJECTED, EXPIRED, CANCELED):
        return None
    moved = dataclasses.replace
    history = (*command.transitions, Transition(status, at))
    if status == SENT:
        if current != QUEUED or at >= command.expires_at:
            return None
        return moved(command, status=SENT, transitions=history, attempts=command.attempts + 1)
    if status == DELIVERED:
        if current not in (QUEUED, SENT):
            return None
        if command.closed:  # the TTL closed it as sent: it did arrive, no outcome came
            return moved(
                command,
                status=DELIVERED,
                transitions=history,
                delivery=CONFIRMED,
                reason="no_result",
                message=_NO_RESULT,
            )
        return moved(command, status=DELIVERED, transitions=history, delivery=CONFIRMED)
    if status in OUTCOMES:
        message = error or _DEFAULT_MESSAGES[status]
        return moved(
            command,
            status=status,
            transitions=history,
            delivery=CONFIRMED,
            closed=True,
            closed_at=at,
            reason=status,
            message=message,
            result=result,
        )
    if command.closed:
        return None
    if status == CANCELED:
        if current not in (QUEUED, SENT):
            return None
        return moved(
            command,
            status=CANCELED,
            transitions=history,
            closed=True,
            closed_at=at,
            reason="canceled",
            message=error or "canceled by an operator",
        )
    if status == EXPIRED:
        if at < command.expires_at:
            return None
        if current == QUEUED:
            return moved(
                command,
                status=EXPIRED,
                transitions=history,
                closed=True,
                closed_at=at,
                reason="ttl_expired",
                message="the TTL ran out before the device could be reached; it was never sent",
            )
        if current == SENT:
            return moved(
                command,
                delivery=UNCONFIRMED,
                closed=True,
                closed_at=at,
                reason="unconfirmed",
                message="the device did not confirm delivery within the TTL",
            )
        return moved(
            command,
            closed=True,
            closed_at=at,
            reason="no_result",
            message=_NO_RESULT,
        )
    return None
