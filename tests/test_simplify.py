"""Track simplification against a plain recursive Ramer-Douglas-Peucker and GEOS's rules."""

from __future__ import annotations

import itertools
import math

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from iotstream.simplify import simplify


def distance_to_segment(
    p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]
) -> float:
    dx, dy = b[0] - a[0], b[1] - a[1]
    length2 = dx * dx + dy * dy
    if length2 == 0:
        return math.dist(p, a)
    t = max(0.0, min(1.0, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / length2))
    return math.dist(p, (a[0] + t * dx, a[1] + t * dy))


ROUNDING = 1e-9
"""Distances this close (relative) are equal for all either computation can tell."""


def reference(points: list[tuple[float, float]], tolerance: float) -> tuple[list[int], bool]:
    """The textbook recursion: split at the first farthest point when it is beyond tolerance.
    Also whether a decision was a tie within rounding (two points as far, or the farthest as
    far as the tolerance), where another arithmetic may rightly decide the other way."""
    kept = {0, len(points) - 1}
    tied = False

    def split(first: int, last: int) -> None:
        nonlocal tied
        if last - first < 2:
            return
        far = [distance_to_segment(points[i], points[first], points[last])
               for i in range(first + 1, last)]  # fmt: skip
        farthest = max(far)
        if math.isclose(farthest, tolerance, rel_tol=ROUNDING):
            tied = True
        if farthest > tolerance:
            tied = tied or sum(math.isclose(d, farthest, rel_tol=ROUNDING) for d in far) > 1
            at = first + 1 + far.index(farthest)
            kept.add(at)
            split(first, at)
            split(at, last)

    split(0, len(points) - 1)
    return sorted(kept), tied


def test_first_last_and_far_points_are_kept() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    y = np.array([0.0, 0.01, 1.0, 0.01, 0.0])
    assert simplify(x, y, 0.1).tolist() == [0, 1, 2, 3, 4]
    assert simplify(x, y, 0.5).tolist() == [0, 2, 4]
    assert simplify(x, y, 2.0).tolist() == [0, 4]
    still = np.zeros(5)
    assert simplify(still, still, 0.1).tolist() == [0, 4]
    assert simplify(x[:1], y[:1], 0.1).tolist() == [0]
    assert simplify(x, y, 0).tolist() == [0, 1, 2, 3, 4]


def test_a_closed_loop_keeps_its_far_side() -> None:
    """First and last point coincide: distances are to that point, not to a chord of no length."""
    angle = np.linspace(0, 2 * np.pi, 101)
    x, y = np.cos(angle) * 10, np.sin(angle) * 10
    x[-1], y[-1] = x[0], y[0]
    kept = simplify(x, y, 0.5)
    assert 50 in kept  # the point opposite the start, 20 m away
    assert len(kept) > 4


def test_points_beyond_the_ends_of_the_chord_count_from_the_nearest_end() -> None:
    # The middle point lies on the chord's line, 3 m past its end: a line distance of 0
    # would drop it; its distance to the segment is 3.
    x = np.array([0.0, 4.0, 1.0])
    y = np.array([0.0, 0.0, 0.0])
    assert simplify(x, y, 1.0).tolist() == [0, 1, 2]


coordinates = st.floats(-1e3, 1e3, allow_nan=False).map(lambda v: round(v, 3))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(coordinates, coordinates), min_size=1, max_size=60),
    st.sampled_from([0.001, 0.05, 0.5, 5.0, 100.0]),
)
def test_the_same_points_as_the_textbook_recursion(
    points: list[tuple[float, float]], tolerance: float
) -> None:
    """Ties that rounding decides are left out (one in seven examples): their squared,
    scaled distances and the reference's square roots may round them apart either way."""
    expected, tied = reference(points, tolerance)
    assume(not tied)
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    assert simplify(x, y, tolerance).tolist() == expected


def test_of_points_exactly_as_far_the_first_splits() -> None:
    # Distances 1, 1 and 1 from the chord, computed exactly by either arithmetic.
    points = [(0.0, 0.0), (1.0, 1.0), (2.0, 1.0), (3.0, 1.0), (4.0, 0.0)]
    expected, tied = reference(points, 0.5)
    assert tied and expected == [0, 1, 3, 4]
    x = np.array([p[0] for p in points])
    y = np.array([p[1] for p in points])
    assert simplify(x, y, 0.5).tolist() == expected


def test_a_long_noisy_track_stays_within_tolerance() -> None:
    rng = np.random.default_rng(4)
    t = np.arange(50_000) / 10
    x = 40 * np.cos(t / 60) + rng.normal(0, 0.005, t.size)
    y = 25 * np.sin(t / 60) + rng.normal(0, 0.005, t.size)
    kept = simplify(x, y, 0.05)
    assert kept[0] == 0 and kept[-1] == t.size - 1 and np.all(np.diff(kept) > 0)
    assert len(kept) < t.size / 5
    # Every dropped point lies within the tolerance of the segment that replaced it.
    for first, last in itertools.pairwise(kept):
        a, b = (x[first], y[first]), (x[last], y[last])
        for i in range(first + 1, last, 7):
            assert distance_to_segment((x[i], y[i]), a, b) <= 0.05 + 1e-9
