"""The store seam; ``create_store`` picks the backend from the settings."""

from __future__ import annotations

from ..config import Settings
from .base import Counters, Store, advance
from .memory import MemoryStore

__all__ = ["Counters", "MemoryStore", "Store", "advance", "create_store"]


def create_store(settings: Settings) -> Store:
    """Redis when ``redis_url`` is set, else process memory."""
    if settings.redis.url is None:
        return MemoryStore(
            deadletter_limit=settings.state.deadletter_limit,
            command_retention=settings.commands.retention,
        )
    from .redis import RedisStore

    return RedisStore(
        settings.redis.url,
        prefix=settings.redis.prefix,
        deadletter_limit=settings.state.deadletter_limit,
        dedupe_window=settings.redis.dedupe_window,
        command_retention=settings.commands.retention,
    )
