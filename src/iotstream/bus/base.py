"""The bus seam: a durable, ordered log of event batches read by consumer groups.

Contract, shared by every backend and checked by ``tests/bus/suite.py``:

- ``publish`` returns once the backend has accepted the batch (for Kafka, when
  every record is acknowledged); order is kept per device.
- Every consumer group receives every event. A consumer receives what its group
  has not committed; ``commit`` marks everything it has polled so far as done.
- A new consumer of a group resumes after the group's last commit, so events
  polled but not committed are delivered again (at-least-once).
- Positions, for a consumer made with a ``Placement``: the log is split into sources
  (``"<topic>-<partition>"`` for Kafka; ``"memory-<epoch>"`` for the in-process log, the
  epoch naming this process's log, since a new process counts offsets from 0 again).
  Offsets grow within a source. ``positions()`` says where each event of the last poll sits;
  when sources are assigned to the member, ``Placement.assigned`` says where to start in
  each, and ``Placement.revoked`` tells of sources taken away (their uncommitted events go to
  the member that gets them next). A writer that records what it wrote per source (the
  archiver) gets exactly-once from this.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import NamedTuple, Self

from ..lifecycle import Component
from ..models import Batch


class Position(NamedTuple):
    """Where one event sits on the bus."""

    source: str
    """The ordered part of the log it is in: a Kafka partition, the in-process log."""
    offset: int
    """Its place in ``source``; events polled later from a source have greater or equal
    offsets (the in-process log counts batches, so the events of one batch share one)."""


class Placement(ABC):
    """Where a member of a group starts reading, told when sources are assigned to it.

    Both are called while a ``poll`` is under way (for Kafka, when the group rebalances),
    on the event loop, and the poll waits for them.
    """

    @abstractmethod
    async def assigned(self, sources: Sequence[str]) -> Mapping[str, int]:
        """The offset of the first event to read in each of ``sources``; a source left out
        resumes after the group's last commit."""

    @abstractmethod
    async def revoked(self, sources: Sequence[str]) -> None:
        """``sources`` are no longer this member's; events polled from them but not yet
        committed will be read again by the member that gets them."""


class Consumer(ABC):
    """One member of a consumer group."""

    @abstractmethod
    async def poll(self, max_events: int = 10_000, timeout: float = 1.0) -> Batch:
        """The next events for this group, or an empty batch after ``timeout`` seconds.
        ``ConsumerLost`` when this consumer can take nothing more (a new one must join);
        other ``BusError``s may pass."""

    @abstractmethod
    def positions(self) -> list[Position]:
        """Where each event the last ``poll`` returned sits, in ``batch.events()`` order;
        only a consumer made with a ``Placement`` keeps them (else ``BusError``)."""

    @abstractmethod
    async def commit(self) -> None:
        """Mark every event polled so far as processed."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group without committing."""

    async def lag(self) -> dict[str, int]:
        """Events of this group not committed yet, per partition this member reads (Kafka:
        end offset - committed offset of each assigned partition, in records, one of which
        may pack several readings; the in-process log: one partition, ``"0"``). Raises
        ``BusError`` when the bus cannot tell now."""
        return {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class Bus(Component):
    """A log of event batches; start and stop it with ``async with``."""

    commit_interval: float = 0.0
    """Seconds a consumer that keeps polling may wait between commits: what a commit costs
    this backend, against what a crash makes it read again."""

    @abstractmethod
    async def publish(self, batch: Batch) -> None:
        """Append a batch; returns once the backend has accepted it."""

    @abstractmethod
    async def consumer(
        self, group: str, placement: Placement | None = None, *, max_wait: float | None = None
    ) -> Consumer:
        """Join consumer group ``group``; with ``placement``, the member starts where it says
        and keeps the ``positions()`` of what it polls. ``max_wait``: seconds the bus may hold
        what arrived back to deliver more at once, for a member that takes it in bulk (the
        bus's own when ``None``)."""
