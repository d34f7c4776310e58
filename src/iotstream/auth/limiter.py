"""Failed logins counted per user and per client address, in a sliding minute."""

from __future__ import annotations

import time
from collections import deque

WINDOW = 60.0
MAX_TRACKED = 100_000


class LoginLimiter:
    """At most ``attempts`` failed logins per ``WINDOW`` for one key (``user:alice``,
    ``addr:10.0.0.7``); kept per api instance."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, *keys: str) -> float:
        """Seconds until ``keys`` may try again; 0 when they may now."""
        now = time.monotonic()
        wait = 0.0
        for key in keys:
            failures = self._failures.get(key)
            if failures is None:
                continue
            while failures and now - failures[0] > WINDOW:
                failures.popleft()
            if len(failures) >= self.attempts:
                wait = max(wait, WINDOW - (now - failures[0]))
        return wait

    def failed(self, *keys: str) -> None:
        if len(self._failures) > MAX_TRACKED:
            # Made-up user names must not grow memory without bound; forget the quiet ones.
            now = time.monotonic()
            self._failures = {
                key: times
                for key, times in self._failures.items()
                if times and now - times[-1] <= WINDOW
            }
        now = time.monotonic()
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, key: str) -> None:
        self._failures.pop(key, None)
