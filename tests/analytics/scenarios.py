"""Synthetic robots with hand-checkable motion, and the lake they are written to.

Every robot reports at 10 Hz (``pause`` at 1 Hz) from ``T0``, a block edge (whole seconds,
even), so the expected trips and stops below follow from the paths by hand. Times in the
comments are seconds after ``T0``.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from iotstream.lake.delta import DeltaLake
from iotstream.models import Batch, DeviceId, Reading

T0 = 1_800_000_000.0
"""2027-01-15 08:00:00 UTC."""
DAY = 86_400.0
MIDNIGHT = T0 - T0 % DAY
RATE = 10.0

Waypoints = Sequence[tuple[float, float, float]]
"""``(seconds after T0, x, y)``: the robot moves in a straight line from each to the next."""


def along(waypoints: Waypoints) -> Callable[[float], tuple[float, float]]:
    def position(s: float) -> tuple[float, float]:
        for (s0, x0, y0), (s1, x1, y1) in itertools.pairwise(waypoints):
            if s0 <= s <= s1:
                f = (s - s0) / (s1 - s0) if s1 > s0 else 0.0
                return x0 + f * (x1 - x0), y0 + f * (y1 - y0)
        raise ValueError(f"{s} is outside the path")

    return position


def sample(
    device: str,
    position: Callable[[float], tuple[float, float]],
    spans: Iterable[tuple[float, float]],
    rate: float = RATE,
) -> list[Reading]:
    """Readings of ``device`` every ``1 / rate`` seconds over each ``(first, last)`` span
    (both included), positions rounded to the micrometre as odometry would report them."""
    readings = []
    for first, last in spans:
        for k in range(round((last - first) * rate) + 1):
            s = first + k / rate
            x, y = position(s)
            readings.append(point(device, T0 + s, round(x, 6), round(y, 6)))
    return readings


def point(device: str, ts: float, x: float, y: float) -> Reading:
    return Reading(DeviceId(device), {"x": x, "y": y}, ts, ts)


def circle(s: float) -> tuple[float, float]:
    """At rest at (5, 0) until 10, then 20 s around the origin at 1 m/s (0.2 rad/s), then
    at rest where it stopped."""
    angle = 0.2 * min(max(s - 10.0, 0.0), 20.0)
    return 5 * math.cos(angle), 5 * math.sin(angle)


def noisy(device: str, seed: int = 7, sigma: float = 0.01) -> list[Reading]:
    """Still 30 s at (0, 0), 60 s along x at 1 m/s, still 30 s: positions with noise."""
    rng = random.Random(seed)
    position = along([(0, 0, 0), (30, 0, 0), (90, 60, 0), (120, 60, 0)])
    readings = []
    for k in range(1201):
        s = k / RATE
        x, y = position(s)
        readings.append(point(device, T0 + s, x + rng.gauss(0, sigma), y + rng.gauss(0, sigma)))
    return readings


TURNER = [(0, 0, 0), (10, 0, 0), (20, 10, 0), (25, 10, 0), (35, 10, 5), (50, 10, 5), (60, 0, 5),
          (70, 0, 5)]  # fmt: skip


def robots() -> list[Reading]:
    readings = [
        # Still 20 s at the origin, 30 m along x at 1 m/s, still 30 s.
        *sample("straight", along([(0, 0, 0), (20, 0, 0), (50, 30, 0), (80, 30, 0)]), [(0, 80)]),
        # Still 10 s; 10 m along x; a 5 s pause (shorter than min_stop: the same trip);
        # 5 m along y at 0.5 m/s (from 25, mid-block); a 15 s stop; 10 m back along x;
        # still 10 s.
        *sample("turner", along(TURNER), [(0, 70)]),
        *sample("circle", circle, [(0, 45)]),
        # 30 s along x at 1 m/s, silent for 90 s (a gap), 30 s along x again, still 15 s.
        *sample("gappy", along([(0, 0, 0), (30, 30, 0)]), [(0, 29.9)]),
        *sample("gappy", along([(120, 100, 0), (150, 130, 0), (165, 130, 0)]), [(120, 165)]),
        # Still at (5, 5), once a second, silent for 30 s (not a gap) in between.
        *sample("pause", along([(0, 5, 5), (50, 5, 5)]), [(0, 10), (40, 50)], rate=1.0),
        # 300 s in a straight line at 1 m/s: what prediction is scored on.
        *sample("cruise", along([(0, 0, 0), (300, 180, 240)]), [(0, 300)]),
        *noisy("noisy"),
    ]
    # What the analyses leave out: a string where x goes, and no coordinates at all.
    readings.append(Reading(DeviceId("straight"), {"x": "north", "y": 1.0}, T0 + 5.05, T0))
    readings.append(Reading(DeviceId("sensor"), {"motorRPM": 1500}, T0 + 1, T0 + 1))
    return readings


READINGS = robots()
DEVICES = ("circle", "cruise", "gappy", "noisy", "pause", "straight", "turner")
"""The devices with coordinates, in order."""


def arrival_batches(readings: Sequence[Reading], batches: int = 6) -> list[list[Reading]]:
    """The readings shuffled into ``batches`` appends, as robots whose messages arrive out
    of order and late would have them archived; each arrives when its append does."""
    shuffled = list(readings)
    random.Random(3).shuffle(shuffled)
    size = -(-len(shuffled) // batches)
    out = []
    for n in range(batches):
        arrived = T0 + 1000 + n
        out.append(
            [
                Reading(r.device_id, r.fields, r.timestamp, arrived)
                for r in shuffled[n * size : (n + 1) * size]
            ]
        )
    return out


def write_lake(
    where: Path | str,
    readings: Sequence[Reading] = READINGS,
    storage_options: Mapping[str, str] | None = None,
) -> str:
    """A Delta lake at ``where`` (a directory or an ``s3://`` URL) holding ``readings``,
    appended out of order; its URL."""
    url = str(where)

    async def load() -> None:
        async with DeltaLake(url, storage_options) as lake:
            for batch in arrival_batches(readings):
                await lake.append(Batch(readings=batch))

    asyncio.run(load())
    return url


def reference_heatmap(
    readings: Iterable[Reading], devices: Iterable[str], cell: float, max_gap: float
) -> dict[tuple[int, int], tuple[int, float]]:
    """The heatmap by its definition, reading by reading: ``(i, j) -> (readings, dwell)``."""
    wanted = set(devices)
    tracks: dict[str, list[tuple[float, float, float]]] = {}
    for r in readings:
        x, y = r.fields.get("x"), r.fields.get("y")
        if r.device_id in wanted and type(x) is float and type(y) is float:
            tracks.setdefault(r.device_id, []).append((round(r.timestamp * 1e6), x, y))
    cells: dict[tuple[int, int], tuple[int, float]] = {}
    for track in tracks.values():
        track.sort()
        for k, (us, x, y) in enumerate(track):
            dwell = min(track[k + 1][0] - us, round(max_gap * 1e6)) if k + 1 < len(track) else 0
            key = (math.floor(x / cell), math.floor(y / cell))
            n, total = cells.get(key, (0, 0.0))
            cells[key] = (n + 1, total + dwell / 1e6)
    return cells
