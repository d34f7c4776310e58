"""The ``fields`` column of ``readings``: every field a device sent but the coordinates and
the server's own, as the JSON text of one object (null when there is none).

Encoding every reading's leftover fields again costs more than half of what archiving a
reading costs, and most readings come from a JSON payload the device already wrote. So for
a reading made from a coordinates message (``Reading.payload``), the column is cut out of
that payload: a compiled scan (numba) copies every member of the object but ``x``, ``y``,
``z``, ``timestamp``, ``deviceId`` and ``receivedAt`` as sent, keys and values byte for byte.
A payload the scan does not take on (a key with an escape, which may spell one of those
names) and every other reading get ``encode_fields``. Either way the text decodes to the
same fields as the reading holds.

Readings without a payload (the archiver read them from Kafka) whose coordinates are floats
(or absent) and which hold none of those other names are written out whole, all in one
``orjson.dumps`` of a list, and each element is cut the same way: cheaper than copying each
one's fields without the coordinates and encoding the copy, with the same text. One dumps
per reading would cost more than it saves: orjson gives each result a buffer of about
4 KiB, so tens of thousands kept at once fault in a hundred megabytes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
from numba import njit

from ..models import Reading


def encode_fields(fields: dict[str, Any]) -> str | None:
    """One reading's leftover fields as JSON text, or ``None`` when there is none."""
    if not fields:
        return None
    try:
        return orjson.dumps(fields).decode()
    except TypeError:  # an int beyond 64 bits, which orjson refuses and json keeps
        return json.dumps(fields, ensure_ascii=False)


_CUT_NAMES = frozenset(("timestamp", "deviceId", "receivedAt"))
_ABSENT = 0.0


def _whole(fields: dict[str, Any]) -> bool:
    """Whether the cut of ``fields`` written out whole leaves what ``encode_fields`` of them
    without the coordinates would: every coordinate a float, no other name the cut leaves
    out."""
    get = fields.get
    return (
        type(get("x", _ABSENT)) is float
        and type(get("y", _ABSENT)) is float
        and type(get("z", _ABSENT)) is float
        and _CUT_NAMES.isdisjoint(fields)
    )


def readings_fields(readings: Sequence[Reading]) -> tuple[pa.Array, np.ndarray]:
    """``cut_fields`` of the readings' payloads, and of their fields written out whole for
    the readings without one that ``_whole`` allows; the rows left are to encode again."""
    payloads = [b"" if r.payload is None else r.payload for r in readings]
    n = len(payloads)
    sizes = np.fromiter(map(len, payloads), np.int64, n)
    ends = np.cumsum(sizes)
    starts = ends - sizes
    data = b"".join(payloads)
    whole = [i for i, r in enumerate(readings) if r.payload is None and _whole(r.fields)]
    if whole:
        try:
            text = orjson.dumps([readings[i].fields for i in whole])
        except TypeError:  # an int beyond 64 bits somewhere: encode_fields takes them all
            text = b""
        if text:
            firsts, lasts = _items(np.frombuffer(text, np.uint8), len(whole))
            at = np.array(whole, np.int64)
            starts[at] = firsts + len(data)
            ends[at] = lasts + len(data)
            data += text
    return _column(np.frombuffer(data, np.uint8), starts, ends)


def _column(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> tuple[pa.Array, np.ndarray]:
    text, offsets, valid, slow = _cut(data, starts, ends, ends > starts)
    column = pa.StringArray.from_buffers(
        len(starts),
        pa.py_buffer(offsets),
        pa.py_buffer(text),
        pa.py_buffer(np.packbits(valid, bitorder="little")),
    )
    return column, np.flatnonzero(slow)


def cut_fields(payloads: Sequence[bytes]) -> tuple[pa.Array, np.ndarray]:
    """The ``fields`` text of each payload's object (a string array, null where nothing is
    left), and the indices of the rows it has no text for: no payload (empty), or one to
    encode again from the reading's fields."""
    sizes = np.fromiter(map(len, payloads), np.int64, len(payloads))
    ends = np.cumsum(sizes)
    return _column(np.frombuffer(b"".join(payloads), np.uint8), ends - sizes, ends)


def warm() -> None:
    """Load (or the first time, compile) the scans now rather than in the first append."""
    cut_fields([b'{"x":1.0,"y":2.0,"a":[1,"b"],"timestamp":3}', b""])
    _items(np.frombuffer(b'[{"a":1},{}]', np.uint8), 2)


# Bytes the scan looks at.
_QUOTE, _BACKSLASH, _COMMA, _COLON = 34, 92, 44, 58
_OPEN_OBJECT, _CLOSE_OBJECT, _OPEN_ARRAY, _CLOSE_ARRAY = 123, 125, 91, 93


@njit(cache=True, nogil=True)
def _space(c: int) -> bool:
    return c in (32, 9, 10, 13)


@njit(cache=True, nogil=True)
def _skip_space(data: np.ndarray, i: int, end: int) -> int:
    while i < end and _space(data[i]):
        i += 1
    return i


# The longer names the column leaves out, back to back: deviceId, timestamp, receivedAt.
_NAMES = np.frombuffer(b"deviceIdtimestampreceivedAt", np.uint8)


@njit(cache=True, nogil=True)
def _left_out(data: np.ndarray, start: int, end: int) -> bool:
    """Whether the key whose text (without quotes) is ``data[start:end]`` is one the
    column leaves out: x, y, z, timestamp, deviceId, receivedAt."""
    size = end - start
    if size == 1:
        return bool(data[start] in (120, 121, 122))  # x y z
    if size == 8:
        at = 0
    elif size == 9:
        at = 8
    elif size == 10:
        at = 17
    else:
        return False
    i = 0
    while i < size and data[start + i] == _NAMES[at + i]:
        i += 1
    return i == size


@njit(cache=True, nogil=True)
def _string_end(data: np.ndarray, i: int, end: int) -> int:
    """Past the closing quote of the string whose opening quote is at ``i``."""
    i += 1
    while i < end:
        c = data[i]
        if c == _BACKSLASH:
            i += 2
            continue
        i += 1
        if c == _QUOTE:
            return i
    return -1


@njit(cache=True, nogil=True)
def _value_end(data: np.ndarray, i: int, end: int) -> int:
    """Past the JSON value starting at ``i`` (the payload is valid JSON: orjson read it)."""
    c = data[i]
    if c == _QUOTE:
        return _string_end(data, i, end)
    if c in (_OPEN_OBJECT, _OPEN_ARRAY):
        depth = 0
        while i < end:
            c = data[i]
            if c == _QUOTE:
                i = _string_end(data, i, end)
                if i < 0:
                    return -1
                continue
            if c in (_OPEN_OBJECT, _OPEN_ARRAY):
                depth += 1
            elif c in (_CLOSE_OBJECT, _CLOSE_ARRAY):
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return -1
    while i < end:  # a number, true, false or null
        c = data[i]
        if c in (_COMMA, _CLOSE_OBJECT) or _space(c):
            return i
        i += 1
    return -1


@njit(cache=True, nogil=True)
def _cut(
    data: np.ndarray, starts: np.ndarray, ends: np.ndarray, present: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(starts)
    text = np.empty(len(data) + 2 * n, np.uint8)
    offsets = np.zeros(n + 1, np.int32)
    valid = np.zeros(n, np.bool_)
    slow = np.zeros(n, np.bool_)
    at = 0
    for row in range(n):
        offsets[row] = at
        if not present[row]:
            slow[row] = True
            continue
        begin = at
        end = ends[row]
        i = _skip_space(data, starts[row], end)
        if i >= end or data[i] != _OPEN_OBJECT:
            slow[row] = True
            continue
        i += 1
        text[at] = _OPEN_OBJECT
        at += 1
        members = 0
        ok = True
        while True:
            i = _skip_space(data, i, end)
            if i >= end:
                ok = False
                break
            if data[i] == _CLOSE_OBJECT:
                break
            if data[i] != _QUOTE:
                ok = False
                break
            key = i
            key_end = _string_end(data, i, end)
            if key_end < 0:
                ok = False
                break
            for k in range(key + 1, key_end - 1):
                if data[k] == _BACKSLASH:  # an escape may spell a name left out
                    ok = False
            if not ok:
                break
            i = _skip_space(data, key_end, end)
            if i >= end or data[i] != _COLON:
                ok = False
                break
            i = _skip_space(data, i + 1, end)
            if i >= end:
                ok = False
                break
            value = i
            i = _value_end(data, i, end)
            if i < 0:
                ok = False
                break
            if not _left_out(data, key + 1, key_end - 1):
                if members:
                    text[at] = _COMMA
                    at += 1
                text[at : at + key_end - key] = data[key:key_end]
                at += key_end - key
                text[at] = _COLON
                at += 1
                text[at : at + i - value] = data[value:i]
                at += i - value
                members += 1
            i = _skip_space(data, i, end)
            if i < end and data[i] == _COMMA:
                i += 1
                continue
            if i < end and data[i] == _CLOSE_OBJECT:
                break
            ok = False
            break
        if not ok:
            slow[row] = True
            at = begin
        elif members:
            text[at] = _CLOSE_OBJECT
            at += 1
            valid[row] = True
        else:
            at = begin
    offsets[n] = at
    return text[:at], offsets, valid, slow


@njit(cache=True, nogil=True)
def _items(data: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Where each of the ``n`` values of the JSON array ``data`` (orjson's: compact) starts
    and ends."""
    starts = np.empty(n, np.int64)
    ends = np.empty(n, np.int64)
    i = 1  # past "["
    for k in range(n):
        starts[k] = i
        i = _value_end(data, i, len(data))
        ends[k] = i
        i += 1  # past "," or the closing "]"
    return starts, ends
