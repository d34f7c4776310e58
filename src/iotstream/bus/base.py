"""The bus seam: a durable, ordered log of event batches read by consumer groups.

Contract, shared by every backend and checked by ``tests/bus/suite.py``:

- ``publish`` returns once the backend has accepted the batch (for Kafka, when
  every record is acknowledged); order is kept per device.
- Every consumer group receives every event. A consumer receives what its group
  has not committed; ``commit`` marks everything it has polled so far as done.
- A new consumer of a group resumes after the group's last commit, so events
  polled but not committed are delivered again (at-least-once).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self

from ..lifecycle import Component
from ..models import Batch


class Consumer(ABC):
    """One member of a consumer group."""

    @abstractmethod
    async def poll(self, max_events: int = 10_000, timeout: float = 1.0) -> Batch:
        """The next events for this group, or an empty batch after ``timeout`` seconds."""

    @abstractmethod
    async def commit(self) -> None:
        """Mark every event polled so far as processed."""

    @abstractmethod
    async def close(self) -> None:
        """Leave the group without committing."""

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

    @abstractmethod
    async def publish(self, batch: Batch) -> None:
        """Append a batch; returns once the backend has accepted it."""

    @abstractmethod
    async def consumer(self, group: str) -> Consumer:
        """Join consumer group ``group``."""
