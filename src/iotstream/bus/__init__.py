"""The bus seam; ``create_bus`` picks the backend from the settings."""

from __future__ import annotations

from ..config import Settings
from .base import Bus, Consumer
from .memory import MemoryBus

__all__ = ["Bus", "Consumer", "MemoryBus", "create_bus"]


def create_bus(settings: Settings) -> Bus:
    return MemoryBus()
