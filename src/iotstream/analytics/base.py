"""The analytics seam: trips, stops, summaries, heatmaps and next-position prediction from the
lake's ``readings``, defined once and run by an engine (DuckDB in-process, or Spark).

Contract, checked by ``tests/analytics/suite.py`` on every engine with the same readings:

- A ``Window`` is a device-time range (epoch seconds, both ends included) and the devices to
  look at (``None``: every device in the lake). Readings without a numeric ``x`` and ``y``
  are left out; the others are taken in device-time order (arrival order breaks ties), so
  readings that arrived out of order count where they belong.
- A *segment* joins a device's reading to its next one; one longer than ``max_gap`` seconds
  is a *gap*: it ends a trip, starts a new *session* and is counted in ``Summary.gaps``,
  never as moving or stopped time.
- Motion (``MotionParams``): device time is cut into blocks of ``smoothing`` seconds
  (aligned on whole multiples since the epoch; at most ``max_gap``); a block's speed is the
  displacement over the segments starting in it divided by their duration (gaps left out),
  which smooths out position noise. A device starts moving in a block whose speed rises
  above ``start_speed`` and stops in one whose speed falls below ``stop_speed``
  (hysteresis: in between it keeps its state); it is still at the start of the window and
  after every gap. ``smoothing = 0``: every segment is a block of its own.
- A trip is a moving spell, trimmed to its first and last segment at least as fast as
  ``stop_speed`` (so its ends are the readings where the device set off and came to rest,
  not the block edges); trips separated by a still spell shorter than ``min_stop`` (within
  a session) are one trip. ``Trip.distance`` is the path length of its segments,
  ``avg_speed`` distance over duration, ``max_speed`` the highest block speed in it.
- A stop is a still spell of at least ``min_stop`` seconds between trips or the edges of a
  session; ``x``, ``y`` is where it began.
- Trips and stops are those of the readings in the window: one in progress at an edge of
  the window is cut there.
- ``summaries``: one per device with readings in the window: ``distance`` and
  ``moving_time`` are those of its trips, ``stopped_time`` the rest of its segments but
  gaps, ``max_speed`` the highest block speed, ``readings`` and ``gaps`` counted.
- ``heatmap``: readings and dwell seconds per ``cell``-metre square of the x/y plane; a
  reading's dwell is the time until the device's next reading, capped at ``max_gap``. Cell
  ``(i, j)`` covers ``i*cell <= x < (i+1)*cell`` and ``j*cell <= y < (j+1)*cell``.
- ``evaluate``: every model of ``prediction.MODELS`` scored on held-out (later) time of each
  device, ADE and FDE in metres at each horizon (``prediction.evaluate_track``).
- ``analyze``: every analysis of the window's whole UTC days, written to the lake's derived
  Delta tables (``DERIVED_TABLES``, schemas in ``tables``), replacing their rows of those
  days (and devices), so that a rerun does not duplicate them.
- Engines agree to ``TOLERANCE`` (relative, on distances, speeds and times).
- Errors of the engine or the storage are raised as ``AnalyticsError``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from ..errors import IotstreamError

TOLERANCE = 1e-6
"""Relative difference allowed between two engines' numbers for the same readings."""

TRIPS = "trips"
STOPS = "stops"
DEVICE_DAYS = "device_days"
HEATMAP = "heatmap"
PREDICTION_EVAL = "prediction_eval"
DERIVED_TABLES = (TRIPS, STOPS, DEVICE_DAYS, HEATMAP, PREDICTION_EVAL)
"""The Delta tables ``analyze`` writes beside ``readings``, each partitioned by ``date``."""

DEFAULT_CELL = 0.5
DEFAULT_HORIZONS = (1.0, 3.0)


class AnalyticsError(IotstreamError):
    """An engine failed to run an analysis; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Window:
    """Readings with ``start <= timestamp <= end`` of ``devices`` (``None``: all)."""

    start: float
    end: float
    devices: Sequence[str] | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.start) and math.isfinite(self.end)):
            raise ValueError(f"window bounds must be finite: {self.start}, {self.end}")
        if self.end < self.start:
            raise ValueError(f"window ends ({self.end}) before it starts ({self.start})")


DAY = 86_400


def whole_days(window: Window) -> Window:
    """``window`` widened to the UTC days it touches (to the last microsecond of the last)."""
    first = float(math.floor(window.start / DAY) * DAY)
    last = float(math.floor(window.end / DAY) * DAY)
    return Window(first, last + DAY - 1e-6, window.devices)


@dataclass(frozen=True, slots=True)
class MotionParams:
    """When a robot counts as moving; robot-scale defaults (metres, seconds)."""

    start_speed: float = 0.2
    stop_speed: float = 0.1
    min_stop: float = 10.0
    max_gap: float = 60.0
    smoothing: float = 2.0

    def __post_init__(self) -> None:
        for name in ("start_speed", "stop_speed", "min_stop", "max_gap", "smoothing"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")
        if self.stop_speed > self.start_speed:
            raise ValueError(
                f"stop_speed ({self.stop_speed}) is above start_speed ({self.start_speed})"
            )
        if self.max_gap <= 0:
            raise ValueError("max_gap must be above 0")


@dataclass(frozen=True, slots=True)
class Trip:
    device_id: str
    start: float
    end: float
    start_x: float
    start_y: float
    end_x: float
    end_y: float
    distance: float
    duration: float
    avg_speed: float
    max_speed: float


@dataclass(frozen=True, slots=True)
class Stop:
    device_id: str
    start: float
    end: float
    duration: float
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Summary:
    device_id: str
    start: float
    end: float
    """Device times of the first and last reading in the window."""
    distance: float
    moving_time: float
    stopped_time: float
    max_speed: float
    readings: int
    gaps: int


@dataclass(frozen=True, slots=True)
class HeatCell:
    i: int
    j: int
    readings: int
    dwell: float
    """Seconds."""


@dataclass(frozen=True, slots=True)
class ModelScore:
    model: str
    horizon: float
    ade: float
    fde: float
    samples: int


@dataclass(frozen=True, slots=True)
class Motion:
    """Trips, stops and summaries of one window, computed together."""

    trips: list[Trip]
    stops: list[Stop]
    summaries: list[Summary]


class AnalyticsEngine(ABC):
    """One engine running the analyses; blocking calls (the API runs them in a thread).
    Close it (or use ``with``) to release what it holds."""

    name: str

    @abstractmethod
    def trips(self, window: Window, params: MotionParams) -> list[Trip]:
        """Trips in ascending (device, start) order."""

    @abstractmethod
    def stops(self, window: Window, params: MotionParams) -> list[Stop]:
        """Stops in ascending (device, start) order."""

    @abstractmethod
    def summaries(self, window: Window, params: MotionParams) -> list[Summary]:
        """One summary per device, in device order."""

    def motion(self, window: Window, params: MotionParams) -> Motion:
        """``trips``, ``stops`` and ``summaries`` at once: an engine shares their work."""
        return Motion(
            self.trips(window, params), self.stops(window, params), self.summaries(window, params)
        )

    @abstractmethod
    def heatmap(self, window: Window, cell: float, max_gap: float) -> list[HeatCell]:
        """Non-empty cells in ascending (i, j) order."""

    @abstractmethod
    def evaluate(self, window: Window, horizons: Sequence[float]) -> list[ModelScore]:
        """Every model at every horizon, in (model, horizon) order: models as in
        ``prediction.MODELS``, horizons ascending."""

    @abstractmethod
    def analyze(
        self,
        window: Window,
        params: MotionParams,
        cell: float = DEFAULT_CELL,
        horizons: Sequence[float] = DEFAULT_HORIZONS,
    ) -> dict[str, int]:
        """Analyse the whole UTC days ``window`` touches and replace those days' rows (of
        ``window.devices``, or all) in every derived table; the rows written per table."""

    def close(self) -> None:  # noqa: B027 - most engines hold nothing to release
        """Release the engine's connections (a Spark session passed in stays running)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
