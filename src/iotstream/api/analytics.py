"""Analytics on the lake: trips, stops, summaries, heatmaps and next-position prediction.

- ``GET /api/devices/{device_id}/trips``       trips that start in the window
- ``GET /api/devices/{device_id}/stops``       stops of at least ``minStop`` seconds
- ``GET /api/devices/{device_id}/summary``     distance, moving and stopped time, top speed
- ``GET /api/analytics/heatmap``               readings and dwell per square cell of the plane
- ``GET /api/devices/{device_id}/prediction``  where a device will be in ``horizon`` seconds

Windows are in device time, given as in the history API (epoch seconds or ISO 8601); the
default is today (UTC) up to now. A window of up to a day is computed on demand by the DuckDB
engine, in a worker thread (at most ``ANALYSES_AT_ONCE`` at a time); a longer one is read
from the tables ``iotstream analyze`` writes. An id no device reported gives an empty
answer; a lake that is off or failing is a 503, a bad parameter a 422 that names it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Annotated, Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as compute
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from starlette.requests import HTTPConnection

from ..analytics import (
    DEFAULT_CELL,
    DEVICE_DAYS,
    HEATMAP,
    PREDICTION_EVAL,
    STOPS,
    TRIPS,
    AnalyticsEngine,
    AnalyticsError,
    HeatCell,
    ModelScore,
    MotionParams,
    Stop,
    Summary,
    Trip,
    Window,
    best_model,
    create_engine,
    predict,
)
from ..analytics.tables import PARTITION
from ..errors import IotstreamError
from ..lake.base import Lake, ReadingQuery
from ..lake.delta import DeltaLake
from ..models import TIMESTAMP
from . import schemas
from .dependencies import KnownDeviceIdPath, LakeDep, StoreDep
from .history import device_list, invalid, parse_time
from .schemas import ERROR

router = APIRouter(tags=["analytics"])

pc: Any = compute
"""pyarrow's compute functions, made at import: they have no type hints."""
MICROS = 1_000_000

T = TypeVar("T")

DAY = 86_400.0
ON_DEMAND_SPAN = DAY
"""The longest window computed on demand; longer ones come from the derived tables."""
ANALYSES_AT_ONCE = 2
"""Analyses running at a time per lake; more requests wait their turn."""
MAX_CELLS = 1_000_000
MIN_CELL = 0.01
DEFAULT_HORIZON = 2.0
MAX_HORIZON = 60.0
RECENT = 10.0
"""Seconds of readings before a device's newest one read for a prediction (the models use
the last ``PredictionParams.history`` of them)."""
RECENT_READINGS = 10_000
UNSCORED_MODEL = "velocity"
"""The model of a device with too little history to score the models on: constant velocity,
which is the last position for a device standing still."""
ON_DEMAND = "on-demand"
DERIVED = "derived"
EVALUATED = 3600.0
"""Seconds of a device's history its models are evaluated on, when ``iotstream analyze`` has
not evaluated them."""
EVALUATION_KEPT = 60.0
"""Seconds an on-demand evaluation is reused for the same device and horizon."""

_DEFAULT_MOTION = MotionParams()


# --- parameters -------------------------------------------------------------------------


def _day_start(seconds: float) -> float:
    day = datetime.fromtimestamp(seconds, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def analysis_window(start: str | None, end: str | None) -> tuple[float, float]:
    """``(from, to)`` asked for: ``to`` defaults to now, ``from`` to the start of ``to``'s UTC
    day."""
    to = parse_time("to", end) if end is not None else None
    since = parse_time("from", start) if start is not None else None
    if to is None:
        to = time.time() if since is None else max(time.time(), since)
    if since is None:
        since = _day_start(to)
    if since > to:
        raise invalid("from", f"from ({since}) is after to ({to})", start)
    return since, to


FromQuery = Annotated[
    str | None,
    Query(
        alias="from",
        description="Start of the window (device time): epoch seconds or ISO 8601 (no zone: "
        "UTC). Default: the start of `to`'s UTC day.",
        examples=["2026-11-26T00:00:00Z", "1764115200"],
    ),
]
ToQuery = Annotated[
    str | None, Query(description="End of the window, included; as `from`. Default: now.")
]


def _speed(name: str, default: float, text: str) -> Any:
    return Query(alias=name, ge=0, allow_inf_nan=False, description=f"{text} Default {default}.")


def motion(
    start_speed: Annotated[
        float,
        _speed("startSpeed", _DEFAULT_MOTION.start_speed, "m/s: moving starts above this."),
    ] = _DEFAULT_MOTION.start_speed,
    stop_speed: Annotated[
        float,
        _speed(
            "stopSpeed",
            _DEFAULT_MOTION.stop_speed,
            "m/s: moving stops below this (at most `startSpeed`).",
        ),
    ] = _DEFAULT_MOTION.stop_speed,
    min_stop: Annotated[
        float,
        Query(
            alias="minStop",
            ge=0,
            allow_inf_nan=False,
            description="Seconds: a shorter still spell does not end a trip, and is no stop. "
            f"Default {_DEFAULT_MOTION.min_stop}.",
        ),
    ] = _DEFAULT_MOTION.min_stop,
    max_gap: Annotated[
        float,
        Query(
            alias="maxGap",
            gt=0,
            allow_inf_nan=False,
            description="Seconds: a longer silence ends a trip and counts as a gap. "
            f"Default {_DEFAULT_MOTION.max_gap}.",
        ),
    ] = _DEFAULT_MOTION.max_gap,
    smoothing: Annotated[
        float,
        Query(
            ge=0,
            allow_inf_nan=False,
            description=f"Seconds the speed is smoothed over. Default {_DEFAULT_MOTION.smoothing}.",
        ),
    ] = _DEFAULT_MOTION.smoothing,
) -> MotionParams:
    """The motion parameters of a request; the contract's defaults."""
    if stop_speed > start_speed:
        raise invalid(
            "stopSpeed", f"stopSpeed ({stop_speed}) is above startSpeed ({start_speed})", stop_speed
        )
    return MotionParams(start_speed, stop_speed, min_stop, max_gap, smoothing)


MotionDep = Annotated[MotionParams, Depends(motion)]


# --- windows ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Span:
    """The window an answer covers. One longer than ``ON_DEMAND_SPAN`` is read from the
    derived tables, which hold whole UTC days: it covers every day the asked window touches."""

    start: float
    end: float
    derived: bool

    @property
    def days(self) -> tuple[date, date]:
        return _utc_date(self.start), _utc_date(self.end)


def _utc_date(seconds: float) -> date:
    return datetime.fromtimestamp(seconds, UTC).date()


def span_of(start: str | None, end: str | None, params: MotionParams | None = None) -> Span:
    """The window of a request; a long one widened to whole UTC days, and then only with the
    default motion parameters (the derived tables were computed with ``iotstream
    analyze``'s)."""
    since, until = analysis_window(start, end)
    if until - since <= ON_DEMAND_SPAN:
        return Span(since, until, False)
    if params is not None and params != _DEFAULT_MOTION:
        name, value = next(
            (alias, getattr(params, attribute))
            for attribute, alias in _MOTION_NAMES.items()
            if getattr(params, attribute) != getattr(_DEFAULT_MOTION, attribute)
        )
        raise invalid(
            name,
            "a window longer than a day is read from the tables `iotstream analyze` wrote, "
            "with its motion parameters: ask for a day at most to choose them",
            value,
        )
    return Span(_day_start(since), _day_start(until) + DAY - 1e-6, True)


_MOTION_NAMES = {
    "start_speed": "startSpeed",
    "stop_speed": "stopSpeed",
    "min_stop": "minStop",
    "max_gap": "maxGap",
    "smoothing": "smoothing",
}


# --- the derived tables -----------------------------------------------------------------


class NotAnalyzed(IotstreamError):
    """A derived table is not in the lake: ``iotstream analyze`` never wrote it."""


def _not_analyzed(exc: NotAnalyzed) -> RequestValidationError:
    return invalid(
        "from",
        f"a window longer than a day is read from the {exc} table that `iotstream analyze` "
        "writes, and this lake has none yet: run `iotstream analyze`, or ask for a day at most",
        None,
    )


@dataclass(frozen=True, slots=True)
class DerivedTables:
    """The tables ``iotstream analyze`` writes beside ``readings`` (``analytics.tables``),
    read a range of UTC days at a time; blocking."""

    url: str
    storage_options: dict[str, str] | None

    def rows(
        self,
        name: str,
        days: tuple[date, date] | None,
        devices: Sequence[str] | None,
    ) -> pa.Table:
        """The rows of ``name`` of those days (``None``: all) and devices (``None``: all);
        raises ``NotAnalyzed`` when the table does not exist."""
        uri = f"{self.url}/{name}"
        try:
            if not DeltaTable.is_deltatable(uri, self.storage_options):
                raise NotAnalyzed(name)
            table = DeltaTable(uri, storage_options=self.storage_options)
            condition: Any = None
            pruning: list[tuple[str, str, str]] | None = None
            if days is not None:
                first, last = days
                pruning = [
                    (PARTITION, ">=", first.isoformat()),
                    (PARTITION, "<=", last.isoformat()),
                ]
                condition = (pc.field(PARTITION) >= first) & (pc.field(PARTITION) <= last)
            if devices is not None:
                chosen = pc.field("device_id").isin(list(devices))
                condition = chosen if condition is None else condition & chosen
            dataset = table.to_pyarrow_dataset(file_pruning_predicate=pruning)
            result: pa.Table = dataset.to_table(filter=condition)
            return result
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise AnalyticsError(f"reading the derived table {name} failed: {exc}") from exc

    def trips(self, days: tuple[date, date], device_id: str) -> list[Trip]:
        return _derived_trips(self.rows(TRIPS, days, [device_id]))

    def stops(self, days: tuple[date, date], device_id: str) -> list[Stop]:
        return _derived_stops(self.rows(STOPS, days, [device_id]))

    def summary(self, days: tuple[date, date], device_id: str) -> Summary | None:
        return _derived_summary(self.rows(DEVICE_DAYS, days, [device_id]), device_id)

    def heatmap(
        self, days: tuple[date, date], devices: Sequence[str] | None, cell: float
    ) -> list[HeatCell]:
        return _derived_heatmap(self.rows(HEATMAP, days, devices), cell)

    def scores(self, device_id: str) -> list[ModelScore]:
        """The models' scores on the newest day ``iotstream analyze`` evaluated the device on;
        none when it never did."""
        try:
            return _derived_scores(self.rows(PREDICTION_EVAL, None, [device_id]))
        except NotAnalyzed:
            return []


def _seconds(column: pa.ChunkedArray) -> list[float]:
    """A timestamp column as epoch seconds."""
    micros: list[int] = pc.cast(column, pa.int64()).to_pylist()
    return [us / MICROS for us in micros]


def _derived_trips(table: pa.Table) -> list[Trip]:
    table = table.sort_by([("device_id", "ascending"), ("start", "ascending")])
    columns = [table.column(n).to_pylist() for n in _TRIP_COLUMNS]
    starts, ends = _seconds(table.column("start")), _seconds(table.column("end"))
    return [
        Trip(row[0], start, end, *row[1:])
        for row, start, end in zip(zip(*columns, strict=True), starts, ends, strict=True)
    ]


_TRIP_COLUMNS = (
    "device_id", "start_x", "start_y", "end_x", "end_y", "distance", "duration", "avg_speed",
    "max_speed",
)  # fmt: skip


def _derived_stops(table: pa.Table) -> list[Stop]:
    table = table.sort_by([("device_id", "ascending"), ("start", "ascending")])
    starts, ends = _seconds(table.column("start")), _seconds(table.column("end"))
    columns = [table.column(n).to_pylist() for n in ("device_id", "duration", "x", "y")]
    return [
        Stop(device, start, end, duration, x, y)
        for (device, duration, x, y), start, end in zip(
            zip(*columns, strict=True), starts, ends, strict=True
        )
    ]


def _derived_summary(table: pa.Table, device_id: str) -> Summary | None:
    """The device's days added up: times and distances summed, the top speed the highest."""
    if table.num_rows == 0:
        return None
    starts, ends = _seconds(table.column("start")), _seconds(table.column("end"))

    def total(name: str) -> Any:
        return pc.sum(table.column(name)).as_py()

    return Summary(
        device_id,
        min(starts),
        max(ends),
        total("distance"),
        total("moving_time"),
        total("stopped_time"),
        pc.max(table.column("max_speed")).as_py(),
        total("readings"),
        total("gaps"),
    )


def _derived_heatmap(table: pa.Table, cell: float) -> list[HeatCell]:
    """The days' and devices' cells added up, merged into ``cell``-metre cells: a whole
    multiple of the cell the table was written with."""
    if table.num_rows == 0:
        return []
    written = np.asarray(table.column("cell").to_numpy(), dtype=np.float64)
    ratio = cell / written
    whole = np.rint(ratio)
    if not np.all((whole >= 1) & (np.abs(ratio - whole) <= 1e-9 * ratio)):
        sizes = ", ".join(f"{size:g} m" for size in sorted(set(written.tolist())))
        raise invalid(
            "cell",
            f"over a window longer than a day the heatmap comes from `iotstream analyze`'s "
            f"cells of {sizes}: ask for a whole multiple of that",
            cell,
        )
    k = whole.astype(np.int64)
    merged = pa.table(
        {
            "i": np.floor_divide(table.column("i").to_numpy(), k),
            "j": np.floor_divide(table.column("j").to_numpy(), k),
            "readings": table.column("readings"),
            "dwell": table.column("dwell"),
        }
    )
    sums = (
        merged.group_by(["i", "j"])
        .aggregate([("readings", "sum"), ("dwell", "sum")])
        .sort_by([("i", "ascending"), ("j", "ascending")])
    )
    return [
        HeatCell(i, j, readings, dwell)
        for i, j, readings, dwell in zip(
            sums.column("i").to_pylist(),
            sums.column("j").to_pylist(),
            sums.column("readings_sum").to_pylist(),
            sums.column("dwell_sum").to_pylist(),
            strict=True,
        )
    ]


def _derived_scores(table: pa.Table) -> list[ModelScore]:
    """The evaluation of the newest day ``iotstream analyze`` scored the device on."""
    if table.num_rows == 0:
        return []
    newest = pc.max(table.column(PARTITION))
    day = table.filter(pc.equal(table.column(PARTITION), newest))
    return [
        ModelScore(row["model"], row["horizon"], row["ade"], row["fde"], row["samples"])
        for row in day.to_pylist()
        if row["samples"]
    ]


# --- running analyses -------------------------------------------------------------------


def lake_failed(exc: BaseException) -> HTTPException:
    return HTTPException(503, f"the lake failed: {str(exc) or type(exc).__name__}")


@dataclass
class Analyst:
    """The analytics engine of one lake and its derived tables, and what the routes keep
    beside them: a gate letting ``ANALYSES_AT_ONCE`` analyses run at a time, and recent
    on-demand evaluations."""

    lake: Lake
    engine: AnalyticsEngine
    derived: DerivedTables
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ANALYSES_AT_ONCE))
    evaluations: dict[tuple[str, float], tuple[float, list[ModelScore]]] = field(
        default_factory=dict
    )

    async def run(self, analysis: Callable[..., T], *args: Any) -> T:
        """``analysis(*args)`` in a worker thread; a failing lake or engine is a 503."""
        async with self.gate:
            try:
                return await asyncio.to_thread(analysis, *args)
            except NotAnalyzed as exc:
                raise _not_analyzed(exc) from exc
            except (IotstreamError, OSError) as exc:
                raise lake_failed(exc) from exc

    async def evaluation(
        self, device_id: str, end: float, horizon: float
    ) -> tuple[list[ModelScore], str]:
        """How well every model predicts the device, and where that comes from: the
        ``prediction_eval`` table when ``iotstream analyze`` scored the device (its newest
        day), else its ``EVALUATED`` seconds up to ``end`` evaluated now at ``horizon``
        (kept for ``EVALUATION_KEPT`` seconds)."""
        scores = await self.run(self.derived.scores, device_id)
        if scores:
            return scores, PREDICTION_EVAL
        key = (device_id, horizon)
        now = time.monotonic()
        for old in [k for k, (at, _) in self.evaluations.items() if now - at >= EVALUATION_KEPT]:
            del self.evaluations[old]
        kept = self.evaluations.get(key)
        if kept is not None:
            return kept[1], ON_DEMAND
        window = Window(end - EVALUATED, end, [device_id])
        scores = await self.run(self.engine.evaluate, window, [horizon])
        self.evaluations[key] = (now, scores)
        return scores, ON_DEMAND

    def close(self) -> None:
        self.engine.close()


async def analyst(connection: HTTPConnection, lake: LakeDep) -> Analyst:
    """The app's ``Analyst`` for its lake, made on first use: the DuckDB engine over the
    lake's tables. A coroutine, so that it runs on the event loop, never two at once."""
    state = connection.app.state
    current: Analyst | None = getattr(state, "analyst", None)
    if current is not None and current.lake is lake:
        return current
    if not isinstance(lake, DeltaLake):
        raise HTTPException(503, "analytics need the Delta lake")
    try:
        engine = create_engine("duckdb", lake.url, lake.storage_options)
    except (IotstreamError, OSError, duckdb.Error) as exc:
        raise lake_failed(exc) from exc
    if current is not None:
        current.close()
    current = Analyst(lake, engine, DerivedTables(lake.url, lake.storage_options))
    state.analyst = current
    return current


AnalystDep = Annotated[Analyst, Depends(analyst)]


# --- shaping answers --------------------------------------------------------------------


def _params(span: Span, params: MotionParams) -> schemas.Motion | None:
    if span.derived:
        return None
    return schemas.Motion(
        startSpeed=params.start_speed,
        stopSpeed=params.stop_speed,
        minStop=params.min_stop,
        maxGap=params.max_gap,
        smoothing=params.smoothing,
    )


def _source(span: Span) -> str:
    return DERIVED if span.derived else ON_DEMAND


def _trip(t: Trip) -> schemas.Trip:
    return schemas.Trip(
        start=t.start,
        end=t.end,
        startX=t.start_x,
        startY=t.start_y,
        endX=t.end_x,
        endY=t.end_y,
        distance=t.distance,
        duration=t.duration,
        avgSpeed=t.avg_speed,
        maxSpeed=t.max_speed,
    )


def _summary(s: Summary) -> schemas.Summary:
    return schemas.Summary(
        start=s.start,
        end=s.end,
        distance=s.distance,
        movingTime=s.moving_time,
        stoppedTime=s.stopped_time,
        maxSpeed=s.max_speed,
        readings=s.readings,
        gaps=s.gaps,
    )


# --- routes -----------------------------------------------------------------------------

_RESPONSES: dict[int | str, dict[str, Any]] = {404: ERROR, 422: ERROR, 503: ERROR}


@router.get(
    "/api/devices/{device_id}/trips", response_model=schemas.DeviceTrips, responses=_RESPONSES
)
async def device_trips(
    device_id: KnownDeviceIdPath,
    run: AnalystDep,
    params: MotionDep,
    start: FromQuery = None,
    to: ToQuery = None,
) -> schemas.DeviceTrips:
    """The device's trips that start in the window, oldest first: where and when each set
    off and came to rest, its distance (metres), duration (seconds), average and top speed
    (m/s). A trip ends at a still spell of at least `minStop` seconds or a silence longer
    than `maxGap`; one in progress at an edge of the window is cut there. Over a window
    longer than a day, the trips `iotstream analyze` found on the days it touches."""
    span = span_of(start, to, params)
    if span.derived:
        trips = await run.run(run.derived.trips, span.days, device_id)
    else:
        trips = await run.run(run.engine.trips, Window(span.start, span.end, [device_id]), params)
    return schemas.DeviceTrips(
        deviceId=device_id,
        start=span.start,
        end=span.end,
        source=_source(span),
        params=_params(span, params),
        trips=[_trip(t) for t in trips if t.device_id == device_id],
    )


@router.get(
    "/api/devices/{device_id}/stops", response_model=schemas.DeviceStops, responses=_RESPONSES
)
async def device_stops(
    device_id: KnownDeviceIdPath,
    run: AnalystDep,
    params: MotionDep,
    start: FromQuery = None,
    to: ToQuery = None,
) -> schemas.DeviceStops:
    """The device's still spells of at least `minStop` seconds in the window, oldest first:
    when, how long (seconds) and where it stood."""
    span = span_of(start, to, params)
    if span.derived:
        stops = await run.run(run.derived.stops, span.days, device_id)
    else:
        stops = await run.run(run.engine.stops, Window(span.start, span.end, [device_id]), params)
    return schemas.DeviceStops(
        deviceId=device_id,
        start=span.start,
        end=span.end,
        source=_source(span),
        params=_params(span, params),
        stops=[
            schemas.Stop(start=s.start, end=s.end, duration=s.duration, x=s.x, y=s.y)
            for s in stops
            if s.device_id == device_id
        ],
    )


@router.get(
    "/api/devices/{device_id}/summary",
    response_model=schemas.DeviceSummary,
    responses=_RESPONSES,
)
async def device_summary(
    device_id: KnownDeviceIdPath,
    run: AnalystDep,
    params: MotionDep,
    start: FromQuery = None,
    to: ToQuery = None,
) -> schemas.DeviceSummary:
    """The device's window in numbers: distance and moving time (those of its trips),
    stopped time, top speed, readings, and silences longer than `maxGap` (`gaps`, counted
    as neither moving nor stopped). `summary` is null when the device has no reading with a
    position in the window."""
    span = span_of(start, to, params)
    if span.derived:
        summary = await run.run(run.derived.summary, span.days, device_id)
    else:
        window = Window(span.start, span.end, [device_id])
        found = await run.run(run.engine.summaries, window, params)
        summary = next((s for s in found if s.device_id == device_id), None)
    return schemas.DeviceSummary(
        deviceId=device_id,
        start=span.start,
        end=span.end,
        source=_source(span),
        params=_params(span, params),
        summary=None if summary is None else _summary(summary),
    )


@router.get(
    "/api/analytics/heatmap",
    response_model=schemas.Heatmap,
    responses={422: ERROR, 503: ERROR},
)
async def heatmap(
    run: AnalystDep,
    start: FromQuery = None,
    to: ToQuery = None,
    cell: Annotated[
        float,
        Query(
            ge=MIN_CELL,
            allow_inf_nan=False,
            description=f"Metres: the side of a square cell, at least {MIN_CELL}. Default "
            f"{DEFAULT_CELL}; over a window longer than a day, a whole multiple of the cell "
            "`iotstream analyze` used.",
        ),
    ] = DEFAULT_CELL,
    devices: Annotated[
        list[str] | None,
        Query(description="Comma-separated device ids (or the parameter repeated); default all"),
    ] = None,
    max_gap: Annotated[
        float,
        Query(
            alias="maxGap",
            gt=0,
            allow_inf_nan=False,
            description="Seconds: a reading's dwell is the time to the device's next reading, "
            f"at most this. Default {_DEFAULT_MOTION.max_gap}.",
        ),
    ] = _DEFAULT_MOTION.max_gap,
) -> schemas.Heatmap:
    """Where the devices were: the readings and the dwell seconds in every non-empty square
    cell of the plane, in ascending (i, j) order. Cell (i, j) covers `i*cell <= x <
    (i+1)*cell` and `j*cell <= y < (j+1)*cell`, in metres."""
    span = span_of(start, to, MotionParams(max_gap=max_gap))
    ids = device_list(devices)
    if span.derived:
        cells = await run.run(run.derived.heatmap, span.days, ids, cell)
    else:
        window = Window(span.start, span.end, ids)
        cells = await run.run(run.engine.heatmap, window, cell, max_gap)
    if len(cells) > MAX_CELLS:
        raise invalid(
            "cell", f"{len(cells):,} cells is more than {MAX_CELLS:,}: choose a larger cell", cell
        )
    return schemas.Heatmap(
        start=span.start,
        end=span.end,
        source=_source(span),
        devices=None if ids is None else [str(d) for d in ids],
        cell=cell,
        maxGap=None if span.derived else max_gap,
        cells=[schemas.HeatCell(i=c.i, j=c.j, readings=c.readings, dwell=c.dwell) for c in cells],
    )


def _position(row: dict[str, Any]) -> tuple[float, float, float] | None:
    """``(timestamp, x, y)`` of a reading or a state with a numeric position."""
    values: list[float] = []
    for name in (TIMESTAMP, "x", "y"):
        value = row.get(name)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return None
        if not math.isfinite(value):
            return None
        values.append(float(value))
    t, x, y = values
    return t, x, y


@router.get(
    "/api/devices/{device_id}/prediction",
    response_model=schemas.DevicePrediction,
    responses=_RESPONSES,
)
async def device_prediction(
    device_id: KnownDeviceIdPath,
    lake: LakeDep,
    store: StoreDep,
    run: AnalystDep,
    horizon: Annotated[
        float,
        Query(
            gt=0,
            le=MAX_HORIZON,
            allow_inf_nan=False,
            description=f"Seconds ahead of the device's newest reading, at most {MAX_HORIZON}.",
        ),
    ] = DEFAULT_HORIZON,
) -> schemas.DevicePrediction:
    """Where the device will be `horizon` seconds after its newest reading, by the model
    that predicted its history best (`last`, `velocity` or `kalman`), with that model's
    evaluated error; while its history is too short to score them on, by `velocity`
    (constant velocity) and without an error. The models see the device's last few seconds
    of readings: from the lake, and its latest state in the live store when that is newer
    (the lake is about a second behind). Their error comes from the `prediction_eval` table
    `iotstream analyze` writes, else from evaluating them on the device's last hour now. A
    device the store does not know, or without a recent position, has no prediction."""
    state = await store.device(device_id)
    newest = _position(state) if state is not None else None
    end = newest[0] if newest is not None else time.time()
    recent = ReadingQuery(end - RECENT, end, [device_id], limit=RECENT_READINGS)
    try:
        rows = await lake.readings(recent)
    except (IotstreamError, OSError) as exc:
        raise lake_failed(exc) from exc
    track = [p for p in map(_position, rows) if p is not None]
    if newest is not None and (not track or newest[0] > track[-1][0]):
        track.append(newest)
    if not track:
        return schemas.DevicePrediction(
            deviceId=device_id, horizon=horizon, model=None, prediction=None, basis=None, error=None
        )
    scores, source = await run.evaluation(device_id, track[-1][0], horizon)
    known = any(s.samples > 0 for s in scores)
    model = best_model(scores, horizon) if known else UNSCORED_MODEL
    t, x, y = zip(*track, strict=True)
    px, py = predict(t, x, y, horizon, model)
    scored = [s for s in scores if s.model == model and s.samples > 0]
    error = None
    if scored:
        nearest = min(scored, key=lambda s: (abs(s.horizon - horizon), s.horizon))
        error = schemas.PredictionError(
            horizon=nearest.horizon,
            ade=nearest.ade,
            fde=nearest.fde,
            samples=nearest.samples,
            source=source,
        )
    last_t, last_x, last_y = track[-1]
    return schemas.DevicePrediction(
        deviceId=device_id,
        horizon=horizon,
        model=model,
        prediction=schemas.Position(timestamp=last_t + horizon, x=px, y=py),
        basis=schemas.Basis(timestamp=last_t, x=last_x, y=last_y, readings=len(track)),
        error=error,
    )
