"""The store seam; ``create_store`` picks the backend from the settings."""

from __future__ import annotations

from ..config import Settings
from .base import Counters, Store
from .memory import MemoryStore

__all__ = ["Counters", "MemoryStore", "Store", "create_store"]


def create_store(settings: Settings) -> Store:
    return MemoryStore(deadletter_limit=settings.deadletter_limit)
