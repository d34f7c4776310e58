"""Health of the long-running components, as ``GET /api/health`` reports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .metrics import Consumption


@dataclass(slots=True, frozen=True)
class Health:
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"status": "UP" if self.ok else "DOWN", "detail": self.detail}


class HasHealth(Protocol):
    def health(self) -> Health: ...


@runtime_checkable
class Consuming(Protocol):
    """A component that reads the bus as a member of a consumer group (the processor, the
    archiver): ``GET /api/health`` and ``/metrics`` show its lags."""

    @property
    def consumption(self) -> Consumption: ...
