"""Ramer-Douglas-Peucker simplification of a track on the x/y plane.

A device-day at 10 Hz is 864,000 points; the history API simplifies one in a request, so the
recursion runs compiled (numba, cached on disk after the first call) as one loop over an
explicit stack of segments, and compares squared distances scaled by the chord's squared
length, which needs no division per point. Same points as GEOS's ``simplify`` with
``preserve_topology=False``: a point's distance is to the chord as a segment, and of equally
far points the first splits. A long track is split where the recursion itself splits it
first, and the parts run on two threads (the compiled loop releases the GIL).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

PARALLEL_POINTS = 100_000
"""Tracks at least this long are simplified in parts on two threads."""
PARTS = 4
_helper = ThreadPoolExecutor(1, thread_name_prefix="iotstream-simplify")


def simplify(x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the points Ramer-Douglas-Peucker keeps at ``tolerance`` metres, ascending:
    always the first and the last; every point when the tolerance is 0."""
    n = len(x)
    if n <= 2 or tolerance <= 0:
        return np.arange(n)
    x = np.ascontiguousarray(x, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    keep = np.zeros(n, np.bool_)
    keep[0] = keep[n - 1] = True
    segments = [(0, n - 1)]
    if n >= PARALLEL_POINTS:
        # The recursion's first splits, found as it finds them: the parts below them are
        # independent, so simplifying them apart keeps exactly the same points.
        while len(segments) < PARTS:
            first, last = max(segments, key=lambda s: s[1] - s[0])
            split = _split(x, y, tolerance, first, last)
            segments.remove((first, last))
            if split < 0:
                break
            keep[split] = True
            segments += [(first, split), (split, last)]
        segments.sort(key=lambda s: s[0] - s[1])
        half = sum(last - first for first, last in segments) / 2
        mine: list[tuple[int, int]] = []
        theirs: list[tuple[int, int]] = []
        for segment in segments:
            done = sum(last - first for first, last in theirs)
            (theirs if done < half else mine).append(segment)
        other = _helper.submit(_fill_all, x, y, tolerance, keep, theirs)
        _fill_all(x, y, tolerance, keep, mine)
        other.result()
    else:
        _fill(x, y, tolerance, keep, 0, n - 1)
    return np.flatnonzero(keep)


def warm() -> None:
    """Load (or the first time, compile) the loops now rather than in the first request."""
    simplify(np.arange(4.0), np.array([0.0, 1.0, 0.0, 0.0]), 0.5)


def _fill_all(
    x: np.ndarray,
    y: np.ndarray,
    tolerance: float,
    keep: np.ndarray,
    segments: list[tuple[int, int]],
) -> None:
    for first, last in segments:
        _fill(x, y, tolerance, keep, first, last)


@njit(cache=True, nogil=True)
def _split(x: np.ndarray, y: np.ndarray, tolerance: float, first: int, last: int) -> int:
    """Where the recursion splits ``first..last``: the first farthest point when it lies
    beyond ``tolerance``, else -1."""
    if last - first < 2:
        return -1
    ax = x[first]
    ay = y[first]
    dx = x[last] - ax
    dy = y[last] - ay
    length2 = dx * dx + dy * dy
    # Distances squared times length2 (or as they are, for a chord of no length).
    scale = length2 if length2 > 0.0 else 1.0
    farthest = -1.0
    split = -1
    for i in range(first + 1, last):
        px = x[i] - ax
        py = y[i] - ay
        along = px * dx + py * dy
        if along <= 0.0:
            far = (px * px + py * py) * scale
        elif along >= length2:
            qx = px - dx
            qy = py - dy
            far = (qx * qx + qy * qy) * scale
        else:
            cross = px * dy - py * dx
            far = cross * cross
        if far > farthest:
            farthest = far
            split = i
    if farthest > tolerance * tolerance * scale:
        return split
    return -1


@njit(cache=True, nogil=True)
def _fill(
    x: np.ndarray, y: np.ndarray, tolerance: float, keep: np.ndarray, first: int, last: int
) -> None:
    """Mark in ``keep`` every point the recursion keeps strictly between ``first`` and
    ``last``."""
    # Segments still to look at, as (first, last) pairs: each split adds one.
    stack = np.empty(2 * (last - first + 1), np.int64)
    stack[0] = first
    stack[1] = last
    top = 2
    while top > 0:
        top -= 2
        start = stack[top]
        end = stack[top + 1]
        split = _split(x, y, tolerance, start, end)
        if split >= 0:
            keep[split] = True
            stack[top] = start
            stack[top + 1] = split
            stack[top + 2] = split
            stack[top + 3] = end
            top += 4
