"""The derived Delta tables ``iotstream analyze`` writes beside ``readings``.

Each is partitioned by ``date`` (a UTC day) and kept at Delta protocol reader 1 / writer 2,
so that delta-rs and Spark both read and write it. Times are timestamps (microseconds, UTC)
as in ``readings``; durations are seconds, distances metres, speeds m/s.

- ``trips``: ``device_id``, ``start``, ``end``, ``start_x``, ``start_y``, ``end_x``,
  ``end_y``, ``distance``, ``duration``, ``avg_speed``, ``max_speed``; ``date``: the day it
  started.
- ``stops``: ``device_id``, ``start``, ``end``, ``duration``, ``x``, ``y``; ``date``: the
  day it started.
- ``device_days``: one row per device and day: ``start`` and ``end`` (its first and last
  reading), ``distance``, ``moving_time``, ``stopped_time``, ``max_speed``, ``readings``,
  ``gaps``; a segment counts on the day it starts.
- ``heatmap``: per device, day and cell: ``cell`` (metres), ``i``, ``j``, ``readings``,
  ``dwell`` (seconds); the fleet's map is the sum over devices.
- ``prediction_eval``: per device, day, model and horizon: ``ade``, ``fde`` (metres) and
  ``samples``, scored on the later part of that device-day.

A run replaces the rows of the days it analysed (and of its devices, when it names them):
``replace_predicate`` says which. Engines build the rows with ``derived`` from their query
results, so that both write the same values in the same schemas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from typing import TypeAlias

import numpy as np
import numpy.typing as npt
import pyarrow as pa
from deltalake import DeltaTable

from .base import DERIVED_TABLES, DEVICE_DAYS, HEATMAP, PREDICTION_EVAL, STOPS, TRIPS
from .prediction import TrackScore
from .queries import DAY_US, MICROS

PARTITION = "date"
TIMESTAMP = pa.timestamp("us", tz="UTC")

SCHEMAS: dict[str, pa.Schema] = {
    TRIPS: pa.schema(
        [
            ("device_id", pa.string()),
            ("start", TIMESTAMP),
            ("end", TIMESTAMP),
            ("start_x", pa.float64()),
            ("start_y", pa.float64()),
            ("end_x", pa.float64()),
            ("end_y", pa.float64()),
            ("distance", pa.float64()),
            ("duration", pa.float64()),
            ("avg_speed", pa.float64()),
            ("max_speed", pa.float64()),
            (PARTITION, pa.date32()),
        ]
    ),
    STOPS: pa.schema(
        [
            ("device_id", pa.string()),
            ("start", TIMESTAMP),
            ("end", TIMESTAMP),
            ("duration", pa.float64()),
            ("x", pa.float64()),
            ("y", pa.float64()),
            (PARTITION, pa.date32()),
        ]
    ),
    DEVICE_DAYS: pa.schema(
        [
            ("device_id", pa.string()),
            ("start", TIMESTAMP),
            ("end", TIMESTAMP),
            ("distance", pa.float64()),
            ("moving_time", pa.float64()),
            ("stopped_time", pa.float64()),
            ("max_speed", pa.float64()),
            ("readings", pa.int64()),
            ("gaps", pa.int64()),
            (PARTITION, pa.date32()),
        ]
    ),
    HEATMAP: pa.schema(
        [
            ("device_id", pa.string()),
            ("cell", pa.float64()),
            ("i", pa.int64()),
            ("j", pa.int64()),
            ("readings", pa.int64()),
            ("dwell", pa.float64()),
            (PARTITION, pa.date32()),
        ]
    ),
    PREDICTION_EVAL: pa.schema(
        [
            ("device_id", pa.string()),
            ("model", pa.string()),
            ("horizon", pa.float64()),
            ("ade", pa.float64()),
            ("fde", pa.float64()),
            ("samples", pa.int64()),
            (PARTITION, pa.date32()),
        ]
    ),
}
assert tuple(SCHEMAS) == DERIVED_TABLES


def day_text(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


Column: TypeAlias = pa.ChunkedArray | pa.Array


def _ints(column: Column) -> npt.NDArray[np.int64]:
    return np.asarray(column.to_numpy(), dtype=np.int64)


def _times(column: Column) -> pa.Array:
    return pa.array(_ints(column), pa.int64()).cast(TIMESTAMP)


def _dates(column: Column) -> pa.Array:
    return pa.array(_ints(column).astype(np.int32), pa.int32()).cast(pa.date32())


def _days(column: Column) -> pa.Array:
    """The UTC day of each time in microseconds."""
    return _dates(pa.array(_ints(column) // DAY_US))


def _seconds(us: npt.NDArray[np.int64]) -> pa.Array:
    return pa.array(us / MICROS, pa.float64())


def _build(name: str, columns: Mapping[str, pa.Array | pa.ChunkedArray]) -> pa.Table:
    schema = SCHEMAS[name]
    table = pa.table({f.name: columns[f.name] for f in schema})
    return table.cast(schema)


def derived(
    results: Mapping[str, pa.Table], cell: float, scores: Sequence[tuple[str, int, TrackScore]]
) -> dict[str, pa.Table]:
    """The derived tables' rows from an engine's results: ``trips`` (``TRIPS_SQL``),
    ``stops`` (``STOPS_SQL``), ``device_days`` (``summary_sql(per_day=True)``), ``heatmap``
    (``heatmap_sql(per_device_day=True)``), and the ``(device, day, score)`` of every
    device-day's evaluation. Rows sorted, so that engines write them alike."""
    trips = results[TRIPS].sort_by([("device_id", "ascending"), ("us0", "ascending")])
    duration = (_ints(trips["us1"]) - _ints(trips["us0"])) / MICROS
    distance = np.asarray(trips["distance"].to_numpy(), dtype=np.float64)
    avg = np.divide(distance, duration, out=np.zeros_like(distance), where=duration > 0)
    stops = results[STOPS].sort_by([("device_id", "ascending"), ("us0", "ascending")])
    days = results[DEVICE_DAYS].sort_by([("device_id", "ascending"), ("day", "ascending")])
    cells = results[HEATMAP].sort_by(
        [("device_id", "ascending"), ("day", "ascending"), ("i", "ascending"), ("j", "ascending")]
    )
    ordered = sorted(scores, key=lambda s: (s[0], s[1], s[2].model, s[2].horizon))
    return {
        TRIPS: _build(
            TRIPS,
            {
                "device_id": trips["device_id"],
                "start": _times(trips["us0"]),
                "end": _times(trips["us1"]),
                "start_x": trips["start_x"],
                "start_y": trips["start_y"],
                "end_x": trips["end_x"],
                "end_y": trips["end_y"],
                "distance": trips["distance"],
                "duration": pa.array(duration, pa.float64()),
                "avg_speed": pa.array(avg, pa.float64()),
                "max_speed": trips["max_speed"],
                PARTITION: _days(trips["us0"]),
            },
        ),
        STOPS: _build(
            STOPS,
            {
                "device_id": stops["device_id"],
                "start": _times(stops["us0"]),
                "end": _times(stops["us1"]),
                "duration": _seconds(_ints(stops["us1"]) - _ints(stops["us0"])),
                "x": stops["x"],
                "y": stops["y"],
                PARTITION: _days(stops["us0"]),
            },
        ),
        DEVICE_DAYS: _build(
            DEVICE_DAYS,
            {
                "device_id": days["device_id"],
                "start": _times(days["us0"]),
                "end": _times(days["us1"]),
                "distance": days["distance"],
                "moving_time": _seconds(_ints(days["moving_us"])),
                "stopped_time": _seconds(_ints(days["stopped_us"])),
                "max_speed": days["max_speed"],
                "readings": days["readings"],
                "gaps": days["gaps"],
                PARTITION: _dates(days["day"]),
            },
        ),
        HEATMAP: _build(
            HEATMAP,
            {
                "device_id": cells["device_id"],
                "cell": pa.array([cell] * cells.num_rows, pa.float64()),
                "i": cells["i"],
                "j": cells["j"],
                "readings": cells["readings"],
                "dwell": _seconds(_ints(cells["dwell_us"])),
                PARTITION: _dates(cells["day"]),
            },
        ),
        PREDICTION_EVAL: _build(
            PREDICTION_EVAL,
            {
                "device_id": pa.array([d for d, _, _ in ordered], pa.string()),
                "model": pa.array([s.model for _, _, s in ordered], pa.string()),
                "horizon": pa.array([s.horizon for _, _, s in ordered], pa.float64()),
                "ade": pa.array(
                    [s.ade_sum / s.samples if s.samples else None for _, _, s in ordered],
                    pa.float64(),
                ),
                "fde": pa.array(
                    [s.fde_sum / s.samples if s.samples else None for _, _, s in ordered],
                    pa.float64(),
                ),
                "samples": pa.array([s.samples for _, _, s in ordered], pa.int64()),
                PARTITION: pa.array([day for _, day, _ in ordered], pa.int32()).cast(pa.date32()),
            },
        ),
    }


def _quote(text: str, backslashes: bool) -> str:
    if backslashes:  # Spark SQL's string literals escape with backslashes
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return "'" + text.replace("'", "''") + "'"


def create_table(uri: str, name: str, storage_options: Mapping[str, str] | None) -> None:
    """Create the derived table ``name`` at ``uri`` unless it exists (both engines write it)."""
    DeltaTable.create(
        uri,
        SCHEMAS[name],
        partition_by=[PARTITION],
        mode="ignore",
        name=name,
        storage_options=dict(storage_options) if storage_options is not None else None,
    )


def replace_predicate(
    first_day: int, last_day: int, devices: Sequence[str] | None, *, backslashes: bool = False
) -> str:
    """The rows a run over these days (and devices) replaces, as a Delta predicate (for
    delta-rs; ``backslashes`` for Spark's ``replaceWhere``)."""
    text = f"{PARTITION} >= '{day_text(first_day)}' AND {PARTITION} <= '{day_text(last_day)}'"
    if devices is not None:
        names = ", ".join(_quote(d, backslashes) for d in sorted(set(devices)))
        text += f" AND device_id IN ({names})"
    return text
