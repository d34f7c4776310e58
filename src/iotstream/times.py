"""Times as people and programs write them: epoch seconds or ISO 8601, one reading of both
for every edge that takes one (the HTTP APIs, ``iotstream analyze``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def epoch_seconds(text: str) -> float:
    """Epoch seconds from epoch seconds or ISO 8601 text; a time without a zone is UTC.
    Raises ``ValueError`` saying why when ``text`` is neither, or not between the years 1
    and 9999."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError("not epoch seconds or an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            seconds = moment.timestamp()
        except (ValueError, OverflowError):  # a zone pushing it past year 1 or 9999
            seconds = math.inf
    if not EARLIEST <= seconds <= LATEST:  # NaN too
        raise ValueError("time is not between the years 1 and 9999")
    return seconds
