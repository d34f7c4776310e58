"""The analyses on Spark (pyspark with Delta Lake): the same SQL as DuckDB's (``queries``)
over the same Delta table, for a lake or a cluster larger than one process.

The window's readings come from ``spark.read.format("delta")`` with the date partitions,
times and devices filtered before anything else; each stage is a temporary view (named
for this call, so that calls can share a session), the ones read more than once
checkpointed. Prediction runs the same numpy code per device (``groupBy().applyInArrow``).
``analyze`` writes the derived tables through Spark's Delta writer (``replaceWhere``),
into tables created by delta-rs at protocol reader 1 / writer 2 when missing.

Needs the ``spark`` extra and Java; the session comes from ``iotstream.spark``.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, timedelta

import numpy as np
import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError

from ..lake.base import READINGS
from ..spark.session import SparkNotInstalled, spark_session, stop_session
from . import queries as q
from .base import AnalyticsError, Window
from .engine import SqlEngine
from .prediction import DEFAULT_PARAMS, MODELS, PredictionParams, TrackScore, evaluate_track
from .tables import PARTITION, create_table, replace_predicate

try:
    from pyspark.errors import PySparkException
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql import functions as F
except ImportError as exc:  # pragma: no cover - the spark extra is missing
    raise SparkNotInstalled(
        "the 'pyspark' module is needed for Spark: pip install 'iotstream[spark]'"
    ) from exc

SCORES = (
    "device_id string, day long, model string, horizon double, "
    "ade_sum double, fde_sum double, samples long"
)


class SparkEngine(SqlEngine):
    """The analyses of the lake under ``url`` on ``session`` (default: the running session,
    else one from ``iotstream.spark.spark_session`` for the lake, stopped by ``close``).
    ``storage_options`` are delta-rs's, for the tables it creates."""

    name = "spark"
    dialect = q.SPARK

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, str] | None = None,
        *,
        session: SparkSession | None = None,
        prediction: PredictionParams = DEFAULT_PARAMS,
    ) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options) if storage_options is not None else None
        self.prediction = prediction
        if session is None:
            session = SparkSession.getActiveSession()
        # A session made here is stopped by close; one found running is someone else's.
        self._owned = session is None
        if session is None:
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
            session = spark_session(lake_url=url)
        self.session = session
        context = session.sparkContext
        if (context.master or "").startswith("local") and "PYSPARK_PYTHON" not in os.environ:
            # Local Python workers must be this interpreter, the one with iotstream, which
            # pyspark takes from PYSPARK_PYTHON only (else whatever `python3` is).
            context.pythonExec = sys.executable

    def uri(self, table: str) -> str:
        return f"{self.url}/{table}"

    def close(self) -> None:
        if self._owned:
            stop_session(self.session)

    @contextmanager
    def _run(self, window: Window, doing: str) -> Iterator[_SparkRun | None]:
        devices = q.device_list(window.devices)
        if devices is not None and not devices:
            yield None
            return
        try:
            exists = DeltaTable.is_deltatable(self.uri(READINGS), self.storage_options)
        except (DeltaError, OSError) as exc:
            raise AnalyticsError(f"{doing} failed: reading the lake: {exc}") from exc
        if not exists:
            yield None
            return
        try:
            run = _SparkRun(self.session, self._points(window, devices))
        except PySparkException as exc:
            raise AnalyticsError(f"{doing} failed: {_first_line(exc)}") from exc
        try:
            yield run
        except PySparkException as exc:
            raise AnalyticsError(f"{doing} failed: {_first_line(exc)}") from exc
        finally:
            run.close()

    def _points(self, window: Window, devices: list[str] | None) -> DataFrame:
        """The window's readings with a numeric x and y, as ``queries`` wants ``points``."""
        start, end = q.micros(window.start), q.micros(window.end)
        first, last = q.window_days(start, end)
        points = (
            self.session.read.format("delta")
            .load(self.uri(READINGS))
            .where(F.col(PARTITION).between(_date(first), _date(last)))
            .where(
                F.col("ts").between(
                    F.timestamp_micros(F.lit(start)), F.timestamp_micros(F.lit(end))
                )
            )
            .where(F.col("x").isNotNull() & F.col("y").isNotNull())
        )
        if devices is not None:
            points = points.where(F.col("device_id").isin(devices))
        return points.select(
            "device_id",
            F.unix_micros("ts").alias("us"),
            F.unix_micros("received_at").alias("rus"),
            "x",
            "y",
        )

    def _replace(
        self, name: str, rows: pa.Table, first_day: int, last_day: int, devices: list[str] | None
    ) -> None:
        uri = self.uri(name)
        try:
            create_table(uri, name, self.storage_options)
            frame = self.session.createDataFrame(rows)
            (
                frame.write.format("delta")
                .mode("overwrite")
                .option(
                    "replaceWhere",
                    replace_predicate(first_day, last_day, devices, backslashes=True),
                )
                .save(uri)
            )
        except (DeltaError, OSError) as exc:
            raise AnalyticsError(f"creating the {name} table failed: {exc}") from exc
        except PySparkException as exc:
            raise AnalyticsError(f"writing the {name} table failed: {_first_line(exc)}") from exc

    def _replace_all(
        self, rows: dict[str, pa.Table], first_day: int, last_day: int, devices: list[str] | None
    ) -> None:
        # Side by side: each write is mostly Delta's commit protocol, waiting on the store.
        with ThreadPoolExecutor(len(rows)) as pool:
            done = [
                pool.submit(self._replace, name, table, first_day, last_day, devices)
                for name, table in rows.items()
            ]
            for future in done:
                future.result()


class _SparkRun:
    """The stages as temporary views of one call. The kept ones are computed at once and
    checkpointed (``localCheckpoint``): later queries then plan over their rows, not over
    the whole tree of stages before them, which Spark would plan (and run) again for every
    query that reads them."""

    def __init__(self, session: SparkSession, points: DataFrame) -> None:
        self.session = session
        self.prefix = f"iotstream_{uuid.uuid4().hex[:12]}_"
        self.names: dict[str, str] = {}
        self._view("points", points)

    def _view(self, name: str, frame: DataFrame) -> None:
        view = self.prefix + name
        frame.createOrReplaceTempView(view)
        self.names[name] = view

    def stages(self, stages: Sequence[q.Stage]) -> None:
        for stage in stages:
            frame = self.session.sql(stage.sql.format_map(self.names))
            if stage.keep:
                frame = frame.localCheckpoint()
            self._view(stage.name, frame)

    def arrow(self, sql: str) -> pa.Table:
        table: pa.Table = self.session.sql(sql.format_map(self.names)).toArrow()
        return table

    def scores(
        self, by_day: bool, horizons: Sequence[float], params: PredictionParams
    ) -> list[tuple[str, int, TrackScore]]:
        frame = self.session.sql(q.held_out_sql(by_day, params).format_map(self.names))
        scored = frame.groupBy("device_id", "day").applyInArrow(
            _scorer(tuple(horizons), params), SCORES
        )
        found = [
            (
                r["device_id"],
                r["day"],
                TrackScore(r["model"], r["horizon"], r["ade_sum"], r["fde_sum"], r["samples"]),
            )
            for r in scored.toArrow().to_pylist()
        ]
        order = {model: n for n, model in enumerate(MODELS)}
        return sorted(found, key=lambda f: (f[0], f[1], order[f[2].model], f[2].horizon))

    def close(self) -> None:
        for view in self.names.values():
            self.session.catalog.dropTempView(view)


def _scorer(
    horizons: tuple[float, ...], params: PredictionParams
) -> Callable[[pa.Table], pa.Table]:
    # A function with type hints: pyspark tells Arrow UDFs apart by them.
    def score(table: pa.Table) -> pa.Table:
        return _score_group(table, horizons, params)

    return score


def _score_group(
    table: pa.Table, horizons: tuple[float, ...], params: PredictionParams
) -> pa.Table:
    """One device's (or device-day's) ``held_out_sql`` readings scored, in a Python worker."""
    order = np.lexsort((table["rus"].to_numpy(), table["us"].to_numpy()))
    t = table["us"].to_numpy()[order] / q.MICROS
    x = table["x"].to_numpy()[order]
    y = table["y"].to_numpy()[order]
    device, day = table["device_id"][0].as_py(), table["day"][0].as_py()
    first = table["us0"][0].as_py() / q.MICROS
    scores = evaluate_track(t, x, y, horizons, params, first=first)
    return pa.table(
        {
            "device_id": [device] * len(scores),
            "day": pa.array([day] * len(scores), pa.int64()),
            "model": [s.model for s in scores],
            "horizon": [s.horizon for s in scores],
            "ade_sum": [s.ade_sum for s in scores],
            "fde_sum": [s.fde_sum for s in scores],
            "samples": pa.array([s.samples for s in scores], pa.int64()),
        }
    )


def _date(day: int) -> date:
    return date(1970, 1, 1) + timedelta(days=day)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
