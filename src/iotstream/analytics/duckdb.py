"""The analyses on DuckDB, in process, over the lake's Parquet files (no JVM): the default
engine, and the one the API runs on demand.

It reads the ``readings`` table as the lake's own queries do: the Delta table's current
files of the window's days only (a local directory: DuckDB reads the Parquet files; object
storage: a pyarrow dataset that delta-rs's object-store client serves), with the device and
time filters pushed down to Parquet row-group statistics. Each call runs the stages of
``queries`` in a cursor of its own (the costly ones as temporary tables, the others as
views), so that calls may run in parallel threads. ``analyze`` writes the derived tables
with delta-rs.

One analysis runs otherwise when it can: the heatmap's dwell (each reading's time to its
device's next one) is a window function, which sorts every reading of the window, most of
the heatmap's time. Days that compaction sorted (one file each, by device and time) hold
each device's readings in time order already, so over them the dwell is a difference of
neighbours (``next_reading_dwell``) and only the cells are left to SQL
(``queries.heatmap_cells_sql``); the tests hold both ways to the same cells.
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
from ..lake.delta import lake_root, presorted_files
from . import queries as q
from .base import AnalyticsError, HeatCell, Window
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
    def _run(self, window: Window, doing: str, ordered: bool = False) -> Iterator[_DuckRun | None]:
        """``ordered``: list compacted days' files in day order when every day is one, so
        that the points come by day, then device, then time (``_DuckRun.ordered``)."""
        devices = q.device_list(window.devices)
        if devices is not None and not devices:
            yield None
            return
        start, end = q.micros(window.start), q.micros(window.end)
        try:
            source = self._source(*q.window_days(start, end), ordered=ordered)
        except (DeltaError, OSError) as exc:
            raise AnalyticsError(f"{doing} failed: reading the lake: {exc}") from exc
        if source is None:
            yield None
            return
        text, dataset, in_order = source
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
            yield _DuckRun(cursor, in_order)
        except (duckdb.Error, pa.ArrowException, OSError) as exc:
            raise AnalyticsError(f"{doing} failed: {exc}") from exc
        finally:
            cursor.close()

    def _source(
        self, first_day: int, last_day: int, ordered: bool = False
    ) -> tuple[str, Any, bool] | None:
        """What DuckDB reads for the readings of these days: a ``read_parquet`` of the
        files, or (object storage) a pyarrow dataset to register as ``lake_source``; and
        whether (asked with ``ordered``) the files are compacted days in day order."""
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
                return "lake_source", dataset, False
            files = self._snapshot.file_uris(file_pruning_predicate=partitions)
        if not files:
            return None
        in_order = presorted_files(files) if ordered else None
        quoted = ", ".join(_literal(path) for path in in_order or files)
        return f"read_parquet([{quoted}], hive_partitioning = false)", None, in_order is not None

    def heatmap(self, window: Window, cell: float, max_gap: float) -> list[HeatCell]:
        with self._run(window, "building the heatmap", ordered=True) as run:
            if run is None:
                return []
            if not run.ordered:
                run.stages(q.points_plan(self.dialect))
                return q.cell_list(run.arrow(q.heatmap_sql(cell, max_gap, per_device_day=False)))
            # A device's hash stands for it: only neighbours are compared.
            points = run.arrow("SELECT hash(device_id) AS device, us, x, y FROM {points}")
            dwell = next_reading_dwell(
                points["device"].to_numpy(), points["us"].to_numpy(), q.micros(max_gap)
            )
            run.register("dwells", points.append_column("dwell", pa.array(dwell)))
            return q.cell_list(run.arrow(q.heatmap_cells_sql(cell, per_device_day=False)))

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

    def __init__(self, cursor: duckdb.DuckDBPyConnection, ordered: bool = False) -> None:
        self.cursor = cursor
        self.ordered = ordered
        """Whether ``points`` come by day, then device, then time (DuckDB keeps a scan's
        order where a query does not sort)."""
        self.names = {"points": "points"}

    def stages(self, stages: Sequence[q.Stage]) -> None:
        for stage in stages:
            kind = "TABLE" if stage.keep else "VIEW"
            self.cursor.execute(f"CREATE TEMP {kind} {stage.name} AS " + self._named(stage.sql))
            self.names[stage.name] = stage.name

    def arrow(self, sql: str) -> pa.Table:
        table: pa.Table = self.cursor.sql(self._named(sql)).to_arrow_table()
        return table

    def register(self, name: str, table: pa.Table) -> None:
        """``table`` as the stage ``name``."""
        self.cursor.register(name, table)
        self.names[name] = name

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


def next_reading_dwell(device: np.ndarray, us: np.ndarray, max_gap_us: int) -> np.ndarray:
    """Each reading's time (microseconds) to its device's next reading, at most
    ``max_gap_us``, 0 for a device's last: the window function of ``queries.heatmap_sql``,
    for readings that come in runs, each one device's readings of a day in (time, received)
    order and the runs of a day before those of the next (sorted files in day order)."""
    dwell = np.zeros(len(us), np.int64)
    if len(us) < 2:
        return dwell
    same = device[1:] == device[:-1]
    np.subtract(us[1:], us[:-1], out=dwell[:-1], where=same)
    # The last reading of a run: its device's next one starts the device's next run.
    ends = np.append(np.flatnonzero(~same), len(us) - 1)
    starts = np.append(0, ends[:-1] + 1)
    following: dict[Any, int] = {}
    for start, end in zip(starts[::-1].tolist(), ends[::-1].tolist(), strict=True):
        key = device[start]
        if key in following:
            dwell[end] = us[following[key]] - us[end]
        following[key] = start
    np.minimum(dwell, max_gap_us, out=dwell)
    return dwell


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
