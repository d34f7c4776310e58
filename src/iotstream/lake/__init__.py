"""The lake seam; ``create_lake`` makes it from the settings (``None`` with ``--lake off``)."""

from __future__ import annotations

from ..config import Settings
from .base import (
    COMMAND_REPLIES,
    RAW_MESSAGES,
    READINGS,
    REJECTED,
    TABLES,
    Lake,
    LakeError,
    RawQuery,
    ReadingKey,
    ReadingQuery,
)

__all__ = [
    "COMMAND_REPLIES",
    "RAW_MESSAGES",
    "READINGS",
    "REJECTED",
    "TABLES",
    "Lake",
    "LakeError",
    "RawQuery",
    "ReadingKey",
    "ReadingQuery",
    "create_lake",
]


def create_lake(settings: Settings) -> Lake | None:
    """Delta tables at ``lake_url`` (default ``<data-dir>/lake``); object-store credentials and
    endpoint come from the ``AWS_*`` environment variables. ``None`` when the lake is off."""
    if not settings.lake.enabled:
        return None
    from .delta import DeltaLake

    return DeltaLake(settings.lake.url or str(settings.data_dir / "lake"))
