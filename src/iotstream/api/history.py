"""History from the lake: readings and raw messages, a page at a time, in five formats.

- ``GET /api/devices/{device_id}/history``  one device's readings, optionally simplified
- ``GET /api/history``                      readings of many devices (or all), by time
- ``GET /api/raw``                          raw messages, by receive time

A page is at most ``limit`` rows after ``cursor`` in the ``from``..``to`` window, in the
lake's order; its cursor continues it by key (keyset paging), so rows arriving meanwhile
are neither skipped nor repeated. A page of readings is one lake query, read as Arrow
tables of ``CHUNK`` rows; every format is written a chunk at a time from the Arrow columns
(numbers formatted and rows joined by Arrow compute, the JSON text of other fields spliced
in as it is stored), and a row at a time only for chunks whose fields need it (a
coordinate sent as text, or CSV and Parquet columns that come from fields).

json and GeoJSON are sent as they are read, ``next`` last. CSV and Parquet need the page's
columns before their first byte, a simplified track needs every position of the page, and
ndjson, CSV and Parquet carry the next cursor in a header: for these the page is read
first (in memory up to ``HOLD_BYTES``, past that in a temporary file), then sent. A page
that fits one chunk is encoded whole before the response starts. ``Server-Timing`` says
how long the lake, simplification and encoding took before the first byte.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import json
import logging
import math
import re
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Annotated, Any, Literal, Protocol, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as compute
import pyarrow.parquet as pq
from fastapi import APIRouter, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from ..errors import InvalidDeviceId, IotstreamError
from ..lake.base import Lake, RawQuery, ReadingKey, ReadingQuery, reading_rows
from ..models import DEVICE_ID, RECEIVED_AT, TIMESTAMP, DeviceId
from ..simplify import simplify
from ..times import epoch_seconds
from .dependencies import KnownDeviceIdPath, LakeDep
from .schemas import ERROR

log = logging.getLogger(__name__)

pc: Any = compute
"""pyarrow's compute functions, made at import: they have no type hints."""

router = APIRouter(tags=["history"])

CHUNK = 100_000
"""Rows read from the lake and encoded at a time."""
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 1_000_000
DEFAULT_WINDOW = 3600.0
"""Seconds of history before ``to`` when ``from`` is not given."""

Row = dict[str, Any]
Key = tuple[Any, ...]
Format = Literal["json", "ndjson", "csv", "geojson", "parquet"]
NEXT_HEADER = "X-Next-Cursor"

_LEADING = (DEVICE_ID, "topic", TIMESTAMP, RECEIVED_AT, "x", "y", "z", "payload", "encoding")
"""Columns of CSV and Parquet that come first when present; the others follow by name."""
_READING_COLUMNS = {DEVICE_ID: str, TIMESTAMP: float, RECEIVED_AT: float, "x": float, "y": float}
_RAW_COLUMNS = {"topic": str, RECEIVED_AT: float, "payload": str, "encoding": str}


class LakeFailed(IotstreamError):
    """The lake raised while a page was read; the message says why."""


# --- parameters -------------------------------------------------------------------------


def invalid(name: str, message: str, value: object) -> RequestValidationError:
    """A 422 for query parameter ``name``, shaped like FastAPI's own."""
    return RequestValidationError(
        [{"type": "value_error", "loc": ("query", name), "msg": message, "input": value}]
    )


def parse_time(name: str, text: str) -> float:
    """Epoch seconds from epoch seconds or ISO 8601 text (``times.epoch_seconds``); a 422
    naming ``name`` otherwise."""
    try:
        return epoch_seconds(text)
    except ValueError as exc:
        raise invalid(name, str(exc), text) from None


@dataclass(frozen=True, slots=True)
class Window:
    """A device-time (readings) or receive-time (raw) window, epoch seconds, both ends in."""

    start: float
    end: float


def window(start: str | None, end: str | None, cursor: Cursor | None) -> Window:
    """The window asked for; what is not given comes from the cursor, else the last hour."""
    to = parse_time("to", end) if end is not None else None
    since = parse_time("from", start) if start is not None else None
    if cursor is not None:
        to = cursor.window.end if to is None else to
        since = cursor.window.start if since is None else since
    if to is None:
        to = time.time() if since is None else max(time.time(), since)
    if since is None:
        since = to - DEFAULT_WINDOW
    if since > to:
        raise invalid("from", f"from ({since}) is after to ({to})", start)
    return Window(since, to)


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ends: the window it was in and the key of its last row. On the wire,
    urlsafe base64 (unpadded) of the JSON array ``[kind, from, to, *key]``."""

    kind: Literal["readings", "raw"]
    window: Window
    key: Key

    def encode(self) -> str:
        document = [self.kind, self.window.start, self.window.end, *self.key]
        return base64.urlsafe_b64encode(orjson.dumps(document)).rstrip(b"=").decode()

    @classmethod
    def decode(cls, kind: Literal["readings", "raw"], text: str) -> Cursor:
        try:
            document = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            raise invalid("cursor", "not a cursor this API gave", text) from None
        shape = (str, float, float, *_KEY_SHAPES[kind])
        if (
            type(document) is not list
            or len(document) != len(shape)
            or not all(map(_fits, document, shape))
            or document[0] != kind
        ):
            raise invalid("cursor", f"not a cursor of {kind}", text)
        if kind == "readings":
            try:
                DeviceId.parse(document[4])
            except InvalidDeviceId:
                raise invalid("cursor", "not a cursor of readings", text) from None
        return cls(kind, Window(document[1], document[2]), tuple(document[3:]))


_KEY_SHAPES: dict[str, tuple[type, ...]] = {"readings": (float, str, float), "raw": (float, str)}
"""What a key holds: ``(timestamp, device id, receivedAt)``, ``(receivedAt, topic)``."""


def _fits(value: object, kind: type) -> bool:
    if kind is float:
        return type(value) in (int, float) and math.isfinite(cast(float, value))
    return type(value) is kind


FromQuery = Annotated[
    str | None,
    Query(
        alias="from",
        description="Start of the window: epoch seconds or ISO 8601 (no zone: UTC). "
        "Default: an hour before `to`, or the cursor's.",
        examples=["2026-11-26T14:00:00Z", "1764165600"],
    ),
]
ToQuery = Annotated[
    str | None,
    Query(description="End of the window, included; as `from`. Default: now, or the cursor's."),
]
LimitQuery = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_LIMIT,
        description=f"Rows in the page, at most {MAX_LIMIT:,}; default {DEFAULT_LIMIT:,}.",
    ),
]
CursorQuery = Annotated[
    str | None,
    Query(
        description="`next` of the previous page (json, geojson) or its `X-Next-Cursor` header "
        "(ndjson, csv, parquet). Without `from`/`to`, the page keeps the cursor's window."
    ),
]
FormatQuery = Annotated[
    Format,
    Query(
        alias="format",
        description="json, ndjson, csv (header row: the page's columns), geojson (Point "
        "features whose coordinates are the plane's x/y in metres, not WGS84 longitude and "
        "latitude) or parquet.",
    ),
]


def _cursor(kind: Literal["readings", "raw"], text: str | None) -> Cursor | None:
    return None if text is None else Cursor.decode(kind, text)


def device_list(texts: list[str] | None) -> list[DeviceId] | None:
    if not texts:
        return None
    devices: list[DeviceId] = []
    for text in texts:
        for item in text.split(","):
            if item:
                try:
                    devices.append(DeviceId.parse(item))
                except InvalidDeviceId as exc:
                    raise invalid("devices", f"{item!r}: {exc}", text) from None
    return devices or None


def _rect(text: str | None) -> tuple[float, float, float, float] | None:
    if text is None:
        return None
    try:
        x0, y0, x1, y1 = (float(part) for part in text.split(","))
    except ValueError:
        raise invalid("rect", "rect is x0,y0,x1,y1: four numbers", text) from None
    if not all(map(math.isfinite, (x0, y0, x1, y1))):
        raise invalid("rect", "rect corners must be finite", text)
    return (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))


# --- reading a page ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Source:
    """What a page reads: ``batches(after, limit)`` gives Arrow tables of at most ``CHUNK``
    rows, in key order, at most ``limit`` rows after ``after`` in all; ``key`` names the
    columns of a row's key; ``columns`` the columns CSV and Parquet always have, even on an
    empty page. A ``fields`` column, when there is one, holds the other fields as JSON text."""

    batches: Callable[[Key | None, int], AsyncGenerator[pa.Table, None]]
    key: tuple[str, ...]
    columns: dict[str, type]


def _last_key(table: pa.Table, names: tuple[str, ...]) -> Key:
    return tuple(table.column(name)[-1].as_py() for name in names)


class Scan:
    """One page, a chunk at a time: at most ``limit`` rows after ``after``, read with one
    query. Once the chunks are exhausted, ``last`` is the key of the last row and ``more``
    says whether the window holds rows after it."""

    def __init__(self, source: Source, after: Key | None, limit: int) -> None:
        self.source = source
        self.after = after
        self.limit = limit
        self.last = after
        self.more = False

    async def chunks(self) -> AsyncGenerator[pa.Table, None]:
        remaining = self.limit
        # One row more than needed says whether there are more.
        batches = self.source.batches(self.after, self.limit + 1)
        try:
            while not self.more:
                try:
                    table = await anext(batches, None)
                except (IotstreamError, OSError) as exc:
                    raise LakeFailed(str(exc) or type(exc).__name__) from exc
                if table is None:
                    return
                if table.num_rows > remaining:
                    self.more = True
                    table = table.slice(0, remaining)
                if table.num_rows:
                    remaining -= table.num_rows
                    self.last = _last_key(table, self.source.key)
                    yield table
        finally:
            await batches.aclose()


HOLD_BYTES = 64 << 20
"""Arrow bytes of a page held in memory between reading it and sending it; past this, the
page goes to a temporary file."""


class Spool:
    """The chunks of a page, in memory up to ``HOLD_BYTES``, past that in a temporary file
    (Arrow IPC), so that a long export holds about one chunk in memory and reads the lake
    once. ``bounds`` are the indices where the chunks begin, and the end."""

    def __init__(self) -> None:
        self.held: list[pa.Table] = []
        self.bytes = 0
        self.file: Any = None
        self.writer: pa.ipc.RecordBatchStreamWriter | None = None
        self.bounds = [0]

    def write(self, table: pa.Table) -> None:
        self.bounds.append(self.bounds[-1] + table.num_rows)
        if self.writer is None:
            self.held.append(table)
            self.bytes += table.nbytes
            if self.bytes <= HOLD_BYTES:
                return
            self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
            self.writer = pa.ipc.new_stream(self.file, table.schema)
            held, self.held = self.held, []
            for each in held:
                self.writer.write_table(each)
            return
        self.writer.write_table(table)

    @property
    def rows(self) -> int:
        return self.bounds[-1]

    def tables(self) -> Iterator[pa.Table]:
        """The chunks in order, one at a time (each read when asked for)."""
        if self.writer is None:
            yield from self.held
            return
        self.writer.close()
        self.file.seek(0)
        reader = pa.ipc.open_stream(self.file)
        for batch in reader:
            yield pa.Table.from_batches([batch])

    def close(self) -> None:
        self.held = []
        if self.file is not None:
            self.file.close()


@dataclass(slots=True)
class Columns:
    """The columns of a page's rows, each with the types of its values; ``plain`` while no
    row had fields beyond the page's Arrow columns."""

    types: dict[str, set[type]] = field(default_factory=dict)
    plain: bool = True
    _seen: set[tuple[tuple[str, ...], tuple[type, ...]]] = field(default_factory=set)

    def add(self, rows: list[Row]) -> None:
        seen = self._seen
        for row in rows:
            seen.add((tuple(row), tuple(map(type, row.values()))))

    def add_table(self, table: pa.Table) -> None:
        """The columns of ``table``'s rows: from its Arrow columns, and when some row has
        ``fields``, from those rows as dicts."""
        if _has_fields(table):
            self.plain = False
            self.add(_rows(table))
            return
        for name in table.column_names:
            if name == FIELDS:
                continue
            column = table.column(name)
            if column.null_count < len(column):
                self.types.setdefault(name, set()).add(_python_type(column.type))

    def names(self) -> list[str]:
        self._fold()
        leading = [name for name in _LEADING if name in self.types]
        return leading + sorted(self.types.keys() - set(leading))

    def _fold(self) -> None:
        for names, types in self._seen:
            for name, kind in zip(names, types, strict=True):
                self.types.setdefault(name, set()).add(kind)
        self._seen.clear()


def _python_type(kind: pa.DataType) -> type:
    if pa.types.is_floating(kind):
        return float
    if pa.types.is_integer(kind):
        return int
    if pa.types.is_boolean(kind):
        return bool
    return str


FIELDS = "fields"
"""The column of a reading's other fields, as JSON text."""


def _has_fields(table: pa.Table) -> bool:
    if FIELDS not in table.column_names:
        return False
    column = table.column(FIELDS)
    return bool(column.null_count < len(column))


def _rows(table: pa.Table) -> list[Row]:
    """A chunk as dicts, one per row, as the per-row encoders take them."""
    if FIELDS in table.column_names:
        return reading_rows(table)
    return cast(list[Row], table.to_pylist())


# A fields object with one of these keys changes a column's value (a coordinate sent as an
# int or text): such a chunk is encoded a row at a time. Nested keys match too, harmlessly.
_OVERRIDES = '"(x|y|z|deviceId|timestamp|receivedAt)"\\s*:'


def _columnar(table: pa.Table) -> bool:
    """Whether ``table`` can be encoded from its columns (its fields spliced in as text)."""
    if not _has_fields(table):
        return True
    return not bool(pc.any(pc.match_substring_regex(table.column(FIELDS), _OVERRIDES)).as_py())


@dataclass(slots=True)
class Plan:
    """A page read before its response starts: its end, its columns, its chunks, and with
    ``simplify`` the indices (among all the page's rows) of the rows RDP keeps."""

    last: Key | None
    more: bool
    columns: Columns
    spool: Spool
    kept: np.ndarray | None = None
    timing: dict[str, float] = field(default_factory=dict)
    encoded: list[bytes] | None = None
    """The page already encoded (``plan``'s ``early``), all but the encoder's tail."""

    def tables(self) -> Iterator[pa.Table]:
        """The chunks to send: every row, or with ``kept`` only those (in one table)."""
        if self.kept is None:
            yield from self.spool.tables()
            return
        kept, picked = self.kept, []
        for table, (first, end) in zip(
            self.spool.tables(), pairwise(self.spool.bounds), strict=True
        ):
            within = kept[np.searchsorted(kept, first) : np.searchsorted(kept, end)] - first
            if len(within):
                picked.append(table.take(pa.array(within)))
        if picked:
            kept_rows = pa.concat_tables(picked)
            for start in range(0, kept_rows.num_rows, CHUNK):
                yield kept_rows.slice(start, CHUNK).combine_chunks()


def _positioned(table: pa.Table) -> pa.Array | None:
    """Which rows have a position: numbers for x and y (a device may send text on
    ``sensors/{id}/x``: that is kept in ``fields``, and the column is null)."""
    if "x" not in table.column_names or "y" not in table.column_names:
        return None
    return pc.and_(pc.is_valid(table.column("x")), pc.is_valid(table.column("y")))


class Ahead:
    """A page encoded while the rest of it is still read (the encoder runs in a thread
    beside the lake's), with the columns its first chunk had; given up when a later chunk
    has other columns or the encoded page outgrows ``HOLD_BYTES``."""

    def __init__(self, encoder: Encoder, columns: Columns) -> None:
        self.encoder = encoder
        self.columns = _signature(columns)
        self.parts: list[bytes] | None = [encoder.head()]
        self.size = 0
        self.task: asyncio.Future[None] | None = None

    async def add(self, table: pa.Table, columns: Columns) -> None:
        """Encode ``table`` once the chunk before it is (one chunk ahead of the lake at most,
        so the size check holds within a chunk)."""
        if self.parts is None:
            return
        if self.task is not None:
            await self.task
        if _signature(columns) != self.columns or self.size > HOLD_BYTES:
            self.parts = None
            return
        previous, parts = self.task, self.parts

        async def encode() -> None:
            if previous is not None:
                await previous
            data = await asyncio.to_thread(self.encoder.chunk, table)
            parts.append(data)
            self.size += len(data)

        self.task = asyncio.ensure_future(encode())

    async def finish(self) -> list[bytes] | None:
        """The head and every chunk encoded, or ``None`` when given up."""
        if self.task is not None:
            await self.task
        return self.parts

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _signature(columns: Columns) -> tuple[Any, ...]:
    names = columns.names()
    return (columns.plain, *((n, frozenset(columns.types[n])) for n in names))


async def plan(
    source: Source,
    after: Key | None,
    limit: int,
    tolerance: float | None,
    columns: bool,
    early: Callable[[Columns], Encoder] | None = None,
) -> Plan:
    """Read the page: its end, with ``columns`` its columns, with ``tolerance`` only the
    rows that have a position, and what RDP keeps of them; with ``early``, the page
    encoded meanwhile by the encoder it makes for the first chunk's columns (``encoded``)."""
    began = time.perf_counter()
    scan = Scan(source, after, limit)
    found = Columns({name: {kind} for name, kind in source.columns.items()})
    spool = Spool()
    ahead: Ahead | None = None
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    where: list[np.ndarray] = []
    try:
        async for table in scan.chunks():
            if tolerance is not None:
                mask = _positioned(table)
                offset = spool.rows
                if mask is None:
                    index = np.empty(0, np.int64)
                else:
                    if mask.null_count == 0 and pc.all(mask).as_py():
                        index, positions = np.arange(table.num_rows), table
                    else:
                        index = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
                        positions = table.take(pa.array(index))
                    xs.append(positions.column("x").to_numpy())
                    ys.append(positions.column("y").to_numpy())
                    if columns:
                        found.add_table(positions)
                where.append(index + offset)
            elif columns:
                found.add_table(table)
            if early is not None:
                if ahead is None:
                    ahead = Ahead(early(found), found)
                await ahead.add(table, found)
            await asyncio.to_thread(spool.write, table)
            del table  # not held while the next chunk is read
        page = Plan(scan.last, scan.more, found, spool)
        page.timing["lake"] = time.perf_counter() - began
        if ahead is not None:
            waited = time.perf_counter()
            page.encoded = await ahead.finish()
            if page.encoded is not None:
                page.timing["encode"] = time.perf_counter() - waited
    except BaseException:
        if ahead is not None:
            ahead.cancel()
        spool.close()
        raise
    if tolerance is not None:
        began = time.perf_counter()
        x, y = np.concatenate([*xs, np.empty(0)]), np.concatenate([*ys, np.empty(0)])
        index = np.concatenate([*where, np.empty(0, np.int64)])
        page.kept = index[await asyncio.to_thread(simplify, x, y, tolerance)]
        page.timing["simplify"] = time.perf_counter() - began
    return page


# --- Arrow columns as text --------------------------------------------------------------


def _numbers(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Numbers as JSON and CSV text, as orjson writes them (a float as ``repr`` does, NaN
    and infinities as ``null``); null stays null. orjson writes the whole column at once,
    and the text is cut at its commas into an Arrow string array."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    count = len(column)
    if not count:
        return pa.array([], pa.string())
    text = orjson.dumps(column.to_numpy(zero_copy_only=False), option=orjson.OPT_SERIALIZE_NUMPY)
    data = np.frombuffer(text, np.uint8)
    commas = np.flatnonzero(data == ord(","))
    offsets = np.empty(count + 1, np.int32)
    offsets[0] = 0
    # Value i ends where comma i is (the last one at the "]"), less the i + 1 separators
    # ("[" and the commas) before it.
    offsets[1:count] = commas - np.arange(1, count)
    offsets[count] = len(text) - 1 - count
    keep = np.ones(len(text), bool)
    keep[0] = keep[-1] = False
    keep[commas] = False
    values = pa.StringArray.from_buffers(
        count, pa.py_buffer(offsets), pa.py_buffer(data[keep].tobytes())
    )
    if column.null_count:
        values = pc.if_else(pc.is_valid(column), values, pa.scalar(None, pa.string()))
    return values


def _json_strings(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Strings as JSON strings, each distinct value encoded once."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)
    texts = [orjson.dumps(value).decode() for value in encoded.dictionary.to_pylist()]
    return pc.take(pa.array(texts, pa.string()), encoded.indices)


def _json_values(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        return _json_strings(column)
    return _numbers(column)


def _optional(prefix: str, text: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``prefix`` and the text, or nothing where the text is null."""
    return pc.fill_null(pc.binary_join_element_wise(prefix, text, ""), "")


def _join(*parts: Any) -> pa.ChunkedArray | pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _concat(texts: pa.ChunkedArray | pa.Array) -> bytes:
    """Every row's text, one after the other."""
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not len(texts):
        return b""
    offsets = np.frombuffer(texts.buffers()[1], np.int32, len(texts) + 1, texts.offset * 4)
    return memoryview(texts.buffers()[2])[offsets[0] : offsets[-1]].tobytes()


def _objects(table: pa.Table, names: list[str], lead: str = "") -> pa.ChunkedArray | pa.Array:
    """Each row as a JSON object of ``names`` (a null left out; the first never null) and
    its ``fields`` spliced in, ``lead`` before it."""
    first, *rest = names
    parts: list[Any] = [
        lead + "{" + orjson.dumps(first).decode() + ":",
        _json_values(table.column(first)),
    ]
    for name in rest:
        column = table.column(name)
        key = "," + orjson.dumps(name).decode() + ":"
        if column.null_count == len(column):
            continue
        if column.null_count:
            parts.append(_optional(key, _json_values(column)))
        else:
            parts += [key, _json_values(column)]
    if _has_fields(table):
        inner = pc.utf8_slice_codeunits(table.column(FIELDS), 1, -1)
        empty = pc.equal(inner, "")
        parts.append(_optional(",", pc.if_else(empty, pa.scalar(None, pa.string()), inner)))
    parts.append("}")
    return _join(*parts)


def _names(table: pa.Table, drop: str | None = None, also: tuple[str, ...] = ()) -> list[str]:
    return [n for n in table.column_names if n != FIELDS and n != drop and n not in also]


# --- formats ----------------------------------------------------------------------------


class Encoder(Protocol):
    media_type: str

    def head(self) -> bytes: ...

    def chunk(self, table: pa.Table) -> bytes: ...

    def tail(self, cursor: str | None) -> bytes: ...


class JsonEncoder:
    """``{...meta, "<items>": [...], "next": cursor}``, ``drop`` left out of each item."""

    media_type = "application/json"

    def __init__(self, meta: dict[str, Any], items: str, drop: str | None = None) -> None:
        self.meta, self.items, self.drop = meta, items, drop
        self.first = True

    def head(self) -> bytes:
        return orjson.dumps(self.meta)[:-1] + f',"{self.items}":['.encode()

    def chunk(self, table: pa.Table) -> bytes:
        if not table.num_rows:
            return b""
        if _columnar(table):
            body = _concat(self.objects(table))[1:]
        else:
            body = _dumps([self.item(row) for row in _rows(table)])[1:-1]
        if self.first:
            self.first = False
            return body
        return b"," + body

    def objects(self, table: pa.Table) -> pa.ChunkedArray | pa.Array:
        """Each row as an item, a comma before it."""
        return _objects(table, _names(table, self.drop), ",")

    def item(self, row: Row) -> Row:
        if self.drop is not None:
            row.pop(self.drop, None)
        return row

    def tail(self, cursor: str | None) -> bytes:
        return b'],"next":' + orjson.dumps(cursor) + b"}"


class GeoJsonEncoder(JsonEncoder):
    """A FeatureCollection of Points at the plane's x/y in metres (not WGS84), the other
    values as properties; a reading without x and y has a null geometry. The page's
    metadata and ``next`` are foreign members of the collection."""

    media_type = "application/geo+json"

    def __init__(self, meta: dict[str, Any]) -> None:
        super().__init__({"type": "FeatureCollection", **meta}, "features")

    def objects(self, table: pa.Table) -> pa.ChunkedArray | pa.Array:
        point = _positioned(table)
        everything = _objects(table, _names(table))
        if point is None:
            return _join(',{"type":"Feature","geometry":null,"properties":', everything, "}")
        x, y = _json_values(table.column("x")), _json_values(table.column("y"))
        geometry = pc.if_else(
            point, _join('{"type":"Point","coordinates":[', x, ",", y, "]}"), "null"
        )
        properties = pc.if_else(point, _objects(table, _names(table, also=("x", "y"))), everything)
        return _join(',{"type":"Feature","geometry":', geometry, ',"properties":', properties, "}")

    def item(self, row: Row) -> Row:
        return _feature(row)


def _dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an int beyond 64 bits, which orjson refuses and json writes
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _number(value: object) -> bool:
    return type(value) is float or type(value) is int


def _feature(row: Row) -> Row:
    x, y = row.get("x"), row.get("y")
    geometry = None
    if _number(x) and _number(y):
        del row["x"], row["y"]
        geometry = {"type": "Point", "coordinates": [x, y]}
    return {"type": "Feature", "geometry": geometry, "properties": row}


class NdjsonEncoder:
    media_type = "application/x-ndjson"

    def head(self) -> bytes:
        return b""

    def chunk(self, table: pa.Table) -> bytes:
        if _columnar(table):
            return _concat(_join(_objects(table, _names(table)), "\n"))
        return b"".join(_dumps(row) + b"\n" for row in _rows(table))

    def tail(self, cursor: str | None) -> bytes:
        return b""


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if value is True or value is False:
        return "true" if value else "false"
    if isinstance(value, float | int):
        return repr(value)
    return orjson.dumps(value).decode()


def _csv_values(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """CSV cells as the csv module writes them (quoted only when they must be); null empty."""
    if pa.types.is_boolean(column.type):
        return pc.if_else(column, "true", "false")
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return _numbers(column)
    special = pc.match_substring_regex(column, '[,"\r\n]')
    quoted = _join('"', pc.replace_substring(column, '"', '""'), '"')
    return pc.if_else(special, quoted, column)


class CsvEncoder:
    """A header row of the page's columns, then one row per reading; an empty cell where a
    reading lacks the column; objects and lists as JSON."""

    media_type = "text/csv; charset=utf-8"

    def __init__(self, columns: Columns) -> None:
        self.columns = columns.names()
        self.plain = columns.plain
        # The csv module writes text, numbers and None (as empty) itself, and faster.
        self.convert = [
            i
            for i, name in enumerate(self.columns)
            if not all(_plain(kind) for kind in columns.types[name])
        ]

    def _lines(self, rows: list[list[Any]]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n").writerows(rows)
        return buffer.getvalue().encode()

    def head(self) -> bytes:
        return self._lines([self.columns])

    def chunk(self, table: pa.Table) -> bytes:
        if self.plain and not _has_fields(table) and set(self.columns) <= set(table.column_names):
            cells = [pc.fill_null(_csv_values(table.column(c)), "") for c in self.columns]
            if len(cells) == 1:
                return _concat(_join(cells[0], "\r\n"))
            return _concat(_join(pc.binary_join_element_wise(*cells, ","), "\r\n"))
        columns = self.columns
        lines = [[row.get(c) for c in columns] for row in _rows(table)]
        for i in self.convert:
            for line in lines:
                line[i] = _text(line[i])
        return self._lines(lines)

    def tail(self, cursor: str | None) -> bytes:
        return b""


def _plain(kind: type) -> bool:
    return kind is int or kind is float or kind is type(None) or issubclass(kind, str)


def _arrow_type(types: set[type]) -> pa.DataType:
    types = types - {type(None)}
    if types == {bool}:
        return pa.bool_()
    if types == {int}:
        return pa.int64()
    if types and types <= {int, float}:
        return pa.float64()
    return pa.string()


def _arrow_column(values: list[Any], kind: pa.DataType) -> pa.Array:
    if kind == pa.string():
        return pa.array([None if v is None else _text(v) for v in values], pa.string())
    try:
        return pa.array(values, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        # A row that came between the page's two reads with a value of another type.
        numeric = {pa.bool_(): (bool,), pa.int64(): (int,)}.get(kind, (int, float))
        return pa.array([v if type(v) in numeric else None for v in values], kind)


class _Sink(io.RawIOBase):
    """Where the Parquet writer writes; drained after every row group."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def drain(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


class ParquetEncoder:
    """One row group per chunk, zstd (fast level); a column's type from its values in the page
    (numbers float64, integers int64, booleans, anything else text; objects as JSON)."""

    media_type = "application/vnd.apache.parquet"

    def __init__(self, columns: Columns) -> None:
        names = columns.names()
        self.plain = columns.plain
        self.schema = pa.schema([(n, _arrow_type(columns.types[n])) for n in names])
        self.sink = _Sink()
        # Dictionaries pay for text (a device id, a mode), not for coordinates and times.
        text = [f.name for f in self.schema if f.type == pa.string()]
        # zstd's fast level compresses coordinates as well as its default here, in two thirds
        # of the time; statistics only where a reader of the file filters (time, device).
        self.writer = pq.ParquetWriter(
            self.sink,
            self.schema,
            compression="zstd",
            compression_level=-1,
            use_dictionary=text,
            write_statistics=[
                n for n in (DEVICE_ID, TIMESTAMP, RECEIVED_AT, "topic") if n in names
            ],
        )

    def head(self) -> bytes:
        return self.sink.drain()

    def chunk(self, table: pa.Table) -> bytes:
        if (
            self.plain
            and not _has_fields(table)
            and set(self.schema.names) <= set(table.column_names)
        ):
            table = pa.Table.from_arrays(
                [table.column(f.name).cast(f.type) for f in self.schema], schema=self.schema
            )
        else:
            rows = _rows(table)
            try:
                table = pa.Table.from_pylist(rows, schema=self.schema)
            except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                # Values pyarrow does not take as they are: objects, or mixed types as text.
                arrays = [
                    _arrow_column([row.get(f.name) for row in rows], f.type) for f in self.schema
                ]
                table = pa.Table.from_arrays(arrays, schema=self.schema)
        self.writer.write_table(table)
        return self.sink.drain()

    def tail(self, cursor: str | None) -> bytes:
        self.writer.close()
        return self.sink.drain()


# --- responses --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One page asked for: where to read it and how to send it."""

    kind: Literal["readings", "raw"]
    source: Source
    window: Window
    after: Key | None
    limit: int
    fmt: Format
    meta: dict[str, Any]
    items: str
    name: str
    """For the file name of CSV and Parquet downloads."""
    drop: str | None = None
    tolerance: float | None = None


def _encoder(request: Request, columns: Columns | None) -> Encoder:
    meta = {**request.meta, "from": request.window.start, "to": request.window.end}
    if request.fmt == "json":
        return JsonEncoder(meta, request.items, request.drop)
    if request.fmt == "geojson":
        return GeoJsonEncoder(meta)
    if request.fmt == "ndjson":
        return NdjsonEncoder()
    assert columns is not None
    if request.fmt == "csv":
        return CsvEncoder(columns)
    return ParquetEncoder(columns)


TIMING_HEADER = "Server-Timing"
COLUMNAR = ("csv", "parquet")


def _timing(timing: dict[str, float], began: float, streamed: bool) -> str:
    """``Server-Timing``: milliseconds spent reading the lake, simplifying, encoding, and in
    all (``total``) before the response started; ``streamed`` when more of the body was
    encoded after that (``total`` then leaves it out). CSV and Parquet encoded while the
    lake is read count in ``lake``, and ``encode`` is what was left after it."""
    parts = [f"{name};dur={seconds * 1000:.1f}" for name, seconds in timing.items()]
    parts.append(f"total;dur={(time.perf_counter() - began) * 1000:.1f}")
    if streamed:
        parts.append("streamed")
    return ", ".join(parts)


def _headers(request: Request, cursor: str | None) -> dict[str, str]:
    headers: dict[str, str] = {}
    if request.fmt in ("csv", "parquet"):
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", request.name)
        headers["Content-Disposition"] = f'attachment; filename="{stem}.{request.fmt}"'
    if cursor is not None and request.fmt in ("ndjson", "csv", "parquet"):
        headers[NEXT_HEADER] = cursor
    return headers


def _next(request: Request, last: Key | None, more: bool) -> str | None:
    if not more or last is None:
        return None
    return Cursor(request.kind, request.window, last).encode()


async def respond(request: Request) -> Response:
    """The page as a response: sent whole when it fits one chunk, else streamed. A lake that
    fails before the first byte is a 503, one that fails later cuts the response short (the
    client sees an incomplete body)."""
    began = time.perf_counter()
    try:
        if request.fmt in ("json", "geojson") and request.tolerance is None:
            return await _respond_once(request, began)
        return await _respond_planned(request, began)
    except LakeFailed as exc:
        raise HTTPException(503, f"the lake failed: {exc}") from exc


def _encode(encoder: Encoder, tables: Iterable[pa.Table], cursor: str | None) -> bytes:
    return b"".join([encoder.head(), *(encoder.chunk(t) for t in tables), encoder.tail(cursor)])


async def _respond_once(request: Request, began: float) -> Response:
    """json and geojson: read once, ``next`` at the end of the body."""
    scan = Scan(request.source, request.after, request.limit)
    chunks = scan.chunks()
    encoder = _encoder(request, None)
    first: pa.Table | None = await anext(chunks, None)
    second: pa.Table | None = None if first is None else await anext(chunks, None)
    timing = {"lake": time.perf_counter() - began}
    if second is None:
        encoding = time.perf_counter()
        tables = [] if first is None else [first]
        data = await asyncio.to_thread(
            _encode, encoder, tables, _next(request, scan.last, scan.more)
        )
        timing["encode"] = time.perf_counter() - encoding
        headers = {**_headers(request, None), TIMING_HEADER: _timing(timing, began, False)}
        return Response(data, media_type=encoder.media_type, headers=headers)

    async def body() -> AsyncIterator[bytes]:
        nonlocal first, second
        held, first, second = [first, second], None, None
        try:
            yield encoder.head()
            for table in held:
                yield await asyncio.to_thread(encoder.chunk, table)
            held = []  # one chunk in memory at a time: not held while the next is read
            while (table := await _more(chunks)) is not None:
                data = await asyncio.to_thread(encoder.chunk, table)
                del table
                yield data
            yield encoder.tail(_next(request, scan.last, scan.more))
        finally:
            await chunks.aclose()

    headers = {**_headers(request, None), TIMING_HEADER: _timing(timing, began, True)}
    return StreamingResponse(body(), media_type=encoder.media_type, headers=headers)


async def _more(chunks: AsyncIterator[pa.Table]) -> pa.Table | None:
    try:
        return await anext(chunks, None)
    except LakeFailed as exc:
        # Too late for a 503: ending the response without its end tells the client.
        log.error("the lake failed in the middle of a history response: %s", exc)
        raise


async def _respond_planned(request: Request, began: float) -> Response:
    early: Encoder | None = None

    def encoder_for(columns: Columns) -> Encoder:
        nonlocal early
        early = _encoder(request, columns)
        return early

    page = await plan(
        request.source,
        request.after,
        request.limit,
        request.tolerance,
        columns=request.fmt in ("csv", "parquet"),
        # Encoding a page while it is read overlaps the two: worth it for the compact
        # formats that need the page's columns anyway, unless it is simplified (most of it
        # is then left out).
        early=encoder_for if request.tolerance is None and request.fmt in COLUMNAR else None,
    )
    cursor = _next(request, page.last, page.more)
    if page.encoded is not None and early is not None:
        page.spool.close()
        data = b"".join([*page.encoded, early.tail(cursor)])
        headers = {**_headers(request, cursor), TIMING_HEADER: _timing(page.timing, began, False)}
        return Response(data, media_type=early.media_type, headers=headers)
    encoder = _encoder(request, page.columns)
    rows = page.spool.rows if page.kept is None else len(page.kept)
    if rows <= CHUNK:
        encoding = time.perf_counter()
        try:
            data = await asyncio.to_thread(_encode, encoder, list(page.tables()), cursor)
        finally:
            page.spool.close()
        page.timing["encode"] = time.perf_counter() - encoding
        headers = {
            **_headers(request, cursor),
            TIMING_HEADER: _timing(page.timing, began, False),
        }
        return Response(data, media_type=encoder.media_type, headers=headers)

    async def body() -> AsyncIterator[bytes]:
        try:
            yield encoder.head()
            tables = page.tables()
            while (table := await asyncio.to_thread(next, tables, None)) is not None:
                data = await asyncio.to_thread(encoder.chunk, table)
                del table
                yield data
            yield encoder.tail(cursor)
        finally:
            page.spool.close()

    headers = {**_headers(request, cursor), TIMING_HEADER: _timing(page.timing, began, True)}
    return StreamingResponse(body(), media_type=encoder.media_type, headers=headers)


def _readings(
    lake: Lake,
    devices: Sequence[str] | None,
    rect: tuple[float, float, float, float] | None,
    window: Window,
) -> Source:
    def batches(after: Key | None, limit: int) -> AsyncGenerator[pa.Table, None]:
        query = ReadingQuery(
            window.start, window.end, devices, rect, cast(ReadingKey | None, after), limit
        )
        return lake.reading_batches(query, CHUNK)

    return Source(batches, (TIMESTAMP, DEVICE_ID, RECEIVED_AT), _READING_COLUMNS)


_RAW_SCHEMA = pa.schema(
    [("topic", pa.string()), (RECEIVED_AT, pa.float64()), ("payload", pa.string()),
     ("encoding", pa.string())]
)  # fmt: skip


def _shape_raw(row: Row) -> Row:
    payload: bytes = row["payload"]
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode(), "base64"
    return {
        "topic": row["topic"],
        "receivedAt": row[RECEIVED_AT],
        "payload": text,
        "encoding": encoding,
    }


def _raw(lake: Lake, topic: str | None, window: Window) -> Source:
    async def batches(after: Key | None, limit: int) -> AsyncGenerator[pa.Table, None]:
        # Raw messages are few: a query per chunk, each continuing the last by key.
        while limit > 0:
            size = min(CHUNK, limit)
            query = RawQuery(
                window.start, window.end, topic, cast(tuple[float, str] | None, after), size
            )
            rows = [_shape_raw(row) for row in await lake.raw_messages(query)]
            if rows:
                yield pa.Table.from_pylist(rows, schema=_RAW_SCHEMA)
            if len(rows) < size:
                return
            limit -= len(rows)
            after = (rows[-1][RECEIVED_AT], rows[-1]["topic"])

    return Source(batches, (RECEIVED_AT, "topic"), _RAW_COLUMNS)


# --- routes -----------------------------------------------------------------------------

_CONTENT: dict[str, dict[str, Any]] = {
    "application/json": {},
    "application/x-ndjson": {},
    "text/csv": {},
    "application/geo+json": {},
    "application/vnd.apache.parquet": {},
}
_POINT = {"timestamp": 1764165600.1, "receivedAt": 1764165600.112, "x": 12.5, "y": 3.25}
_WINDOW = {"from": 1764162000.0, "to": 1764165600.0}
_RAW_EXAMPLE = {
    "topic": "test/hello",
    "receivedAt": 1764165600.112,
    "payload": "hello",
    "encoding": "utf-8",
}


def _responses(
    example: dict[str, Any], *errors: int, geojson: bool = True
) -> dict[int | str, dict[str, Any]]:
    content = {**_CONTENT, "application/json": {"example": {**example, "next": None}}}
    if not geojson:
        del content["application/geo+json"]
    return {
        200: {"description": "The page, in the format asked for", "content": content},
        **dict.fromkeys(errors, ERROR),
        503: ERROR,
    }


@router.get(
    "/api/devices/{device_id}/history",
    responses=_responses({"deviceId": "robot3", **_WINDOW, "points": [_POINT]}, 404),
)
async def device_history(
    device_id: KnownDeviceIdPath,
    lake: LakeDep,
    start: FromQuery = None,
    to: ToQuery = None,
    limit: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_LIMIT,
            description=f"Readings read for the page, at most {MAX_LIMIT:,}; default "
            f"{DEFAULT_LIMIT:,}, or {MAX_LIMIT:,} with `simplify` (a simplified page has "
            "fewer points than it read).",
        ),
    ] = None,
    cursor: CursorQuery = None,
    tolerance: Annotated[
        float | None,
        Query(
            alias="simplify",
            ge=0,
            allow_inf_nan=False,
            description="Ramer-Douglas-Peucker on x/y with this tolerance in metres, keeping "
            "the first and last points; readings without x and y are left out; 0 keeps "
            "every point.",
        ),
    ] = None,
    fmt: FormatQuery = "json",
) -> Response:
    """One device's readings in ascending device time (late readings at their device time);
    an id no device reported gives an empty page. `next` continues the page: in the body
    (json, geojson) or the `X-Next-Cursor` header (ndjson, csv, parquet); absent or null on
    the last page. GeoJSON coordinates are the plane's x/y in metres, not WGS84."""
    after = _cursor("readings", cursor)
    span = window(start, to, after)
    default = DEFAULT_LIMIT if tolerance is None else MAX_LIMIT
    return await respond(
        Request(
            kind="readings",
            source=_readings(lake, [device_id], None, span),
            window=span,
            after=after.key if after else None,
            limit=limit or default,
            fmt=fmt,
            meta={"deviceId": device_id},
            items="points",
            name=f"{device_id}-history",
            drop=DEVICE_ID,
            tolerance=tolerance,
        )
    )


@router.get(
    "/api/history",
    responses=_responses(
        {
            "devices": ["robot3"],
            "rect": None,
            **_WINDOW,
            "points": [{"deviceId": "robot3", **_POINT}],
        }
    ),
)
async def fleet_history(
    lake: LakeDep,
    start: FromQuery = None,
    to: ToQuery = None,
    devices: Annotated[
        list[str] | None,
        Query(description="Comma-separated device ids (or the parameter repeated); default all"),
    ] = None,
    rect: Annotated[
        str | None,
        Query(description="x0,y0,x1,y1: only readings whose x and y lie in this rectangle"),
    ] = None,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
    fmt: FormatQuery = "json",
) -> Response:
    """Readings of many devices (default: all) in ascending device time, then device id.
    Same formats and paging as one device's history; json items are `points`, each with its
    `deviceId`."""
    after = _cursor("readings", cursor)
    span = window(start, to, after)
    ids = device_list(devices)
    area = _rect(rect)
    return await respond(
        Request(
            kind="readings",
            source=_readings(lake, ids, area, span),
            window=span,
            after=after.key if after else None,
            limit=limit or DEFAULT_LIMIT,
            fmt=fmt,
            meta={"devices": ids, "rect": area},
            items="points",
            name="history",
        )
    )


@router.get(
    "/api/raw",
    responses=_responses(
        {"topic": "test/hello", **_WINDOW, "messages": [_RAW_EXAMPLE]}, geojson=False
    ),
)
async def raw_messages(
    lake: LakeDep,
    topic: Annotated[str | None, Query(description="Only this topic; default all")] = None,
    start: FromQuery = None,
    to: ToQuery = None,
    limit: LimitQuery = None,
    cursor: CursorQuery = None,
    fmt: Annotated[
        Literal["json", "ndjson", "csv", "parquet"],
        Query(alias="format", description="json, ndjson, csv or parquet"),
    ] = "json",
) -> Response:
    """Raw messages (topics outside `sensors/...`) in ascending receive time; the window is
    on receive time. `payload` is the text when it is UTF-8, else base64, as `encoding`
    says (`utf-8` or `base64`). json items are `messages`."""
    after = _cursor("raw", cursor)
    span = window(start, to, after)
    return await respond(
        Request(
            kind="raw",
            source=_raw(lake, topic, span),
            window=span,
            after=after.key if after else None,
            limit=limit or DEFAULT_LIMIT,
            fmt=fmt,
            meta={"topic": topic},
            items="messages",
            name="raw",
        )
    )
