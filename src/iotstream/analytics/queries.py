"""The analyses, written once as SQL that every engine runs (DuckDB and Spark SQL).

An engine provides one relation, ``points``: the window's readings with a numeric x and y,
as ``device_id``, ``us`` (device time, whole microseconds since the epoch), ``rus`` (receive
time, likewise), ``x``, ``y``. It then runs the stages of ``motion_plan`` (or
``points_plan``) in order, each a SELECT over ``points`` and earlier stages, named in the
text as ``{stage}`` so that an engine can give its views names of its own, and finally an
output query. Every output query gives times as whole microseconds and days as day numbers
since the epoch: integers, identical in every engine; each engine turns them into
timestamps and dates for the derived tables (``tables``) and the result types.

The dialects differ in two spellings only (``Dialect``); the hints for Spark's planner
(``/*+ BROADCAST(...) */`` on the small side of a join: Spark knows no sizes of checkpointed
stages) are comments to DuckDB. Parameters are written into the text as integers
(microseconds) and exact double literals, never as strings: device ids are filtered by the
engine when it builds ``points``. Prediction needs no SQL but ``held_out_sql``: the readings
``prediction.evaluate_track`` reads, which each engine hands to the same numpy code.

How the stages implement the contract of ``base`` (every per-reading step is a GROUP BY or a
filter, which engines run in parallel; windows run over blocks, a few per device-minute):

``pts``      the readings with their UTC day and block number.
``blk``      per block: its readings, first and last (time and position).
``blk2``     each block linked to the next (LEAD over blocks): whether the segment out of it
             is a gap, its span (first reading to the next block's first, or to its own last
             before a gap), speed (displacement over duration) and decision: 1 above
             ``start_speed``, 0 below ``stop_speed`` or on the first block after a gap, else
             none (NULL).
``blk3``     the state (the last decision so far: hysteresis as a running LAST_VALUE that
             ignores NULLs), the state before it, and the session number.
``blk4``     runs of equal state (a new run at every change and every session).
``core``     each moving run's first and last block; ``eblk`` those blocks.
``edge``     the readings of those blocks only, paired with their next (a window over a few
             readings per trip): the first and last segment at least as fast as
             ``stop_speed``, where a trip is trimmed to.
``core2``    each core, trimmed, and whether it starts a trip: not when the still spell since
             the previous core of the same session is shorter than ``min_stop``.
``tripb``    trips: their number, bounds, ends' positions and block range.
``blkmap``   every block with the trip whose block range holds it (carried forward), and the
             time and the smoothed distance (a chord) of the trip inside the block.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from .base import (
    DEVICE_DAYS,
    HEATMAP,
    STOPS,
    TRIPS,
    HeatCell,
    MotionParams,
    Stop,
    Summary,
    Trip,
)
from .prediction import PredictionParams

MICROS = 1_000_000
DAY_US = 86_400 * MICROS


@dataclass(frozen=True, slots=True)
class Dialect:
    """What an engine's SQL spells differently."""

    name: str
    int_div: str
    """Integer division of two non-negative BIGINTs, with ``{a}`` and ``{b}``."""
    last_ignore_nulls: str
    """The last non-NULL ``{value}`` of a window frame (before ``OVER``)."""

    def div(self, a: str, b: int | str) -> str:
        return self.int_div.format(a=f"({a})", b=f"({b})")

    def last(self, value: str) -> str:
        return self.last_ignore_nulls.format(value=value)


DUCKDB = Dialect("duckdb", "({a} // {b})", "last_value({value} IGNORE NULLS)")
SPARK = Dialect("spark", "({a} DIV {b})", "last_value({value}, true)")


def micros(seconds: float) -> int:
    """Epoch seconds (or a duration) as whole microseconds, the precision of the lake."""
    return round(seconds * MICROS)


def double(value: float) -> str:
    """``value`` as a SQL literal that both dialects read as the same DOUBLE."""
    if not math.isfinite(value):
        raise ValueError(f"not a finite number: {value}")
    return f"{value:.17e}"


@dataclass(frozen=True, slots=True)
class Stage:
    name: str
    sql: str
    keep: bool = False
    """Read more than once, or costly to recompute: an engine may materialise it."""


def _render(text: str, **values: object) -> str:
    # Stage references stay as {name} for the engine; only these parameters are filled in.
    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        return str(values[key]) if key in values else match.group(0)

    return re.sub(r"\{(\w+)\}", fill, text)


# --- readings and blocks ------------------------------------------------------------------

_PTS = """
SELECT device_id, us, rus, x, y, day,
       day * {per_day} + {in_day} AS blk
FROM (SELECT device_id, us, rus, x, y, {day} AS day FROM {points}) AS p
"""
"""Readings with their UTC day and block; blocks restart at midnight, so none spans two
days."""


def block_micros(params: MotionParams) -> int:
    """The block length in microseconds: ``smoothing``, at most ``max_gap`` (so that no
    segment inside a block is a gap), at least a microsecond."""
    return max(1, micros(min(params.smoothing, params.max_gap)))


def points_plan(dialect: Dialect, block_us: int = DAY_US) -> list[Stage]:
    """``pts``: the readings with their day and block number."""
    per_day = -(-DAY_US // block_us)
    sql = _render(
        _PTS,
        per_day=per_day,
        in_day=dialect.div(f"us - day * {DAY_US}", block_us),
        day=dialect.div("us", DAY_US),
    )
    return [Stage("pts", sql)]


# --- motion ------------------------------------------------------------------------------

_BLK = """
SELECT device_id, blk, MIN(day) AS day, COUNT(*) AS n,
       MIN(us) AS fus, MIN_BY(x, us) AS fx, MIN_BY(y, us) AS fy,
       MAX(us) AS lus, MAX_BY(x, us) AS lx, MAX_BY(y, us) AS ly
FROM {pts}
GROUP BY device_id, blk
"""

_BLK2 = """
SELECT device_id, blk, day, n, fus, fx, fy, lus, lx, ly, gap, after_gap, eus, ex, ey,
       eus - fus AS dus,
       speed,
       CASE WHEN speed > {start} THEN 1
            WHEN speed < {stop} THEN 0
            WHEN after_gap = 1 THEN 0 END AS decision
FROM (
  SELECT device_id, blk, day, n, fus, fx, fy, lus, lx, ly, gap, after_gap, eus, ex, ey,
         CASE WHEN eus > fus
              THEN SQRT((ex - fx) * (ex - fx) + (ey - fy) * (ey - fy)) / ((eus - fus) / 1e6)
         END AS speed
  FROM (
    SELECT device_id, blk, day, n, fus, fx, fy, lus, lx, ly, gap, after_gap,
           CASE WHEN gap = 0 AND nus IS NOT NULL THEN nus ELSE lus END AS eus,
           CASE WHEN gap = 0 AND nus IS NOT NULL THEN nx ELSE lx END AS ex,
           CASE WHEN gap = 0 AND nus IS NOT NULL THEN ny ELSE ly END AS ey
    FROM (
      SELECT device_id, blk, day, n, fus, fx, fy, lus, lx, ly, nus, nx, ny,
             CASE WHEN nus - lus > {max_gap_us} THEN 1 ELSE 0 END AS gap,
             CASE WHEN fus - plus > {max_gap_us} THEN 1 ELSE 0 END AS after_gap
      FROM (
        SELECT device_id, blk, day, n, fus, fx, fy, lus, lx, ly,
               LEAD(fus) OVER w AS nus, LEAD(fx) OVER w AS nx, LEAD(fy) OVER w AS ny,
               LAG(lus) OVER w AS plus
        FROM {blk}
        WINDOW w AS (PARTITION BY device_id ORDER BY blk)
      ) AS linked
    ) AS gaps
  ) AS spans
) AS speeds
"""

_BLK3 = """
SELECT device_id, blk, day, n, fus, fx, fy, lus, eus, ex, ey, dus, gap, after_gap, speed,
       COALESCE({last_decision} OVER (PARTITION BY device_id ORDER BY blk
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW), 0) AS moving,
       COALESCE({last_decision} OVER (PARTITION BY device_id ORDER BY blk
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS was_moving,
       CAST(SUM(after_gap) OVER (PARTITION BY device_id ORDER BY blk
                ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS sess
FROM {blk2}
"""

_BLK4 = """
SELECT device_id, blk, day, n, fus, fx, fy, lus, eus, ex, ey, dus, gap, speed, moving, sess,
       CAST(SUM(CASE WHEN moving <> was_moving OR after_gap = 1 THEN 1 ELSE 0 END)
         OVER (PARTITION BY device_id ORDER BY blk
               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS run_no
FROM {blk3}
"""

_CORE = """
SELECT device_id, run_no, MIN(sess) AS sess, MIN(blk) AS blk0, MAX(blk) AS blk1
FROM {blk4}
WHERE moving = 1
GROUP BY device_id, run_no
"""

_EBLK = """
SELECT /*+ BROADCAST(e) */ b.device_id, b.blk, b.eus, b.ex, b.ey
FROM {blk4} AS b
JOIN (SELECT device_id, blk0 AS blk FROM {core}
      UNION SELECT device_id, blk1 AS blk FROM {core}) AS e
  ON b.device_id = e.device_id AND b.blk = e.blk
"""

_EDGE = """
SELECT device_id, blk,
       MIN(us) FILTER (WHERE fast) AS fast0,
       MIN_BY(x, us) FILTER (WHERE fast) AS fx0,
       MIN_BY(y, us) FILTER (WHERE fast) AS fy0,
       MAX(us1) FILTER (WHERE fast) AS fast1,
       MAX_BY(x1, us) FILTER (WHERE fast) AS fx1,
       MAX_BY(y1, us) FILTER (WHERE fast) AS fy1
FROM (
  SELECT device_id, blk, us, x, y, us1, x1, y1,
         us1 > us AND SQRT((x1 - x) * (x1 - x) + (y1 - y) * (y1 - y))
                      >= {stop} * ((us1 - us) / 1e6) AS fast
  FROM (
    SELECT /*+ BROADCAST(e) */ p.device_id, p.blk, p.us, p.x, p.y,
           COALESCE(LEAD(p.us) OVER w, e.eus) AS us1,
           COALESCE(LEAD(p.x) OVER w, e.ex) AS x1,
           COALESCE(LEAD(p.y) OVER w, e.ey) AS y1
    FROM {pts} AS p
    JOIN {eblk} AS e ON p.device_id = e.device_id AND p.blk = e.blk
    WINDOW w AS (PARTITION BY p.device_id, p.blk ORDER BY p.us, p.rus)
  ) AS segments
) AS speeds
GROUP BY device_id, blk
"""

_CORE2 = """
SELECT device_id, run_no, sess, blk0, blk1, cus0, cx0, cy0, cus1, cx1, cy1,
       CAST(SUM(starts) OVER (PARTITION BY device_id ORDER BY run_no
                         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) AS trip_no
FROM (
  SELECT device_id, run_no, sess, blk0, blk1, cus0, cx0, cy0, cus1, cx1, cy1,
         CASE WHEN LAG(sess) OVER w = sess AND cus0 - LAG(cus1) OVER w < {min_stop_us}
              THEN 0 ELSE 1 END AS starts
  FROM (
    SELECT /*+ BROADCAST(c, f, l) */ c.device_id, c.run_no, c.sess, c.blk0, c.blk1,
           f.fast0 AS cus0, f.fx0 AS cx0, f.fy0 AS cy0,
           COALESCE(l.fast1, b.fus) AS cus1,
           COALESCE(l.fx1, b.fx) AS cx1,
           COALESCE(l.fy1, b.fy) AS cy1
    FROM {core} AS c
    JOIN {edge} AS f ON f.device_id = c.device_id AND f.blk = c.blk0
    JOIN {edge} AS l ON l.device_id = c.device_id AND l.blk = c.blk1
    JOIN {blk4} AS b ON b.device_id = c.device_id AND b.blk = c.blk1
    WHERE f.fast0 IS NOT NULL
  ) AS bounded
  WINDOW w AS (PARTITION BY device_id ORDER BY run_no)
) AS c
"""

_TRIPB = """
SELECT device_id, trip_no, MIN(sess) AS sess, MIN(blk0) AS blk0, MAX(blk1) AS blk1,
       MIN(cus0) AS tus0, MIN_BY(cx0, cus0) AS sx, MIN_BY(cy0, cus0) AS sy,
       MAX(cus1) AS tus1, MAX_BY(cx1, cus1) AS ex, MAX_BY(cy1, cus1) AS ey
FROM {core2}
GROUP BY device_id, trip_no
"""

_BLKMAP = """
SELECT device_id, blk, day, n, fus, fx, fy, lus, dus, gap, speed, sess, trip_no, in_us,
       CASE WHEN trip_no IS NULL THEN 0
            ELSE SQRT((qx - px) * (qx - px) + (qy - py) * (qy - py)) END AS in_d
FROM (
  SELECT /*+ BROADCAST(t) */ b.device_id, b.blk, b.day, b.n, b.fus, b.fx, b.fy, b.lus, b.dus,
         b.gap, b.speed, b.sess, t.trip_no,
         CASE WHEN t.trip_no IS NULL THEN 0
              ELSE LEAST(b.eus, t.tus1) - GREATEST(b.fus, t.tus0) END AS in_us,
         CASE WHEN b.fus >= t.tus0 THEN b.fx ELSE t.sx END AS px,
         CASE WHEN b.fus >= t.tus0 THEN b.fy ELSE t.sy END AS py,
         CASE WHEN b.eus <= t.tus1 THEN b.ex ELSE t.ex END AS qx,
         CASE WHEN b.eus <= t.tus1 THEN b.ey ELSE t.ey END AS qy
  FROM (
    SELECT /*+ BROADCAST(s) */ b.device_id, b.blk, b.day, b.n, b.fus, b.fx, b.fy, b.lus,
           b.eus, b.ex, b.ey, b.dus, b.gap, b.speed, b.sess,
           {last_trip} OVER (PARTITION BY b.device_id ORDER BY b.blk
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS carried
    FROM {blk4} AS b
    LEFT JOIN {tripb} AS s ON b.device_id = s.device_id AND b.blk = s.blk0
  ) AS b
  LEFT JOIN {tripb} AS t
    ON t.device_id = b.device_id AND t.trip_no = b.carried AND t.blk1 >= b.blk
) AS pieces
"""


def motion_plan(dialect: Dialect, params: MotionParams) -> list[Stage]:
    """The stages up to ``blkmap``: every block with its trip, if any, and the time and
    smoothed distance of the trip inside it; every motion output reads it."""
    values: dict[str, object] = {
        "start": double(params.start_speed),
        "stop": double(params.stop_speed),
        "min_stop_us": micros(params.min_stop),
        "max_gap_us": micros(params.max_gap),
        "last_decision": dialect.last("decision"),
    }
    values["last_trip"] = dialect.last("s.trip_no")
    stages = points_plan(dialect, block_micros(params))
    for name, text, keep in (
        ("blk", _BLK, False),
        ("blk2", _BLK2, False),
        ("blk3", _BLK3, False),
        ("blk4", _BLK4, True),
        ("core", _CORE, True),
        ("eblk", _EBLK, False),
        ("edge", _EDGE, True),
        ("core2", _CORE2, False),
        ("tripb", _TRIPB, True),
        ("blkmap", _BLKMAP, True),
    ):
        stages.append(Stage(name, _render(text, **values), keep))
    return stages


# --- outputs -----------------------------------------------------------------------------

TRIPS_SQL = """
SELECT t.device_id, t.trip_no, t.sess, t.tus0 AS us0, t.tus1 AS us1,
       t.sx AS start_x, t.sy AS start_y, t.ex AS end_x, t.ey AS end_y,
       m.distance, m.max_speed
FROM {tripb} AS t
JOIN (SELECT device_id, trip_no, SUM(in_d) AS distance, MAX(speed) AS max_speed
      FROM {blkmap} WHERE trip_no IS NOT NULL GROUP BY device_id, trip_no) AS m
  ON m.device_id = t.device_id AND m.trip_no = t.trip_no
"""
"""Trips, with their session (for ``STOPS_SQL``)."""

SESSIONS_SQL = """
SELECT device_id, sess, MIN(fus) AS us0, MAX(lus) AS us1,
       MIN_BY(fx, fus) AS x0, MIN_BY(fy, fus) AS y0
FROM {blkmap}
GROUP BY device_id, sess
"""

STOPS_SQL = """
SELECT device_id, us0, us1, x, y
FROM (
  SELECT t.device_id,
         COALESCE(LAG(t.us1) OVER (PARTITION BY t.device_id, t.sess ORDER BY t.us0), s.us0)
           AS us0,
         t.us0 AS us1,
         COALESCE(LAG(t.end_x) OVER (PARTITION BY t.device_id, t.sess ORDER BY t.us0), s.x0)
           AS x,
         COALESCE(LAG(t.end_y) OVER (PARTITION BY t.device_id, t.sess ORDER BY t.us0), s.y0)
           AS y
  FROM {trips} AS t
  JOIN {sessions} AS s ON t.device_id = s.device_id AND t.sess = s.sess
  UNION ALL
  SELECT s.device_id, COALESCE(l.us1, s.us0) AS us0, s.us1 AS us1,
         COALESCE(l.end_x, s.x0) AS x, COALESCE(l.end_y, s.y0) AS y
  FROM {sessions} AS s
  LEFT JOIN (
    SELECT device_id, sess, us1, end_x, end_y,
           ROW_NUMBER() OVER (PARTITION BY device_id, sess ORDER BY us0 DESC) AS back
    FROM {trips}
  ) AS l ON l.device_id = s.device_id AND l.sess = s.sess AND l.back = 1
) AS spans
WHERE us1 - us0 >= {min_stop_us}
"""
"""Stops from ``{trips}`` (``TRIPS_SQL``) and ``{sessions}`` (``SESSIONS_SQL``)."""

_SUMMARY_SQL = """
SELECT device_id, {day} AS day,
       MIN(fus) AS us0, MAX(lus) AS us1, CAST(SUM(n) AS BIGINT) AS readings,
       SUM(in_d) AS distance,
       CAST(SUM(in_us) AS BIGINT) AS moving_us,
       CAST(SUM(dus) - SUM(in_us) AS BIGINT) AS stopped_us,
       COALESCE(MAX(speed), 0) AS max_speed,
       CAST(SUM(gap) AS BIGINT) AS gaps
FROM {blkmap}
GROUP BY device_id{by_day}
"""

_DWELLS_SQL = """
SELECT device_id, day, x, y,
       LEAST(COALESCE(LEAD(us) OVER (PARTITION BY device_id ORDER BY us, rus) - us, 0),
             {max_gap_us}) AS dwell
FROM {pts}
"""
"""Each reading's dwell: the time to its device's next reading, at most ``max_gap``."""

_CELLS_SQL = """
SELECT {keys}, i, j, COUNT(*) AS readings, CAST(SUM(dwell) AS BIGINT) AS dwell_us
FROM (SELECT *, CAST(FLOOR(x / {cell}) AS BIGINT) AS i, CAST(FLOOR(y / {cell}) AS BIGINT) AS j
      FROM {dwells}) AS cells
GROUP BY {group}i, j
"""
"""Readings and dwell per cell of ``{dwells}`` (``x``, ``y``, ``dwell``; and ``device_id``
and ``day`` per device and day)."""


_HELD_OUT_SQL = """
SELECT /*+ BROADCAST(b) */ p.device_id, b.day, p.us, p.rus, p.x, p.y, b.us0
FROM {pts} AS p
JOIN (SELECT device_id, {day} AS day, MIN(us) AS us0, MAX(us) AS us1
      FROM {pts} GROUP BY {group}) AS b
  ON p.device_id = b.device_id AND {p_day} = b.day
WHERE p.us >= b.us0 + (b.us1 - b.us0) * {keep} - {margin_us}
"""


def held_out_sql(by_day: bool, params: PredictionParams) -> str:
    """The readings ``prediction.evaluate_track`` needs of every device (or device and day)
    over ``{pts}``, with the time of the track's first reading (``us0``): those from the
    held-out part less the models' history (and a second more, for rounding)."""
    return _render(
        _HELD_OUT_SQL,
        day="day" if by_day else "0",
        group="device_id, day" if by_day else "device_id",
        p_day="p.day" if by_day else "0",
        keep=double(1 - params.holdout),
        margin_us=micros(params.history + 1.0),
    )


def stops_sql(params: MotionParams) -> str:
    return _render(STOPS_SQL, min_stop_us=micros(params.min_stop))


def summary_sql(per_day: bool) -> str:
    """One row per device (and UTC day, by where each segment starts) from ``{blkmap}``."""
    return _render(_SUMMARY_SQL, day="day" if per_day else "0", by_day=", day" if per_day else "")


def heatmap_sql(cell: float, max_gap: float, per_device_day: bool) -> str:
    """Cells over ``{pts}``: of the whole fleet, or per device and day."""
    dwells = "(" + _render(_DWELLS_SQL, max_gap_us=micros(max_gap)) + ") AS dwells"
    return _render(heatmap_cells_sql(cell, per_device_day), dwells=dwells)


def heatmap_cells_sql(cell: float, per_device_day: bool) -> str:
    """The cells of ``{dwells}``: readings with their dwell, worked out as ``heatmap_sql``
    does or otherwise (``DuckDBEngine`` on sorted files)."""
    if not (math.isfinite(cell) and cell > 0):
        raise ValueError(f"cell must be a positive number of metres, not {cell}")
    keys = "device_id, day" if per_device_day else "'' AS device_id, 0 AS day"
    return _render(
        _CELLS_SQL,
        keys=keys,
        group="device_id, day, " if per_device_day else "",
        cell=double(cell),
    )


# --- results -----------------------------------------------------------------------------


def _seconds(us: int) -> float:
    return us / MICROS


def trip_list(table: pa.Table) -> list[Trip]:
    """``TRIPS_SQL`` rows as ``Trip``s in (device, start) order."""
    trips = []
    for r in table.to_pylist():
        duration = (r["us1"] - r["us0"]) / MICROS
        trips.append(
            Trip(
                device_id=r["device_id"],
                start=_seconds(r["us0"]),
                end=_seconds(r["us1"]),
                start_x=r["start_x"],
                start_y=r["start_y"],
                end_x=r["end_x"],
                end_y=r["end_y"],
                distance=r["distance"],
                duration=duration,
                avg_speed=r["distance"] / duration if duration > 0 else 0.0,
                max_speed=r["max_speed"] if r["max_speed"] is not None else 0.0,
            )
        )
    return sorted(trips, key=lambda t: (t.device_id, t.start))


def stop_list(table: pa.Table) -> list[Stop]:
    stops = [
        Stop(
            device_id=r["device_id"],
            start=_seconds(r["us0"]),
            end=_seconds(r["us1"]),
            duration=(r["us1"] - r["us0"]) / MICROS,
            x=r["x"],
            y=r["y"],
        )
        for r in table.to_pylist()
    ]
    return sorted(stops, key=lambda s: (s.device_id, s.start))


def summary_list(table: pa.Table) -> list[Summary]:
    summaries = [
        Summary(
            device_id=r["device_id"],
            start=_seconds(r["us0"]),
            end=_seconds(r["us1"]),
            distance=r["distance"],
            moving_time=r["moving_us"] / MICROS,
            stopped_time=r["stopped_us"] / MICROS,
            max_speed=r["max_speed"],
            readings=r["readings"],
            gaps=r["gaps"],
        )
        for r in table.to_pylist()
    ]
    return sorted(summaries, key=lambda s: s.device_id)


def cell_list(table: pa.Table) -> list[HeatCell]:
    """Cells in (i, j) order; sorted as Arrow, made from whole columns (a fleet's day at
    half a metre can be many cells)."""
    table = table.sort_by([("i", "ascending"), ("j", "ascending")])
    dwell = (table.column("dwell_us").to_numpy() / MICROS).tolist()
    return [
        HeatCell(i, j, n, d)
        for i, j, n, d in zip(
            table.column("i").to_pylist(),
            table.column("j").to_pylist(),
            table.column("readings").to_pylist(),
            dwell,
            strict=True,
        )
    ]


def window_days(start_us: int, end_us: int) -> tuple[int, int]:
    """The first and last UTC day numbers of a window."""
    return start_us // DAY_US, end_us // DAY_US


def device_list(devices: Sequence[str] | None) -> list[str] | None:
    """The window's devices without repeats (``None``: all)."""
    return None if devices is None else sorted(set(devices))


def empty_results() -> dict[str, pa.Table]:
    """What ``analyze`` reads back from a run without readings: no rows."""

    def empty(**columns: pa.DataType) -> pa.Table:
        return pa.table({name: pa.array([], kind) for name, kind in columns.items()})

    text, long, real = pa.string(), pa.int64(), pa.float64()
    return {
        TRIPS: empty(device_id=text, us0=long, us1=long, start_x=real, start_y=real,
                     end_x=real, end_y=real, distance=real, max_speed=real),
        STOPS: empty(device_id=text, us0=long, us1=long, x=real, y=real),
        DEVICE_DAYS: empty(device_id=text, day=long, us0=long, us1=long, readings=long,
                           distance=real, moving_us=long, stopped_us=long, max_speed=real,
                           gaps=long),
        HEATMAP: empty(device_id=text, day=long, i=long, j=long, readings=long, dwell_us=long),
    }  # fmt: skip
