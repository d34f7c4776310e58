"""Analytics on the lake: trips, stops, summaries, heatmaps and next-position prediction,
defined once (``queries``, ``prediction``) and run by an engine: ``DuckDBEngine`` (in
process, the default) or ``SparkEngine`` (``iotstream.analytics.spark``, the ``spark``
extra). ``create_engine`` makes one by name."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import (
    DEFAULT_CELL,
    DEFAULT_HORIZONS,
    DERIVED_TABLES,
    DEVICE_DAYS,
    HEATMAP,
    PREDICTION_EVAL,
    STOPS,
    TOLERANCE,
    TRIPS,
    AnalyticsEngine,
    AnalyticsError,
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
from .prediction import MODELS, PredictionParams, best_model, evaluate_track, predict

if TYPE_CHECKING:
    from .duckdb import DuckDBEngine

ENGINES = ("duckdb", "spark")

__all__ = [
    "DEFAULT_CELL",
    "DEFAULT_HORIZONS",
    "DERIVED_TABLES",
    "DEVICE_DAYS",
    "ENGINES",
    "HEATMAP",
    "MODELS",
    "PREDICTION_EVAL",
    "STOPS",
    "TOLERANCE",
    "TRIPS",
    "AnalyticsEngine",
    "AnalyticsError",
    "DuckDBEngine",
    "HeatCell",
    "ModelScore",
    "Motion",
    "MotionParams",
    "PredictionParams",
    "Stop",
    "Summary",
    "Trip",
    "Window",
    "best_model",
    "create_engine",
    "evaluate_track",
    "predict",
    "whole_days",
]


def create_engine(
    name: str, url: str, storage_options: Mapping[str, str] | None = None
) -> AnalyticsEngine:
    """The engine ``name`` (one of ``ENGINES``) over the lake under ``url``. Spark starts (or
    joins) a session from ``iotstream.spark.spark_session``; without the ``spark`` extra it
    raises a ``ConfigError`` naming it."""
    if name == "duckdb":
        from .duckdb import DuckDBEngine

        return DuckDBEngine(url, storage_options)
    if name == "spark":
        from .spark import SparkEngine

        return SparkEngine(url, storage_options)
    raise ValueError(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}")


def __getattr__(name: str) -> Any:
    # DuckDB, pandas and pyarrow take 170 MB and half a second to import: a process that
    # never analyses (the bridge, the processor) does not pay for them.
    if name == "DuckDBEngine":
        from .duckdb import DuckDBEngine

        return DuckDBEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
