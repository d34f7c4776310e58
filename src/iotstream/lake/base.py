"""The lake seam: every event kept in Delta Lake tables, queried by device and time.

Contract, checked by ``tests/lake/suite.py`` on a local directory and on S3-compatible
object storage:

- Tables (``TABLES``): ``readings`` (one row per ``Reading``), ``raw_messages`` (one per
  ``RawMessage``), ``rejected`` (one per ``Rejected``) and ``command_replies`` (one per
  ``CommandReply``), partitioned by the UTC date of the device time (readings) or of the
  receive time (the others).
- ``append(batch, transactions)`` adds each event of ``batch`` to its table, one Delta
  commit per table that has rows; every table's commit records ``transactions`` (Delta
  application transactions: app id -> version) atomically with its rows, and a table
  without rows in the batch records them in a commit of its own, so every table's
  ``versions()`` move together. A writer that knows what it wrote (the archiver) uses
  them to write each event exactly once across crashes.
- ``versions(table)`` is the newest version of every app id recorded in ``table``.
- ``readings(query)`` returns the rows of ``query`` in ascending (timestamp, device id,
  received time) order, at most ``query.limit``; ``query.after`` is the key of the last
  row of the previous page (keyset paging, stable while rows are appended).
- ``reading_batches(query, rows)`` gives the same rows from one scan, as Arrow tables of at
  most ``rows`` rows with the columns of ``READING_SCHEMA``: numbers stay in Arrow arrays and
  the other fields stay JSON text (``reading_rows`` turns a table into ``readings`` rows).
- ``raw_messages(query)`` likewise for raw messages, by receive time.
- ``compact()`` rewrites small files into one per partition sorted by device and time,
  and vacuums what no reader needs; it never blocks ``append`` or the queries.
- ``expire(before)`` deletes the partitions of days before ``before`` (epoch seconds).
- Times are kept to the microsecond: a timestamp reads back as the nearest float to its
  whole number of microseconds.
- Errors of the storage or the query engine are raised as ``LakeError``.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from ..errors import IotstreamError
from ..lifecycle import Component
from ..models import Batch

READINGS = "readings"
RAW_MESSAGES = "raw_messages"
REJECTED = "rejected"
COMMAND_REPLIES = "command_replies"
TABLES = (READINGS, RAW_MESSAGES, REJECTED, COMMAND_REPLIES)


READING_SCHEMA = pa.schema(
    [
        ("deviceId", pa.string()),
        ("timestamp", pa.float64()),
        ("receivedAt", pa.float64()),
        ("x", pa.float64()),
        ("y", pa.float64()),
        ("z", pa.float64()),
        ("fields", pa.string()),
    ]
)
"""What ``reading_batches`` gives: times in epoch seconds; ``x``, ``y``, ``z`` null when not
a number; ``fields`` the JSON object of every other field (null when there is none). A
coordinate sent as anything but a float is also in ``fields``, as sent, and that wins."""

COORDINATE_NAMES = ("x", "y", "z")


class LakeError(IotstreamError):
    """The lake's storage or query engine failed; the message says what was being done."""


ReadingKey = tuple[float, str, float]
"""``(timestamp, device id, received time)``: where a row sorts in history."""


@dataclass(frozen=True, slots=True)
class ReadingQuery:
    """Readings of some devices (``None``: every device) in a device-time window."""

    start: float
    end: float
    """Epoch seconds; rows with ``start <= timestamp <= end``."""
    devices: Sequence[str] | None = None
    rect: tuple[float, float, float, float] | None = None
    """``(x_min, y_min, x_max, y_max)``: only rows whose x and y lie inside."""
    after: ReadingKey | None = None
    limit: int = 10_000


@dataclass(frozen=True, slots=True)
class RawQuery:
    """Raw messages in a receive-time window, of one topic or all."""

    start: float
    end: float
    topic: str | None = None
    after: tuple[float, str] | None = None
    """``(received time, topic)`` of the previous page's last row."""
    limit: int = 10_000


class Lake(Component):
    """Delta tables of every event; start and stop it with ``async with``."""

    @abstractmethod
    async def append(self, batch: Batch, transactions: Mapping[str, int] | None = None) -> None:
        """Add the batch's events to their tables, recording ``transactions`` in each."""

    @abstractmethod
    async def versions(self, table: str) -> dict[str, int]:
        """The newest version of every application transaction recorded in ``table``."""

    @abstractmethod
    async def readings(self, query: ReadingQuery) -> list[dict[str, Any]]:
        """Rows as the history API shows them: ``deviceId``, ``timestamp``, ``receivedAt``,
        ``x``, ``y``, ``z`` when set, and every other field the device reported."""

    @abstractmethod
    def reading_batches(self, query: ReadingQuery, rows: int) -> AsyncGenerator[pa.Table, None]:
        """The rows of ``readings(query)`` from one scan, at most ``rows`` per table, with the
        columns of ``READING_SCHEMA``. Close it (``aclose``) when stopping early."""

    @abstractmethod
    async def raw_messages(self, query: RawQuery) -> list[dict[str, Any]]:
        """Rows with ``topic``, ``payload`` (bytes) and ``receivedAt``."""

    @abstractmethod
    async def compact(self) -> None:
        """Rewrite small files and vacuum; safe while appending and querying."""

    @abstractmethod
    async def expire(self, before: float) -> None:
        """Delete every partition of a day that ended before ``before``."""


def decode_fields(text: str) -> dict[str, Any]:
    """The fields of a ``fields`` JSON text (an int beyond 64 bits too, which orjson refuses)."""
    try:
        value: dict[str, Any] = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = json.loads(text)
    return value


def reading_rows(table: pa.Table) -> list[dict[str, Any]]:
    """A ``reading_batches`` table as ``readings`` rows."""
    columns = [table.column(name).to_pylist() for name in READING_SCHEMA.names]
    rows: list[dict[str, Any]] = []
    append = rows.append
    for device_id, ts, received_at, x, y, z, fields in zip(*columns, strict=True):
        out: dict[str, Any] = {"deviceId": device_id, "timestamp": ts, "receivedAt": received_at}
        if x is not None:
            out["x"] = x
        if y is not None:
            out["y"] = y
        if z is not None:
            out["z"] = z
        if fields is not None:
            out.update(decode_fields(fields))
        append(out)
    return rows
