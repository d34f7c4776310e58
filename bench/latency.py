"""Latency histograms: 0.1 ms buckets up to 30 s, merged across processes, read as percentiles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

RESOLUTION = 1e-4
"""Bucket width in seconds."""
LIMIT = 30.0
"""Latencies above this land in one overflow bucket (``max`` is still exact)."""
BUCKETS = int(LIMIT / RESOLUTION) + 1
LATENCY_PARTS = ("toServer", "inServer")
"""The latency in two parts, split at each state's ``receivedAt`` (when the server's MQTT
client took the reading in): from ``sent`` through Mosquitto to the server, and from there
(in distributed mode: the bridge, Kafka, the processor, Redis and the api) to the client."""


def _empty() -> npt.NDArray[np.int64]:
    return np.zeros(BUCKETS + 1, dtype=np.int64)


@dataclass
class Histogram:
    counts: npt.NDArray[np.int64] = field(default_factory=_empty)
    maximum: float = 0.0

    def add(self, seconds: npt.NDArray[np.float64]) -> None:
        if seconds.size == 0:
            return
        # Sender and receiver read the same clock; a negative value is rounding.
        index = np.clip((seconds / RESOLUTION).astype(np.int64), 0, BUCKETS)
        self.counts += np.bincount(index, minlength=BUCKETS + 1)
        self.maximum = max(self.maximum, float(seconds.max()))

    def merge(self, other: Histogram) -> None:
        self.counts += other.counts
        self.maximum = max(self.maximum, other.maximum)

    @property
    def count(self) -> int:
        return int(self.counts.sum())

    def percentile(self, q: float) -> float | None:
        """The upper edge of the bucket holding the ``q``-th percentile, in seconds."""
        total = self.count
        if total == 0:
            return None
        rank = int(np.ceil(q / 100 * total))
        bucket = int(np.searchsorted(np.cumsum(self.counts), max(rank, 1)))
        return min((bucket + 1) * RESOLUTION, self.maximum)

    def summary(self) -> dict[str, Any]:
        """Count and p50/p90/p99/max in milliseconds (``None`` without samples)."""

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 1)

        return {
            "count": self.count,
            "p50Ms": ms(self.percentile(50)),
            "p90Ms": ms(self.percentile(90)),
            "p99Ms": ms(self.percentile(99)),
            "maxMs": ms(self.maximum) if self.count else None,
        }
