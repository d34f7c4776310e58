"""The analyses on DuckDB, in process, over the lake's Parquet files (no JVM): the default
engine, and the one the API runs on demand.

It reads the ``readings`` table as the lake's own queries do: the Delta table's current
files of the window's days only (a local directory: DuckDB reads the Parquet files; object
storage: a pyarrow dataset that delta-rs's object-store client serves), with the device and
time filters pushed down to Parquet row-group statistics. Each call runs the stages of
``queries`` in a cursor of its own (the costly ones as temporary tables, the others as
views), so that calls may run in parallel threads. ``analyze`` writes the derived tables
with delta-rs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from ..lake.base import READINGS
from ..lake.delta import lake_root
from . import queries as q
from .base import AnalyticsError, Window
from .engine import SqlEngine
from .prediction import DEFAULT_PARAMS, PredictionParams, TrackScore, evaluate_track
from .tables import PARTITION, create_table, day_text, replace_predicate

COMMIT_RETRIES = 20


class DuckDBEngine(SqlEngine):
    """The analyses of the lake under ``url`` (a directory or ``s3://bucket/prefix``, with
    delta-rs ``storage_options`` as for ``DeltaLake``) on ``threads`` DuckDB threads."""

    name = "duckdb"
    dialect = q.DUCKDB

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, str] | None = None,
        *,
        threads: int = 2,
        prediction: PredictionParams = DEFAULT_PARAMS,
    ) -> None:
        super().__init__()
        self.local, self.url = lake_root(url)
        self.storage_options = dict(storage_options) if storage_options is not None else None
        self.prediction = prediction
        self._duck = duckdb.connect(config={"threads": str(threads)})
        self._snapshot: DeltaTable | None = None
        self._snapshot_lock = threading.Lock()

    def uri(self, table: str) -> str:
        return f"{self.url}/{table}"

    def close(self) -> None:
        self._duck.close()

    @contextmanager
    def _run(self, window: Window, doing: str) -> Iterator[_DuckRun | None]:
        devices = q.device_list(window.devices)
        if devices is not None and not devices:
            yield None
            return
        start, end = q.micros(window.start), q.micros(window.end)
        try:
            source = self._source(*q.window_days(start, end))
        except (DeltaError, OSError) as exc:
            raise AnalyticsError(f"{doing} failed: reading the lake: {exc}") from exc
        if source is None:
            yield None
            return
        text, dataset = source
        cursor = self._duck.cursor()
        try:
            if dataset is not None:
                cursor.register("lake_source", dataset)
            where = [
                f"ts >= make_timestamp({start})::TIMESTAMPTZ",
                f"ts <= make_timestamp({end})::TIMESTAMPTZ",
                "x IS NOT NULL",
                "y IS NOT NULL",
            ]
            if devices is not None:
                where.append(f"device_id IN ({', '.join(_literal(d) for d in devices)})")
            cursor.execute(
                "CREATE TEMP VIEW points AS SELECT device_id, epoch_us(ts) AS us,"
                " epoch_us(received_at) AS rus, x, y FROM " + text + " WHERE " + " AND ".join(where)
            )
            yield _DuckRun(cursor)
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            raise AnalyticsError(f"{doing} failed: {exc}") from exc
        finally:
            cursor.close()

    def _source(self, first_day: int, last_day: int) -> tuple[str, Any] | None:
        """What DuckDB reads for the readings of these days: a ``read_parquet`` of the
        files, or (object storage) a pyarrow dataset to register as ``lake_source``."""
        partitions = [(PARTITION, ">=", day_text(first_day)), (PARTITION, "<=", day_text(last_day))]
        with self._snapshot_lock:
            try:
                if self._snapshot is None:
                    self._snapshot = DeltaTable(
                        self.uri(READINGS), storage_options=self.storage_options
                    )
                else:
                    self._snapshot.update_incremental()
            except TableNotFoundError:
                return None
            if not self.local:
                dataset = self._snapshot.to_pyarrow_dataset(file_pruning_predicate=partitions)
                return "lake_source", dataset
            files = self._snapshot.file_uris(file_pruning_predicate=partitions)
        if not files:
            return None
        quoted = ", ".join(_literal(path) for path in files)
        return f"read_parquet([{quoted}], hive_partitioning = false)", None

    def _replace(
        self, name: str, rows: pa.Table, first_day: int, last_day: int, devices: list[str] | None
    ) -> None:
        uri = self.uri(name)
        predicate = replace_predicate(first_day, last_day, devices)
        try:
            create_table(uri, name, self.storage_options)
            for attempt in range(COMMIT_RETRIES):
                try:
                    write_deltalake(
                        uri,
                        rows,
                        mode="overwrite",
                        predicate=predicate,
                        partition_by=[PARTITION],
                        storage_options=self.storage_options,
                    )
                    return
                except CommitFailedError:
                    if attempt == COMMIT_RETRIES - 1:
                        raise
        except (DeltaError, OSError, pa.ArrowException) as exc:
            raise AnalyticsError(f"writing the {name} table failed: {exc}") from exc


class _DuckRun:
    """The stages as temporary tables and views of one cursor, under their own names."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection) -> None:
        self.cursor = cursor
        self.names = {"points": "points"}

    def stages(self, stages: Sequence[q.Stage]) -> None:
        for stage in stages:
            kind = "TABLE" if stage.keep else "VIEW"
            self.cursor.execute(f"CREATE TEMP {kind} {stage.name} AS " + self._named(stage.sql))
            self.names[stage.name] = stage.name

    def arrow(self, sql: str) -> pa.Table:
        table: pa.Table = self.cursor.sql(self._named(sql)).to_arrow_table()
        return table

    def _named(self, sql: str) -> str:
        return sql.format_map(self.names)

    def scores(
        self, by_day: bool, horizons: Sequence[float], params: PredictionParams
    ) -> list[tuple[str, int, TrackScore]]:
        sql = q.held_out_sql(by_day, params) + " ORDER BY device_id, day, us, rus"
        table = self.arrow(sql)
        found: list[tuple[str, int, TrackScore]] = []
        for device, day, first, t, x, y in _tracks(table):
            scores = evaluate_track(t, x, y, horizons, params, first=first)
            found += [(device, day, score) for score in scores]
        return found


def _tracks(table: pa.Table) -> Iterator[tuple[str, int, float, Any, Any, Any]]:
    """A sorted ``held_out_sql`` table cut into ``(device, day, first, t, x, y)``."""
    if table.num_rows == 0:
        return
    devices = table["device_id"].to_numpy(zero_copy_only=False)
    days = table["day"].to_numpy()
    firsts = table["us0"].to_numpy() / q.MICROS
    t = table["us"].to_numpy() / q.MICROS
    x = table["x"].to_numpy()
    y = table["y"].to_numpy()
    change = np.ones(len(t), dtype=bool)
    change[1:] = (devices[1:] != devices[:-1]) | (days[1:] != days[:-1])
    starts = np.flatnonzero(change)
    ends = np.append(starts[1:], len(t))
    for a, b in zip(starts, ends, strict=True):
        yield str(devices[a]), int(days[a]), float(firsts[a]), t[a:b], x[a:b], y[a:b]


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
