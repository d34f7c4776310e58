"""The analyses' flow, once for every SQL engine: which stages of ``queries`` each analysis
runs, what it reads back, and how ``analyze`` turns the results into the derived tables. An
engine (``duckdb``, ``spark``) provides a ``Run`` over a window's readings, and the writing
of a derived table."""

from __future__ import annotations

import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import pyarrow as pa

from . import queries as q
from .base import (
    DEFAULT_CELL,
    DEFAULT_HORIZONS,
    DERIVED_TABLES,
    DEVICE_DAYS,
    HEATMAP,
    STOPS,
    TRIPS,
    AnalyticsEngine,
    HeatCell,
    ModelScore,
    Motion,
    MotionParams,
    Stop,
    Summary,
    Trip,
    Window,
    whole_days,
)
from .prediction import DEFAULT_PARAMS, PredictionParams, TrackScore, combine
from .tables import derived


class Run(Protocol):
    """Queries over one window's readings (``points``), in one engine session."""

    def stages(self, stages: Sequence[q.Stage]) -> None:
        """Define the stages, in order, for the queries that follow."""

    def arrow(self, sql: str) -> pa.Table:
        """The result of ``sql`` (stage references as ``{name}``)."""

    def scores(
        self, by_day: bool, horizons: Sequence[float], params: PredictionParams
    ) -> list[tuple[str, int, TrackScore]]:
        """``prediction.evaluate_track`` of every device's (or device-day's) readings of
        ``queries.held_out_sql`` over ``{pts}``, in device-time order: ``(device, day,
        score)`` in device, day, model and horizon order."""


KEPT_MOTIONS = 64
"""At most this many recent motion analyses are kept for reuse."""


def _stop_inputs() -> list[q.Stage]:
    return [q.Stage("trips", q.TRIPS_SQL, keep=True), q.Stage("sessions", q.SESSIONS_SQL)]


MotionKey = tuple[float, float, tuple[str, ...] | None, MotionParams]


class SqlEngine(AnalyticsEngine):
    """An engine running the SQL of ``queries`` in ``dialect``.

    ``trips``, ``stops`` and ``summaries`` are parts of one ``motion`` analysis, which is
    kept for ``reuse`` seconds per window and parameters: a client that asks for a device's
    trips, stops and summary of the same window (a dashboard does) gets them for one run."""

    dialect: q.Dialect
    prediction: PredictionParams = DEFAULT_PARAMS
    reuse: float = 2.0

    def __init__(self) -> None:
        self._kept: dict[MotionKey, tuple[float, Motion]] = {}
        self._kept_lock = threading.Lock()

    @abstractmethod
    def _run(self, window: Window, doing: str) -> AbstractContextManager[Run | None]:
        """A run over the readings of ``window``, or ``None`` when there are none to read;
        its errors raised as ``AnalyticsError`` saying what was being ``doing``."""

    @abstractmethod
    def _replace(
        self, name: str, rows: pa.Table, first_day: int, last_day: int, devices: list[str] | None
    ) -> None:
        """Replace derived table ``name``'s rows of those days (and devices) with ``rows``."""

    def trips(self, window: Window, params: MotionParams) -> list[Trip]:
        return self.motion(window, params).trips

    def stops(self, window: Window, params: MotionParams) -> list[Stop]:
        return self.motion(window, params).stops

    def summaries(self, window: Window, params: MotionParams) -> list[Summary]:
        return self.motion(window, params).summaries

    def motion(self, window: Window, params: MotionParams) -> Motion:
        devices = q.device_list(window.devices)
        key = (window.start, window.end, None if devices is None else tuple(devices), params)
        now = time.monotonic()
        with self._kept_lock:
            for old in [k for k, (at, _) in self._kept.items() if now - at > self.reuse]:
                del self._kept[old]
            kept = self._kept.get(key)
        if kept is None:
            kept = (now, self._motion(window, params))
            with self._kept_lock:
                if len(self._kept) < KEPT_MOTIONS:
                    self._kept[key] = kept
        found = kept[1]  # lists of frozen values: copies keep callers apart
        return Motion(list(found.trips), list(found.stops), list(found.summaries))

    def _motion(self, window: Window, params: MotionParams) -> Motion:
        with self._run(window, "finding trips and stops") as run:
            if run is None:
                return Motion([], [], [])
            run.stages([*q.motion_plan(self.dialect, params), *_stop_inputs()])
            return Motion(
                q.trip_list(run.arrow("SELECT * FROM {trips}")),
                q.stop_list(run.arrow(q.stops_sql(params))),
                q.summary_list(run.arrow(q.summary_sql(per_day=False))),
            )

    def heatmap(self, window: Window, cell: float, max_gap: float) -> list[HeatCell]:
        sql = q.heatmap_sql(cell, max_gap, per_device_day=False)
        with self._run(window, "building the heatmap") as run:
            if run is None:
                return []
            run.stages(q.points_plan(self.dialect))
            return q.cell_list(run.arrow(sql))

    def evaluate(self, window: Window, horizons: Sequence[float]) -> list[ModelScore]:
        found: list[tuple[str, int, TrackScore]] = []
        with self._run(window, "evaluating predictions") as run:
            if run is not None:
                run.stages(q.points_plan(self.dialect))
                found = run.scores(False, horizons, self.prediction)
        return combine([[score] for _, _, score in found])

    def analyze(
        self,
        window: Window,
        params: MotionParams,
        cell: float = DEFAULT_CELL,
        horizons: Sequence[float] = DEFAULT_HORIZONS,
    ) -> dict[str, int]:
        devices = q.device_list(window.devices)
        if devices is not None and not devices:
            return dict.fromkeys(DERIVED_TABLES, 0)
        wide = whole_days(window)
        days = Window(wide.start, wide.end, devices)
        first_day, last_day = q.window_days(q.micros(days.start), q.micros(days.end))
        heatmap = q.heatmap_sql(cell, params.max_gap, per_device_day=True)
        results: dict[str, pa.Table] = {}
        scores: list[tuple[str, int, TrackScore]] = []
        with self._run(days, "analysing") as run:
            if run is not None:
                run.stages([*q.motion_plan(self.dialect, params), *_stop_inputs()])
                results[TRIPS] = run.arrow("SELECT * FROM {trips}")
                results[STOPS] = run.arrow(q.stops_sql(params))
                results[DEVICE_DAYS] = run.arrow(q.summary_sql(per_day=True))
                results[HEATMAP] = run.arrow(heatmap)
                scores = run.scores(True, horizons, self.prediction)
        rows = derived(results or q.empty_results(), cell, scores)
        self._replace_all(rows, first_day, last_day, devices)
        return {name: table.num_rows for name, table in rows.items()}

    def _replace_all(
        self, rows: dict[str, pa.Table], first_day: int, last_day: int, devices: list[str] | None
    ) -> None:
        for name, table in rows.items():
            self._replace(name, table, first_day, last_day, devices)
