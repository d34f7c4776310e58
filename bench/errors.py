"""The bench's own failure: something it started did not come up, answer or finish in time.

What the harness starts fails with ``harness.HarnessError`` instead; the bench reports both
alike (a scenario that hits either is recorded as failed, with the reason).
"""

from __future__ import annotations


class BenchError(Exception):
    """A process of the bench, or the system under test, failed or timed out."""
