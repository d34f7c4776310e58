"""Health of the long-running components, as ``GET /api/health`` reports it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True, frozen=True)
class Health:
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return {"status": "UP" if self.ok else "DOWN", "detail": self.detail}


class HasHealth(Protocol):
    def health(self) -> Health: ...
