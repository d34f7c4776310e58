"""The bus seam; ``create_bus`` picks the backend from the settings."""

from __future__ import annotations

from ..config import Settings
from .base import Bus, Consumer, Placement, Position
from .memory import MemoryBus

__all__ = ["Bus", "Consumer", "MemoryBus", "Placement", "Position", "create_bus"]


def create_bus(settings: Settings) -> Bus:
    """Kafka when ``kafka_bootstrap`` is set, else the in-process log."""
    if settings.kafka.bootstrap is None:
        return MemoryBus()
    from .kafka import KafkaBus

    return KafkaBus(
        settings.kafka.bootstrap,
        topic=settings.kafka.topic,
        partitions=settings.kafka.partitions,
        replication_factor=settings.kafka.replication_factor,
        retention_ms=settings.kafka.retention_ms,
        instance_id=settings.kafka.instance_id,
        linger_ms=settings.kafka.linger_ms,
        fetch_wait_ms=settings.kafka.fetch_wait_ms,
    )
