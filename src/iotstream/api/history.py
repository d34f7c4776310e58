"""History from the lake: readings and raw messages, a page at a time, in five formats.

- ``GET /api/devices/{device_id}/history``  one device's readings, optionally simplified
- ``GET /api/history``                      readings of many devices (or all), by time
- ``GET /api/raw``                          raw messages, by receive time

A page is at most ``limit`` rows after ``cursor`` in the ``from``..``to`` window, in the
lake's order; its cursor continues it by key (keyset paging), so rows arriving meanwhile
are neither skipped nor repeated. The lake is read ``CHUNK`` rows at a time and every
format is written a chunk at a time, so a long export holds one chunk in memory.

json and GeoJSON are sent as they are read, ``next`` last. CSV and Parquet need the page's
columns before their first byte, a simplified track needs every position of the page, and
ndjson, CSV and Parquet carry the next cursor in a header: for these the page is read
first, its chunks kept in a temporary file when there are more than one, then sent.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import csv
import io
import logging
import math
import re
import tempfile
import time
from array import array
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import accumulate, islice, pairwise
from operator import itemgetter
from typing import Annotated, Any, Literal, Protocol, cast

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import shapely  # type: ignore[import-untyped]
from fastapi import APIRouter, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from ..errors import InvalidDeviceId, IotstreamError
from ..lake.base import Lake, RawQuery, ReadingKey, ReadingQuery
from ..models import DEVICE_ID, RECEIVED_AT, TIMESTAMP, DeviceId
from .dependencies import KnownDeviceIdPath, LakeDep
from .schemas import ERROR

log = logging.getLogger(__name__)

router = APIRouter(tags=["history"])

CHUNK = 100_000
"""Rows read from the lake and encoded at a time: what one request holds in memory."""
DEFAULT_LIMIT = 10_000
MAX_LIMIT = 1_000_000
DEFAULT_WINDOW = 3600.0
"""Seconds of history before ``to`` when ``from`` is not given."""

Row = dict[str, Any]
Key = tuple[Any, ...]
Format = Literal["json", "ndjson", "csv", "geojson", "parquet"]
NEXT_HEADER = "X-Next-Cursor"

_reading_key = cast(Callable[[Row], Key], itemgetter(TIMESTAMP, DEVICE_ID, RECEIVED_AT))
_raw_key = cast(Callable[[Row], Key], itemgetter(RECEIVED_AT, "topic"))
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


_EARLIEST = datetime(1, 1, 1, tzinfo=UTC).timestamp()
_LATEST = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


def parse_time(name: str, text: str) -> float:
    """Epoch seconds from epoch seconds or ISO 8601 text; a time without a zone is UTC."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise invalid(name, "not epoch seconds or an ISO 8601 time", text) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            seconds = moment.timestamp()
        except (ValueError, OverflowError):  # a zone pushing it past year 1 or 9999
            seconds = math.inf
    if not _EARLIEST <= seconds <= _LATEST:  # NaN too
        raise invalid(name, "time is not between the years 1 and 9999", text)
    return seconds


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


def _devices(texts: list[str] | None) -> list[DeviceId] | None:
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
    """What a page reads: ``read(after, limit, end)`` gives rows in key order with
    ``start <= time <= end``, and ``key`` the key of a row. ``columns``: the columns CSV and
    Parquet always have, even on an empty page."""

    read: Callable[[Key | None, int, float], Awaitable[list[Row]]]
    key: Callable[[Row], Key]
    end: float
    columns: dict[str, type]


class Scan:
    """One page, a chunk at a time: at most ``limit`` rows after ``after``. Once the chunks
    are exhausted, ``last`` is the key of the last row and ``more`` says whether the window
    holds rows after it."""

    def __init__(self, source: Source, after: Key | None, limit: int) -> None:
        self.source = source
        self.after = after
        self.limit = limit
        self.last = after
        self.more = False

    async def chunks(self) -> AsyncGenerator[list[Row], None]:
        source, after, remaining = self.source, self.after, self.limit
        while remaining > 0:
            size = min(CHUNK, remaining)
            try:
                # One row more than needed says whether there are more.
                rows = await source.read(after, size + 1, source.end)
            except (IotstreamError, OSError) as exc:
                raise LakeFailed(str(exc) or type(exc).__name__) from exc
            more = len(rows) > size
            del rows[size:]
            if rows:
                after = self.last = source.key(rows[-1])
                remaining -= len(rows)
                yield rows
                rows = []  # not held while the next chunk is read
            if not more:
                return
        self.more = True


class Spool:
    """The rows of a page kept on disk (one JSON object a line) between reading the page and
    sending it, so that memory holds one chunk and the lake is read once. ``bounds`` are
    the indices where the lake's chunks begin, and the end."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile()  # noqa: SIM115 (closed by close())
        self.offsets = array("q", [0])
        """Where each row begins in the file, and where the last one ends."""
        self.bounds = [0]

    def write(self, rows: list[Row]) -> None:
        lines = [orjson.dumps(row) + b"\n" for row in rows]
        self.offsets.extend(islice(accumulate(map(len, lines), initial=self.offsets[-1]), 1, None))
        self.file.write(b"".join(lines))
        self.bounds.append(self.bounds[-1] + len(rows))

    def read(self, first: int, end: int, picked: list[int] | None = None) -> list[Row]:
        """Rows ``first`` to ``end - 1``, or only those in ``picked`` (indices among them)."""
        offsets, base = self.offsets, self.offsets[first]
        self.file.seek(base)
        data = self.file.read(offsets[end] - base)
        if picked is None:
            return [orjson.loads(line) for line in data.splitlines()]
        return [orjson.loads(data[offsets[i] - base : offsets[i + 1] - base]) for i in picked]

    def close(self) -> None:
        self.file.close()


@dataclass(slots=True)
class Columns:
    """The columns of a page's rows, each with the types of its values."""

    types: dict[str, set[type]] = field(default_factory=dict)
    _seen: set[tuple[tuple[str, ...], tuple[type, ...]]] = field(default_factory=set)

    def add(self, rows: list[Row]) -> None:
        seen = self._seen
        for row in rows:
            seen.add((tuple(row), tuple(map(type, row.values()))))

    def names(self) -> list[str]:
        self._fold()
        leading = [name for name in _LEADING if name in self.types]
        return leading + sorted(self.types.keys() - set(leading))

    def _fold(self) -> None:
        for names, types in self._seen:
            for name, kind in zip(names, types, strict=True):
                self.types.setdefault(name, set()).add(kind)
        self._seen.clear()


@dataclass(slots=True)
class Plan:
    """A page read before its response starts: its end, and its rows in memory (when it
    fit in one chunk) or spooled to disk."""

    last: Key | None
    more: bool
    columns: Columns
    rows: list[Row] | None = None
    spool: Spool | None = None
    kept: np.ndarray | None = None
    """With ``simplify``, the indices (among the spooled rows) of the rows RDP keeps."""


def simplify(x: np.ndarray, y: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the points Ramer-Douglas-Peucker keeps at ``tolerance`` metres: always
    the first and the last; every point when the tolerance is 0."""
    n = len(x)
    if n <= 2 or tolerance <= 0:
        return np.arange(n)
    # GEOS keeps the coordinates it keeps whole, so a point's index rides along as its z.
    line = shapely.linestrings(np.column_stack((x, y, np.arange(n, dtype=np.float64))))
    simple = shapely.simplify(line, tolerance, preserve_topology=False)
    kept = shapely.get_coordinates(simple, include_z=True)[:, 2].astype(np.int64)
    return np.union1d(kept, [0, n - 1])


def _number(value: object) -> bool:
    return type(value) is float or type(value) is int


def _positions(rows: list[Row]) -> tuple[list[Row], np.ndarray, np.ndarray]:
    """The rows with a position (numbers for x and y: a device may send text on
    ``sensors/{id}/x``), and their x and y."""
    xs, ys = [row.get("x") for row in rows], [row.get("y") for row in rows]
    if not {*map(type, xs), *map(type, ys)} <= {float, int}:
        rows = [row for row in rows if _number(row.get("x")) and _number(row.get("y"))]
        xs, ys = [row["x"] for row in rows], [row["y"] for row in rows]
    return rows, np.array(xs, dtype=np.float64), np.array(ys, dtype=np.float64)


async def plan(
    source: Source, after: Key | None, limit: int, tolerance: float | None, columns: bool
) -> Plan:
    """Read the page: its end, with ``columns`` its columns, with ``tolerance`` only the
    rows that have a position, and what RDP keeps of them."""
    scan = Scan(source, after, limit)
    found = Columns({name: {kind} for name, kind in source.columns.items()})
    held: list[Row] = []
    spool: Spool | None = None
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    try:
        async for rows in scan.chunks():
            if tolerance is not None:
                rows, x, y = _positions(rows)
                xs.append(x)
                ys.append(y)
            if columns:
                found.add(rows)
            if spool is None and not held:
                held = rows
            else:
                if spool is None:
                    spool = Spool()
                    await asyncio.to_thread(spool.write, held)
                    held = []
                await asyncio.to_thread(spool.write, rows)
            del rows  # not held while the next chunk is read
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    page = Plan(scan.last, scan.more, found, held if spool is None else None, spool)
    if tolerance is not None:
        x, y = np.concatenate([*xs, np.empty(0)]), np.concatenate([*ys, np.empty(0)])
        page.kept = await asyncio.to_thread(simplify, x, y, tolerance)
        if page.rows is not None:
            page.rows = [page.rows[i] for i in page.kept.tolist()]
    return page


# --- formats ----------------------------------------------------------------------------


class Encoder(Protocol):
    media_type: str

    def head(self) -> bytes: ...

    def chunk(self, rows: list[Row]) -> bytes: ...

    def tail(self, cursor: str | None) -> bytes: ...


class JsonEncoder:
    """``{...meta, "<items>": [...], "next": cursor}``, ``drop`` left out of each item."""

    media_type = "application/json"

    def __init__(self, meta: dict[str, Any], items: str, drop: str | None = None) -> None:
        self.meta, self.items, self.drop = meta, items, drop
        self.first = True

    def head(self) -> bytes:
        return orjson.dumps(self.meta)[:-1] + f',"{self.items}":['.encode()

    def chunk(self, rows: list[Row]) -> bytes:
        if not rows:
            return b""
        if self.drop is not None:
            for row in rows:
                row.pop(self.drop, None)
        body = orjson.dumps(rows)[1:-1]
        if self.first:
            self.first = False
            return body
        return b"," + body

    def tail(self, cursor: str | None) -> bytes:
        return b'],"next":' + orjson.dumps(cursor) + b"}"


class GeoJsonEncoder(JsonEncoder):
    """A FeatureCollection of Points at the plane's x/y in metres (not WGS84), the other
    values as properties; a reading without x and y has a null geometry. The page's
    metadata and ``next`` are foreign members of the collection."""

    media_type = "application/geo+json"

    def __init__(self, meta: dict[str, Any]) -> None:
        super().__init__({"type": "FeatureCollection", **meta}, "features")

    def chunk(self, rows: list[Row]) -> bytes:
        return super().chunk([_feature(row) for row in rows])


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

    def chunk(self, rows: list[Row]) -> bytes:
        return b"".join(orjson.dumps(row) + b"\n" for row in rows)

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


class CsvEncoder:
    """A header row of the page's columns, then one row per reading; an empty cell where a
    reading lacks the column; objects and lists as JSON."""

    media_type = "text/csv; charset=utf-8"

    def __init__(self, columns: Columns) -> None:
        self.columns = columns.names()
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

    def chunk(self, rows: list[Row]) -> bytes:
        columns = self.columns
        lines = [[row.get(c) for c in columns] for row in rows]
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


class _Spool(io.RawIOBase):
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
    """One row group per chunk, zstd; a column's type from its values in the page
    (numbers float64, integers int64, booleans, anything else text; objects as JSON)."""

    media_type = "application/vnd.apache.parquet"

    def __init__(self, columns: Columns) -> None:
        names = columns.names()
        self.schema = pa.schema([(n, _arrow_type(columns.types[n])) for n in names])
        self.spool = _Spool()
        self.writer = pq.ParquetWriter(self.spool, self.schema, compression="zstd")

    def head(self) -> bytes:
        return self.spool.drain()

    def chunk(self, rows: list[Row]) -> bytes:
        try:
            table = pa.Table.from_pylist(rows, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            # Values pyarrow does not take as they are: objects, or mixed types as text.
            arrays = [_arrow_column([row.get(f.name) for row in rows], f.type) for f in self.schema]
            table = pa.Table.from_arrays(arrays, schema=self.schema)
        self.writer.write_table(table)
        return self.spool.drain()

    def tail(self, cursor: str | None) -> bytes:
        self.writer.close()
        return self.spool.drain()


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
    """The page as a streamed response; a lake that fails before the first byte is a 503,
    one that fails later cuts the response short (the client sees an incomplete body)."""
    try:
        if request.fmt in ("json", "geojson") and request.tolerance is None:
            return await _respond_once(request)
        return await _respond_planned(request)
    except LakeFailed as exc:
        raise HTTPException(503, f"the lake failed: {exc}") from exc


async def _respond_once(request: Request) -> Response:
    """json and geojson: read once, ``next`` at the end of the body."""
    scan = Scan(request.source, request.after, request.limit)
    chunks = scan.chunks()
    first: list[Row] | None = await anext(chunks, [])
    encoder = _encoder(request, None)

    async def body() -> AsyncIterator[bytes]:
        nonlocal first
        rows, first = first or [], None
        try:
            yield encoder.head()
            while rows:
                data = await asyncio.to_thread(encoder.chunk, rows)
                rows = []  # one chunk in memory at a time: not held while the next is read
                yield data
                rows = await _more(chunks)
            yield encoder.tail(_next(request, scan.last, scan.more))
        finally:
            await chunks.aclose()

    return StreamingResponse(body(), media_type=encoder.media_type, headers=_headers(request, None))


async def _more(chunks: AsyncIterator[list[Row]]) -> list[Row]:
    try:
        return await anext(chunks, [])
    except LakeFailed as exc:
        # Too late for a 503: ending the response without its end tells the client.
        log.error("the lake failed in the middle of a history response: %s", exc)
        raise


async def _respond_planned(request: Request) -> Response:
    page = await plan(
        request.source,
        request.after,
        request.limit,
        request.tolerance,
        columns=request.fmt in ("csv", "parquet"),
    )
    cursor = _next(request, page.last, page.more)
    encoder = _encoder(request, page.columns)
    held, spool, kept = page.rows, page.spool, page.kept

    async def body() -> AsyncIterator[bytes]:
        nonlocal held
        rows, held = held, None
        try:
            yield encoder.head()
            if spool is not None:
                for first, end in pairwise(spool.bounds):
                    picked: list[int] | None = None
                    if kept is not None:
                        within = slice(np.searchsorted(kept, first), np.searchsorted(kept, end))
                        picked = kept[within].tolist()
                    chunk = await asyncio.to_thread(spool.read, first, end, picked)
                    if chunk:
                        data = await asyncio.to_thread(encoder.chunk, chunk)
                        chunk = []
                        yield data
            elif rows:
                for start in range(0, len(rows), CHUNK):
                    yield await asyncio.to_thread(encoder.chunk, rows[start : start + CHUNK])
            yield encoder.tail(cursor)
        finally:
            if spool is not None:
                spool.close()

    return StreamingResponse(
        body(), media_type=encoder.media_type, headers=_headers(request, cursor)
    )


def _readings(
    lake: Lake,
    devices: Sequence[str] | None,
    rect: tuple[float, float, float, float] | None,
    window: Window,
) -> Source:
    async def read(after: Key | None, limit: int, end: float) -> list[Row]:
        query = ReadingQuery(
            window.start, end, devices, rect, cast(ReadingKey | None, after), limit
        )
        return await lake.readings(query)

    return Source(read, _reading_key, window.end, _READING_COLUMNS)


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
    async def read(after: Key | None, limit: int, end: float) -> list[Row]:
        query = RawQuery(window.start, end, topic, cast(tuple[float, str] | None, after), limit)
        return [_shape_raw(row) for row in await lake.raw_messages(query)]

    return Source(read, _raw_key, window.end, _RAW_COLUMNS)


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
    ids = _devices(devices)
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
