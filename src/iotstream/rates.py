"""Message rates, sampled from the store's total count."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from .errors import StoreError
from .store import Store


class RateMeter:
    """Messages per second over the last second and the last ``window`` seconds."""

    def __init__(self, store: Store, window: int = 10) -> None:
        self.store = store
        self._samples: deque[tuple[float, int]] = deque(maxlen=window + 1)

    def add(self, at: float, total: int) -> None:
        self._samples.append((at, total))

    def _rate(self, first: tuple[float, int], last: tuple[float, int]) -> float:
        elapsed = last[0] - first[0]
        return (last[1] - first[1]) / elapsed if elapsed > 0 else 0.0

    @property
    def current(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        return self._rate(self._samples[-2], self._samples[-1])

    @property
    def average(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        return self._rate(self._samples[0], self._samples[-1])

    async def run(self, period: float = 1.0) -> None:
        while True:
            try:
                total = await self.store.total()
            except StoreError:  # an outage shows in health, not here
                pass
            else:
                self.add(time.monotonic(), total)
            await asyncio.sleep(period)
