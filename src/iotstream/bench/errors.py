"""The bench's own failure: something it started did not come up, answer or finish in time.

``BenchError`` derives from ``iotstream.errors.IotstreamError``, so ``iotstream bench``
reports it like every other error of the package.
"""

from __future__ import annotations

from ..errors import IotstreamError


class BenchError(IotstreamError):
    """A process of the bench, or the system under test, failed or timed out."""
