"""The lake on Delta Lake tables: written with delta-rs (``deltalake``, no JVM), queried with
DuckDB, on a local directory or on S3-compatible object storage.

Tables, each partitioned by ``date`` (a Delta ``date``, the UTC day of ``ts`` for readings and
of ``received_at`` for the others), kept at protocol reader 1 / writer 2 so Spark reads and
writes them:

- ``readings``: ``device_id`` string, ``ts`` and ``received_at`` timestamps (microseconds, UTC),
  ``x``, ``y``, ``z`` nullable doubles, ``fields`` (JSON text of every other field, or null).
  A coordinate that is not a float (an int, or a string sent on ``sensors/{id}/x``) also goes
  to ``fields`` as sent, so that every value reads back exactly; an int is also its column,
  as a double, so rect filters see it.
- ``raw_messages``: ``topic``, ``payload`` binary, ``received_at``.
- ``rejected``: ``topic``, ``payload`` binary, ``size`` long, ``reason``, ``detail``,
  ``received_at``.

Queries read the table's current file list: on a local directory DuckDB reads the Parquet
files directly; on object storage DuckDB scans a pyarrow dataset that delta-rs's own
object-store client serves (DuckDB's httpfs extension is not needed). Either way only the
date partitions of the window are listed, and DuckDB pushes the device and time filters
down to Parquet row-group statistics, which compaction makes selective by sorting. A page of
readings is one query whose sorted result streams out as Arrow record batches.

Compaction sorts each day's files with DuckDB and writes the result with pyarrow: times
delta-encoded, dictionaries for text only, zstd level 6 (``_write_sorted``).

Blocking calls run in worker threads. Writers race with compaction through Delta's
optimistic concurrency: a commit that loses is retried, never merged by hand.

The log: the archiver commits to every table about once a second, and each commit is a file
in the table's ``_delta_log``. Delta keeps them for ``delta.logRetentionDuration``, 30 days by
default: some 2.6 million files a table. The tables are set to keep an hour
(``log_retention_hours``); past it, delta-rs deletes them as it writes checkpoints (one
every hundred commits). A checkpoint holds the application transactions, so the archiver's
positions survive; what goes is time travel further back, which vacuum's hour ends anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import orjson
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from deltalake import (
    ColumnProperties,
    CommitProperties,
    DeltaTable,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake._internal import DeltaFileSystemHandler
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.fs import DeltaStorageHandler
from deltalake.transaction import AddAction, RemoveAction

from ..health import Health
from ..models import Batch, CommandReply, RawMessage, Reading, Rejected
from ..simplify import warm as warm_simplify
from .base import (
    COMMAND_REPLIES,
    RAW_MESSAGES,
    READINGS,
    REJECTED,
    TABLES,
    Lake,
    LakeError,
    RawQuery,
    ReadingQuery,
    reading_rows,
)
from .fields import encode_fields, readings_fields
from .fields import warm as warm_cut

log = logging.getLogger(__name__)

T = TypeVar("T")

MICROS = 1_000_000
DAY_MICROS = 86_400 * MICROS
COORDINATES = ("x", "y", "z")
TIMESTAMP = pa.timestamp("us", tz="UTC")
PARTITION = "date"
LOG_RETENTION = "delta.logRetentionDuration"

SCHEMAS: dict[str, pa.Schema] = {
    READINGS: pa.schema(
        [
            ("device_id", pa.string()),
            ("ts", TIMESTAMP),
            ("received_at", TIMESTAMP),
            ("x", pa.float64()),
            ("y", pa.float64()),
            ("z", pa.float64()),
            ("fields", pa.string()),
            (PARTITION, pa.date32()),
        ]
    ),
    RAW_MESSAGES: pa.schema(
        [
            ("topic", pa.string()),
            ("payload", pa.binary()),
            ("received_at", TIMESTAMP),
            (PARTITION, pa.date32()),
        ]
    ),
    REJECTED: pa.schema(
        [
            ("topic", pa.string()),
            ("payload", pa.binary()),
            ("size", pa.int64()),
            ("reason", pa.string()),
            ("detail", pa.string()),
            ("received_at", TIMESTAMP),
            (PARTITION, pa.date32()),
        ]
    ),
    COMMAND_REPLIES: pa.schema(
        [
            ("device_id", pa.string()),
            ("command_id", pa.string()),
            ("status", pa.string()),
            ("result", pa.string()),
            ("error", pa.string()),
            ("received_at", TIMESTAMP),
            (PARTITION, pa.date32()),
        ]
    ),
}

# How compaction orders each table's rows: as their queries read them, so that DuckDB skips
# the row groups of other devices and other hours by their statistics.
SORT_KEYS: dict[str, list[str]] = {
    READINGS: ["device_id", "ts", "received_at"],
    RAW_MESSAGES: ["topic", "received_at"],
    REJECTED: ["received_at"],
    COMMAND_REPLIES: ["device_id", "received_at"],
}
# Row groups small enough for that skipping to matter (a device-hour at 10 Hz is 36,000 rows).
ROW_GROUP_ROWS = 128 * 1024
# Compaction names its files so; a query of one device over such files, one per day, reads
# them day by day in the order it needs and skips the sort (``presorted_files``).
SORTED_FILE_PREFIX = "sorted-"
_PARTITION_DIR = re.compile(rf"/{PARTITION}=(\d{{4}}-\d{{2}}-\d{{2}})/([^/]+)$")

COMMIT_RETRIES = 20
# The archiver's files live until compaction rewrites them: written cheaply, without trying
# a dictionary on every column (half the cost of an append) but the device ids.
APPEND_WRITER = WriterProperties(
    default_column_properties=ColumnProperties(dictionary_enabled=False),
    column_properties={"device_id": ColumnProperties(dictionary_enabled=True)},
)
READ_BATCH_ROWS = 100_000


def micros(seconds: float) -> int:
    """Epoch seconds as whole microseconds, the precision the tables keep."""
    return round(seconds * MICROS)


def _day(us: int) -> int:
    return us // DAY_MICROS


def _day_text(day: int) -> str:
    return (date(1970, 1, 1) + timedelta(days=day)).isoformat()


def _timestamps(us: list[int] | np.ndarray) -> pa.Array:
    return pa.array(us, pa.int64()).cast(TIMESTAMP)


def _dates(us: list[int] | np.ndarray) -> pa.Array:
    """The partition column: the UTC day of each time."""
    return pa.array(np.asarray(us, np.int64) // DAY_MICROS, pa.int32()).cast(pa.date32())


def _micros_array(seconds: list[float]) -> np.ndarray:
    """``micros`` of every value at once (the same rounding: half to even)."""
    return np.rint(np.array(seconds, np.float64) * MICROS).astype(np.int64)


def readings_table(readings: Sequence[Reading]) -> pa.Table:
    """The ``readings`` rows of ``readings``."""
    ts = _micros_array([r.timestamp for r in readings])
    fields = [r.fields for r in readings]
    # What came from a coordinates message: float x and y (and z), the rest cut from it.
    rest, slow = readings_fields(readings)
    xs: list[Any] = [f.get("x") for f in fields]
    ys: list[Any] = [f.get("y") for f in fields]
    zs: list[Any] = [f.get("z") for f in fields]
    if len(slow):
        texts: list[str | None] = rest.to_pylist()
        for i in slow.tolist():
            others = dict(fields[i])
            for name, column in (("x", xs), ("y", ys), ("z", zs)):
                value: Any = others.get(name)
                kind = type(value)
                if kind is float:
                    del others[name]
                else:  # kept as sent; a column is a double or null (bool is no int here)
                    column[i] = float(value) if kind is int else None
            texts[i] = encode_fields(others)
        rest = pa.array(texts, pa.string())
    columns = [
        pa.array([r.device_id for r in readings], pa.string()),
        _timestamps(ts),
        _timestamps(_micros_array([r.received_at for r in readings])),
        pa.array(xs, pa.float64()),
        pa.array(ys, pa.float64()),
        pa.array(zs, pa.float64()),
        rest,
        _dates(ts),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMAS[READINGS])


def raw_table(messages: Sequence[RawMessage]) -> pa.Table:
    received = [micros(m.received_at) for m in messages]
    columns = [
        pa.array([m.topic for m in messages], pa.string()),
        pa.array([m.payload for m in messages], pa.binary()),
        _timestamps(received),
        _dates(received),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMAS[RAW_MESSAGES])


def rejected_table(rejected: Sequence[Rejected]) -> pa.Table:
    received = [micros(r.received_at) for r in rejected]
    columns = [
        pa.array([r.topic for r in rejected], pa.string()),
        pa.array([r.payload for r in rejected], pa.binary()),
        pa.array([r.size for r in rejected], pa.int64()),
        pa.array([r.reason for r in rejected], pa.string()),
        pa.array([r.detail for r in rejected], pa.string()),
        _timestamps(received),
        _dates(received),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMAS[REJECTED])


def replies_table(replies: Sequence[CommandReply]) -> pa.Table:
    received = [micros(r.received_at) for r in replies]
    columns = [
        pa.array([r.device_id for r in replies], pa.string()),
        pa.array([r.command_id for r in replies], pa.string()),
        pa.array([r.status for r in replies], pa.string()),
        # What a device answered is any JSON value: kept as its JSON text, null for none.
        pa.array(
            [None if r.result is None else orjson.dumps(r.result).decode() for r in replies],
            pa.string(),
        ),
        pa.array([r.error for r in replies], pa.string()),
        _timestamps(received),
        _dates(received),
    ]
    return pa.Table.from_arrays(columns, schema=SCHEMAS[COMMAND_REPLIES])


def batch_tables(batch: Batch) -> dict[str, pa.Table]:
    """The rows ``batch`` adds to each table (empty tables included)."""
    return {
        READINGS: readings_table(batch.of(Reading)),
        RAW_MESSAGES: raw_table(batch.of(RawMessage)),
        REJECTED: rejected_table(batch.of(Rejected)),
        COMMAND_REPLIES: replies_table(batch.of(CommandReply)),
    }


@dataclass(slots=True)
class _Table:
    """One Delta table: its URI, a snapshot for readers, refreshed under ``lock``, and the
    one appends go through (see ``DeltaLake._append_rows``)."""

    name: str
    uri: str
    snapshot: DeltaTable | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    writer: DeltaTable | None = None


def lake_root(url: str) -> tuple[bool, str]:
    """Whether ``url`` (a directory, ``file://``, or an object-store URL) is local, and the
    lake's root as readers use it: an absolute path, or the URL without a trailing slash."""
    local = "://" not in url or url.startswith("file://")
    if local:
        url = str(Path(url.removeprefix("file://")).absolute())
    return local, url.rstrip("/")


class DeltaLake(Lake):
    """The lake under ``url``: a local directory, or ``s3://bucket/prefix``.

    ``storage_options`` go to delta-rs's object store (``AWS_ENDPOINT_URL``,
    ``AWS_ALLOW_HTTP``, ...); without them it reads the usual ``AWS_*`` environment variables.
    ``vacuum_retention_hours``: files that compaction or ``expire`` replaced are deleted
    from storage this long after (a query still reading them finishes first).
    ``log_retention_hours``: how long each table keeps its commits in its log (see above).
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, str] | None = None,
        *,
        vacuum_retention_hours: int = 1,
        log_retention_hours: float = 1.0,
        query_threads: int = 2,
    ) -> None:
        self.local, self.url = lake_root(url)
        self.storage_options = dict(storage_options) if storage_options is not None else None
        self.vacuum_retention_hours = vacuum_retention_hours
        self.log_retention = f"interval {max(1, round(log_retention_hours * 3600))} seconds"
        self._tables = {name: _Table(name, f"{self.url}/{name}") for name in TABLES}
        self._write_locks = {name: threading.Lock() for name in TABLES}
        self._compact_lock = asyncio.Lock()
        self._duck = duckdb.connect(config={"threads": str(query_threads)})
        self._health = Health(False, "not started")

    def uri(self, table: str) -> str:
        """Where ``table`` lives (a path or an object-store URL)."""
        return self._tables[table].uri

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._call(self._create_tables, "creating the tables")
        # Compiled loops of appends and history reads: loaded from numba's cache (compiled
        # on a first start) here, not while the event loop waits on the first batch.
        await asyncio.to_thread(warm_cut)
        await asyncio.to_thread(warm_simplify)
        self._health = Health(True, f"Delta tables under {self.url}")

    async def stop(self) -> None:
        self._health = Health(False, "stopped")

    def health(self) -> Health:
        return self._health

    def _create_tables(self) -> None:
        if self.local:
            Path(self.url).mkdir(parents=True, exist_ok=True)
        for name, schema in SCHEMAS.items():
            uri = self.uri(name)
            for attempt in range(COMMIT_RETRIES):
                if DeltaTable.is_deltatable(uri, self.storage_options):
                    break
                try:
                    DeltaTable.create(
                        uri,
                        schema,
                        partition_by=[PARTITION],
                        mode="ignore",
                        name=name,
                        configuration={LOG_RETENTION: self.log_retention},
                        storage_options=self.storage_options,
                    )
                except CommitFailedError:  # another process created it first
                    _backoff(attempt)
            table = self._keep_log(name)
            protocol = table.protocol()
            if (protocol.min_reader_version, protocol.min_writer_version) != (1, 2):
                log.warning(
                    "lake table %s has protocol reader %d / writer %d; Spark and delta-rs "
                    "interoperate here at 1 / 2",
                    uri,
                    protocol.min_reader_version,
                    protocol.min_writer_version,
                )

    def _keep_log(self, name: str) -> DeltaTable:
        """The table, set to keep its log ``log_retention_hours`` (a table made before, or
        with another retention, is changed)."""
        for attempt in range(COMMIT_RETRIES):
            table = self._table(name)
            if table.metadata().configuration.get(LOG_RETENTION) == self.log_retention:
                return table
            try:
                table.alter.set_table_properties({LOG_RETENTION: self.log_retention})
            except CommitFailedError:  # another writer committed first: look again
                _backoff(attempt)
        return self._table(name)

    def _table(self, name: str) -> DeltaTable:
        return DeltaTable(self.uri(name), storage_options=self.storage_options)

    async def _call(self, fn: Callable[[], T], doing: str) -> T:
        """``fn()`` in a worker thread, its library errors wrapped as ``LakeError``."""
        try:
            result = await asyncio.to_thread(fn)
        except LakeError as exc:
            self._health = Health(False, f"{doing} failed: {exc}")
            raise
        except (DeltaError, OSError, duckdb.Error, pa.ArrowException) as exc:
            error = LakeError(f"{doing} failed: {_one_line(exc)}")
            self._health = Health(False, str(error))
            raise error from exc
        self._health = Health(True, f"Delta tables under {self.url}")
        return result

    # --- writing ----------------------------------------------------------------------------

    async def append(self, batch: Batch, transactions: Mapping[str, int] | None = None) -> None:
        tables = await asyncio.to_thread(batch_tables, batch)
        txns = dict(transactions or {})

        def write(name: str, rows: pa.Table) -> None:
            if rows.num_rows == 0 and not txns:
                return
            properties = CommitProperties(
                app_transactions=[Transaction(app_id, version) for app_id, version in txns.items()]
            )
            with self._write_locks[name]:
                _retrying(lambda: self._append_rows(self._tables[name], rows, properties))

        await asyncio.gather(
            *(self._call(partial(write, n, r), f"append to {n}") for n, r in tables.items())
        )

    def _append_rows(self, table: _Table, rows: pa.Table, properties: CommitProperties) -> None:
        """Appends ``rows`` through the table's writer, loaded once and kept. A write given
        the table's URI loads the table's log again, every commit since the last checkpoint
        (one every hundred versions): an archiver-like append to the four tables took 36 ms
        of CPU over the first ten versions and 108 ms over versions 50-60, with kept writers
        27 and 40 (the history bench). A kept one reads only what other writers committed
        since its own commit. Once a table was deleted, its kept writer's append fails; the
        next append finds no table and makes it again, as a write to its URI does."""
        if table.writer is None:
            # A missing table is made by the append below (by its URI); the next one loads it.
            with contextlib.suppress(TableNotFoundError):
                table.writer = self._table(table.name)
        try:
            write_deltalake(
                table.uri if table.writer is None else table.writer,
                rows,
                mode="append",
                partition_by=[PARTITION],
                storage_options=self.storage_options,
                commit_properties=properties,
                writer_properties=APPEND_WRITER,
            )
        except BaseException:
            table.writer = None  # in whatever state a failed write left it: loaded again
            raise

    async def versions(self, table: str) -> dict[str, int]:
        return await self._call(lambda: self._versions(table), f"reading versions of {table}")

    def _versions(self, name: str) -> dict[str, int]:
        # delta-rs answers the version of an app id it is asked about, but cannot list them:
        # the ids come from the log since its last checkpoint, and from that checkpoint.
        try:
            table = self._table(name)
        except TableNotFoundError:  # deleted under it: holds nothing, an append makes it again
            return {}
        fs = self._filesystem(table)
        app_ids: set[str] = set()
        first = 0
        try:
            with fs.open_input_stream("_delta_log/_last_checkpoint") as stream:
                last = orjson.loads(stream.read())
        except (FileNotFoundError, OSError):
            last = None
        if last is not None:
            first = int(last["version"]) + 1
            parts = last.get("parts")
            prefix = f"_delta_log/{int(last['version']):020d}.checkpoint"
            paths = (
                [f"{prefix}.{i:010d}.{parts:010d}.parquet" for i in range(1, parts + 1)]
                if parts
                else [f"{prefix}.parquet"]
            )
            for path in paths:
                txn = pq.read_table(path, filesystem=fs, columns=["txn"]).column("txn")
                app_ids.update(
                    item["appId"] for item in txn.to_pylist() if item and item.get("appId")
                )
        for version in range(first, table.version() + 1):
            try:
                with fs.open_input_stream(f"_delta_log/{version:020d}.json") as stream:
                    lines = stream.read().splitlines()
            except FileNotFoundError:
                continue  # cleaned up after a checkpoint we did not see
            for line in lines:
                if b'"txn"' in line:
                    txn = orjson.loads(line).get("txn")
                    if txn:
                        app_ids.add(txn["appId"])
        versions = {app_id: table.transaction_version(app_id) for app_id in sorted(app_ids)}
        return {app_id: v for app_id, v in versions.items() if v is not None}

    # --- reading ----------------------------------------------------------------------------

    async def readings(self, query: ReadingQuery) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        async for table in self.reading_batches(query, READ_BATCH_ROWS):
            rows += reading_rows(table)
        return rows

    async def reading_batches(
        self, query: ReadingQuery, rows: int
    ) -> AsyncGenerator[pa.Table, None]:
        opened = await self._call(lambda: self._open_readings(query, rows), "reading readings")
        if opened is None:
            return
        cursor, reader = opened
        try:
            while True:
                batch = await self._call(partial(_next_batch, reader), "reading readings")
                if batch is None:
                    return
                if batch.num_rows:
                    yield pa.Table.from_batches([batch])
        finally:
            cursor.close()

    async def raw_messages(self, query: RawQuery) -> list[dict[str, Any]]:
        return await self._call(lambda: self._raw(query), "reading raw messages")

    def _open_readings(
        self, query: ReadingQuery, rows: int
    ) -> tuple[duckdb.DuckDBPyConnection, pa.RecordBatchReader] | None:
        """A cursor streaming the rows of ``query`` (one scan), or ``None`` when there are none."""
        if query.limit <= 0 or (query.devices is not None and not query.devices):
            return None
        start, end = micros(query.start), micros(query.end)
        where = [
            "ts >= make_timestamp($start)::TIMESTAMPTZ",
            "ts <= make_timestamp($end)::TIMESTAMPTZ",
        ]
        params: dict[str, Any] = {"start": start, "end": end, "limit": query.limit}
        if query.after is not None:
            after_ts = micros(query.after[0])
            start = max(start, after_ts)
            params.update(a_ts=after_ts, a_dev=query.after[1], a_rcv=micros(query.after[2]))
            where.append(
                "ts >= make_timestamp($a_ts)::TIMESTAMPTZ"
                " AND (ts > make_timestamp($a_ts)::TIMESTAMPTZ"
                " OR device_id > $a_dev"
                " OR (device_id = $a_dev AND received_at > make_timestamp($a_rcv)::TIMESTAMPTZ))"
            )
        if query.devices is not None:
            names = [f"$d{i}" for i in range(len(query.devices))]
            params.update({f"d{i}": str(d) for i, d in enumerate(query.devices)})
            where.append(f"device_id IN ({', '.join(names)})")
        if query.rect is not None:
            x0, y0, x1, y1 = query.rect
            params.update(x0=min(x0, x1), x1=max(x0, x1), y0=min(y0, y1), y1=max(y0, y1))
            where.append("x >= $x0 AND x <= $x1 AND y >= $y0 AND y <= $y1")
        # One device's rows need no device id to sort by (a string, slower to compare).
        one = query.devices is not None and len(set(query.devices)) == 1
        order = "ts, received_at" if one else "ts, device_id, received_at"
        # Whole microseconds as doubles are exact below 2**53 (the year 2255), so the division
        # gives the nearest float, as the contract says.
        select = (
            'SELECT device_id AS "deviceId", epoch_us(ts) / 1e6 AS "timestamp",'
            ' epoch_us(received_at) / 1e6 AS "receivedAt", x, y, z, fields'
            " FROM {source} WHERE " + " AND ".join(where)
        )
        sql = f"{select} ORDER BY {order} LIMIT $limit"
        # Compacted days hold one device's rows in this order already (``presorted_files``).
        presorted = f"{select} LIMIT $limit" if one else None
        return self._stream(READINGS, _day(start), _day(end), sql, params, rows, presorted)

    def _raw(self, query: RawQuery) -> list[dict[str, Any]]:
        if query.limit <= 0:
            return []
        start, end = micros(query.start), micros(query.end)
        where = [
            "received_at >= make_timestamp($start)::TIMESTAMPTZ",
            "received_at <= make_timestamp($end)::TIMESTAMPTZ",
        ]
        params: dict[str, Any] = {"start": start, "end": end, "limit": query.limit}
        if query.topic is not None:
            params["topic"] = query.topic
            where.append("topic = $topic")
        if query.after is not None:
            after = micros(query.after[0])
            start = max(start, after)
            params.update(a_rcv=after, a_topic=query.after[1])
            where.append(
                "received_at >= make_timestamp($a_rcv)::TIMESTAMPTZ AND"
                " (received_at > make_timestamp($a_rcv)::TIMESTAMPTZ OR topic > $a_topic)"
            )
        sql = (
            "SELECT topic, payload, epoch_us(received_at) FROM {source} WHERE "
            + " AND ".join(where)
            + " ORDER BY received_at, topic LIMIT $limit"
        )
        rows = self._query(RAW_MESSAGES, _day(start), _day(end), sql, params)
        return [
            {"topic": topic, "payload": bytes(payload), "receivedAt": received / MICROS}
            for topic, payload, received in rows
        ]

    def _stream(
        self,
        name: str,
        first_day: int,
        last_day: int,
        sql: str,
        params: dict[str, Any],
        rows: int,
        presorted: str | None = None,
    ) -> tuple[duckdb.DuckDBPyConnection, pa.RecordBatchReader] | None:
        """``sql`` over ``name``'s files of the days, as a cursor and a reader of its result
        ``rows`` at a time (the cursor holds what the reader reads: close it after).
        ``presorted``: the same query without its sort, run instead when every file is one
        that compaction sorted, one per day, read day by day."""
        if first_day > last_day:
            return None
        partitions = [
            (PARTITION, ">=", _day_text(first_day)),
            (PARTITION, "<=", _day_text(last_day)),
        ]
        for attempt in range(3):
            source, keep, ordered = self._source(name, partitions, presorted is not None)
            if source is None:
                return None
            cursor = self._duck.cursor()
            try:
                if keep is not None:
                    cursor.register("lake_source", keep)
                text = presorted if ordered and presorted is not None else sql
                # A relation streams its result to Arrow (a DB-API result copies it first).
                relation = cursor.sql(text.format(source=source), params=params)
                return cursor, relation.to_arrow_reader(rows)
            except duckdb.IOException:
                # Vacuum removed a file of the snapshot (it outlived the retention): re-list.
                cursor.close()
                if attempt == 2:
                    raise
            except BaseException:
                cursor.close()
                raise
        raise AssertionError("unreachable")

    def _query(
        self, name: str, first_day: int, last_day: int, sql: str, params: dict[str, Any]
    ) -> list[tuple[Any, ...]]:
        if first_day > last_day:
            return []
        partitions = [
            (PARTITION, ">=", _day_text(first_day)),
            (PARTITION, "<=", _day_text(last_day)),
        ]
        for attempt in range(3):
            source, keep, _ = self._source(name, partitions)
            if source is None:
                return []
            cursor = self._duck.cursor()
            try:
                if keep is not None:
                    cursor.register("lake_source", keep)
                return cursor.execute(sql.format(source=source), params).fetchall()
            except duckdb.IOException:
                # Vacuum removed a file of the snapshot (it outlived the retention): re-list.
                if attempt == 2:
                    raise
            finally:
                cursor.close()
        raise AssertionError("unreachable")

    def _source(
        self, name: str, partitions: list[tuple[str, str, str]], presorted: bool = False
    ) -> tuple[str | None, Any, bool]:
        """What DuckDB reads for ``name``'s current rows in ``partitions``: a
        ``read_parquet`` of the files, or a registered pyarrow dataset on object storage;
        with ``presorted``, whether they are sorted files listed day by day (``presorted_files``),
        which DuckDB then reads in that order (it keeps a scan's order without ORDER BY)."""
        entry = self._tables[name]
        with entry.lock:
            if entry.snapshot is None:
                entry.snapshot = self._table(name)
            else:
                entry.snapshot.update_incremental()
            if self.local:
                files = entry.snapshot.file_uris(file_pruning_predicate=partitions)
            else:
                dataset = entry.snapshot.to_pyarrow_dataset(file_pruning_predicate=partitions)
        if self.local:
            if not files:
                return None, None, False
            ordered = presorted_files(files) if presorted else None
            listed = files if ordered is None else ordered
            quoted = ", ".join("'" + path.replace("'", "''") + "'" for path in listed)
            source = f"read_parquet([{quoted}], hive_partitioning = false)"
            return source, None, ordered is not None
        return "lake_source", dataset, False

    # --- maintenance ------------------------------------------------------------------------

    async def compact(self) -> None:
        # One compaction at a time; appends and queries never wait for it.
        async with self._compact_lock:
            for name in TABLES:
                await self._call(partial(self._compact, name), f"compacting {name}")

    def _compact(self, name: str) -> None:
        table = self._table(name)
        actions = pa.table(table.get_add_actions(flatten=True))
        counts = Counter(str(day) for day in actions.column(f"partition.{PARTITION}").to_pylist())
        began = time.monotonic()
        rewritten = 0
        for day, files in sorted(counts.items()):
            if files > 1:
                rewritten += _retrying(partial(self._sort_partition, table, name, day))
        table.update_incremental()
        table.vacuum(
            retention_hours=self.vacuum_retention_hours,
            dry_run=False,
            enforce_retention_duration=False,
        )
        if rewritten:
            log.debug(
                "compacted %d files of %s in %.2f s", rewritten, name, time.monotonic() - began
            )

    def _sort_partition(self, table: DeltaTable, name: str, day: str) -> int:
        """Rewrite the files of one partition as one file sorted by ``SORT_KEYS``, committed
        as a rearrangement (``dataChange: false``) that appends racing with it do not touch.
        Returns how many files it replaced."""
        table.update_incremental()
        actions = pa.table(table.get_add_actions(flatten=True)).to_pylist()
        replaced = [a for a in actions if str(a[f"partition.{PARTITION}"]) == day]
        if len(replaced) < 2:
            return 0
        relative = f"{PARTITION}={day}/{SORTED_FILE_PREFIX}{uuid.uuid4()}.zstd.parquet"
        columns = ", ".join(f.name for f in SCHEMAS[name] if f.name != PARTITION)
        order = ", ".join(SORT_KEYS[name])
        cursor = self._duck.cursor()
        try:
            # DuckDB sorts out of core, so a partition larger than memory still compacts.
            with tempfile.TemporaryDirectory(prefix="iotstream-compact-") as tmp:
                if self.local:
                    root = self.uri(name)
                    files = [os.path.join(root, a["path"]) for a in replaced]
                    target = os.path.join(root, relative)
                    source = "read_parquet($files)"
                    params: dict[str, Any] = {"files": files}
                else:
                    fs = self._filesystem(table)
                    paths = [a["path"] for a in replaced]
                    cursor.register("compact_source", pads.dataset(paths, filesystem=fs))
                    target = os.path.join(tmp, "part.parquet")
                    source, params = "compact_source", {}
                relation = cursor.sql(
                    f"SELECT {columns} FROM {source} ORDER BY {order}", params=params
                )
                rows = _write_sorted(relation.to_arrow_reader(ROW_GROUP_ROWS), target, name)
                size = os.path.getsize(target)
                if not self.local:
                    self._upload(table, target, relative)
        finally:
            cursor.close()
        now = int(time.time() * 1000)
        partition: dict[str, str | None] = {PARTITION: day}
        add = AddAction(relative, size, partition, now, False, json.dumps({"numRecords": rows}))
        removes = [
            RemoveAction(a["path"], False, now, a["size_bytes"], partition) for a in replaced
        ]
        # On a lost race the new file is left unreferenced, and vacuum deletes it.
        table.create_write_transaction(
            [add, *removes], mode="append", schema=table.schema(), partition_by=[PARTITION]
        )
        return len(replaced)

    def _upload(self, table: DeltaTable, source: str, relative: str) -> None:
        # Through delta-rs's own stream: pyarrow's wrapper of it hands it buffers it refuses.
        handler = DeltaFileSystemHandler(table.table_uri, self.storage_options)
        stream = handler.open_output_stream(relative, None)
        try:
            with open(source, "rb") as src:
                while chunk := src.read(8 << 20):
                    stream.write(chunk)
        finally:
            stream.close()  # type: ignore[attr-defined]  # missing from its stub

    def _filesystem(self, table: DeltaTable) -> Any:
        """The table's storage as a pyarrow filesystem, through delta-rs's object store."""
        handler = DeltaStorageHandler(table.table_uri, self.storage_options)
        return pafs.PyFileSystem(handler)  # type: ignore[attr-defined]

    async def expire(self, before: float) -> None:
        cutoff = _day_text(_day(micros(before)))
        for name in TABLES:

            def delete(name: str = name) -> None:
                table = self._table(name)

                def attempt() -> None:
                    table.update_incremental()
                    table.delete(f"{PARTITION} < '{cutoff}'")

                _retrying(attempt)

            await self._call(delete, f"expiring {name}")


# Compacted files: times (int64 microseconds, sorted within a device) as deltas, which take
# half of what zstd makes of them alone; dictionaries for text only (a day of a moving
# robot's coordinates has few repeats, and their dictionary pages cost more than they
# save); zstd level 6, which takes a moving robot's ts, x and y from 9.0 to 7.9 bytes a
# reading in twice level 1's time (0.3 s a device-day). Not BYTE_STREAM_SPLIT for the
# coordinates: Spark's vectorized reader refuses it.
DELTA_COLUMNS = frozenset({"ts", "received_at"})
COMPACT_ZSTD_LEVEL = 6


def _write_sorted(batches: pa.RecordBatchReader, target: str, name: str) -> int:
    """Write ``batches`` (``name``'s columns, sorted) as one Parquet file; its row count."""
    schema = pa.schema([f for f in SCHEMAS[name] if f.name != PARTITION])
    deltas = [f.name for f in schema if f.name in DELTA_COLUMNS]
    rows = 0
    with pq.ParquetWriter(
        target,
        schema,
        compression="zstd",
        compression_level=COMPACT_ZSTD_LEVEL,
        use_dictionary=[f.name for f in schema if pa.types.is_string(f.type)],
        column_encoding=dict.fromkeys(deltas, "DELTA_BINARY_PACKED"),
    ) as writer:
        for batch in batches:
            table = pa.Table.from_batches([batch]).cast(schema)
            writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
            rows += table.num_rows
    return rows


def presorted_files(files: Sequence[str]) -> list[str] | None:
    """``files`` (paths or URIs of the ``readings`` table) in day order when each is a file
    compaction sorted and no day has two (the rows of one device then come in time order);
    else ``None``."""
    days: dict[str, str] = {}
    for path in files:
        found = _PARTITION_DIR.search(path)
        if found is None or not found[2].startswith(SORTED_FILE_PREFIX) or found[1] in days:
            return None
        days[found[1]] = path
    return [days[day] for day in sorted(days)]


def _next_batch(reader: pa.RecordBatchReader) -> pa.RecordBatch | None:
    try:
        return reader.read_next_batch()
    except StopIteration:
        return None


def _one_line(exc: BaseException) -> str:
    """delta-rs errors come as colored trees of causes: one plain line of them."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).replace("↳", ":")
    return " ".join(text.split())


def _backoff(attempt: int) -> None:
    time.sleep(min(0.5, 0.01 * 2**attempt))


def _retrying(fn: Callable[[], T]) -> T:
    """``fn()``, again while another writer wins the commit; a failed commit wrote nothing."""
    for attempt in range(COMMIT_RETRIES):
        try:
            return fn()
        except CommitFailedError:
            if attempt == COMMIT_RETRIES - 1:
                raise
            _backoff(attempt)
    raise AssertionError("unreachable")
