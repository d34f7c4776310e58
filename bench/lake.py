"""The lake under the bench: what the archiver wrote, and history queried through HTTP.

- ``count_lake``: after a server stopped (its archiver writes what it holds first), the
  ``readings`` table is read with deltalake and pyarrow and every device's rows are compared
  with what the generator sent: a ``seq`` sent but not in the lake is lost, one there twice
  is a duplicate.
- ``run_history``: one device-day at 10 Hz is loaded into a fresh lake with
  ``DeltaLake.append`` (an hour a commit) and compacted; sixty appends like the archiver's go
  into another, each one's CPU timed (``_archiver_appends``); its bytes on disk are counted per
  reading and per column; then ``iotstream run --lake-url`` serves it and the bench times
  history requests through HTTP: on the client, request to last byte, and on the server,
  the ``Server-Timing`` header (what it did before the first byte; ``streamed`` when the
  body was still being encoded after it).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import BenchError
from .systems import EmbeddedServer

DEVICE = "robot-0001"
RATE_HZ = 10.0
APPEND_SECONDS = 3600.0
"""Device time per lake append while loading (one commit per hour of readings)."""
REPEATS = 7
"""Timed requests per query, after one untimed request."""


def count_lake(lake: Path, sent: dict[str, int]) -> dict[str, Any]:
    """Rows of ``lake``'s readings table of the devices in ``sent`` against what was sent
    (``sent[device]`` messages with ``seq`` 0 to n - 1)."""
    import pyarrow as pa
    import pyarrow.compute

    pc: Any = pyarrow.compute  # its functions are made at import, without type hints
    from deltalake import DeltaTable

    began = time.monotonic()
    table = DeltaTable(str(lake / "readings")).to_pyarrow_table(columns=["device_id", "fields"])
    table = table.filter(pc.is_in(table.column("device_id"), pa.array(list(sent))))
    found = pc.extract_regex(table.column("fields").combine_chunks(), r'"seq":(?P<seq>\d+)')
    seq = pc.struct_field(found, "seq")
    keys = pa.table({"device": table.column("device_id"), "seq": seq.cast(pa.int64())})
    unique = keys.group_by(["device", "seq"]).aggregate([])
    held = dict(
        zip(
            *unique.group_by("device").aggregate([("seq", "count")]).to_pydict().values(),
            strict=True,
        )
    )
    missing = sum(max(0, n - held.get(device, 0)) for device, n in sent.items())
    return {
        "rows": table.num_rows,
        "sent": sum(sent.values()),
        "missing": missing,
        "duplicates": table.num_rows - unique.num_rows,
        "unknownSeq": keys.column("seq").null_count,
        "countSeconds": round(time.monotonic() - began, 2),
    }


@dataclass(frozen=True)
class Query:
    name: str
    title: str
    params: dict[str, str]
    target_ms: float | None = None


def _track(n: int, start: float) -> tuple[Any, Any, Any, Any]:
    """A robot driving loops around a warehouse at about 1 m/s: device times at 10 Hz with a
    few milliseconds of clock jitter, arrival 5-30 ms later, x/y in metres to the millimetre
    (what odometry reports), with a little noise."""
    import numpy as np

    rng = np.random.default_rng(9)
    t = np.arange(n) / RATE_HZ
    ts = start + t + rng.integers(0, 4000, n) / 1e6
    received = ts + rng.integers(5000, 30000, n) / 1e6
    angle = t / 60.0
    x = np.round(50 + 40 * np.cos(angle) + 5 * np.sin(t / 7) + rng.normal(0, 0.005, n), 3)
    y = np.round(30 + 25 * np.sin(angle) + rng.normal(0, 0.005, n), 3)
    return ts, received, x, y


async def _load(url: str, points: int, start: float) -> dict[str, Any]:
    from iotstream.lake.delta import DeltaLake
    from iotstream.models import Batch, DeviceId, Reading

    device = DeviceId(DEVICE)
    ts, received, x, y = _track(points, start)
    per_append = int(APPEND_SECONDS * RATE_HZ)
    began = time.monotonic()
    async with DeltaLake(url) as lake:
        for first in range(0, points, per_append):
            end = min(points, first + per_append)
            readings = [
                Reading(device, {"x": float(x[i]), "y": float(y[i])}, float(ts[i]),
                        float(received[i]))
                for i in range(first, end)
            ]  # fmt: skip
            await lake.append(Batch(readings=readings))
        loaded = time.monotonic() - began
        began = time.monotonic()
        await lake.compact()
        compacted = time.monotonic() - began
    return {"loadSeconds": round(loaded, 1), "compactSeconds": round(compacted, 1)}


ARCHIVER_APPENDS = 60
"""Appends of ``_archiver_appends``: past half of the hundred versions between checkpoints."""
ARCHIVER_DEVICES = 1000
ARCHIVER_ROWS = 5000
"""Readings per append of ``_archiver_appends``: a second of 1,000 devices at 5 Hz."""


async def _archiver_appends(url: str, start: float) -> dict[str, Any]:
    """Appends like the archiver's (a second of a fleet, with its bus offset as a transaction)
    into a fresh lake: the process CPU of one (all four tables' commits), median over the
    first and the last ten, since what a commit costs may grow with the versions since the
    last checkpoint."""
    from iotstream.lake.delta import DeltaLake
    from iotstream.models import Batch, DeviceId, Reading

    devices = [DeviceId(f"robot-{d:04d}") for d in range(ARCHIVER_DEVICES)]
    per_device = ARCHIVER_ROWS // ARCHIVER_DEVICES
    cpu: list[float] = []
    async with DeltaLake(url) as lake:
        for n in range(ARCHIVER_APPENDS):
            t = start + n
            readings = [
                Reading(device, {"x": k / 10, "y": d / 10, "seq": n}, t + k / 10, t + k / 10)
                for k in range(per_device)
                for d, device in enumerate(devices)
            ]
            began = time.process_time()
            await lake.append(Batch(readings=readings), {"bench/0": n})
            cpu.append((time.process_time() - began) * 1000)
    return {
        "appends": ARCHIVER_APPENDS,
        "rowsPerAppend": ARCHIVER_ROWS,
        "firstCpuMs": round(statistics.median(cpu[:10]), 1),
        "lastCpuMs": round(statistics.median(cpu[-10:]), 1),
    }


def _on_disk(url: str, points: int) -> dict[str, Any]:
    """Bytes of the readings table's current files, in all and per column and reading."""
    import pyarrow.parquet as pq
    from deltalake import DeltaTable

    files = DeltaTable(f"{url}/readings").file_uris()
    size = sum(Path(f).stat().st_size for f in files)
    columns: dict[str, int] = {}
    encodings: dict[str, list[str]] = {}
    for path in files:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                column = group.column(c)
                name = column.path_in_schema
                columns[name] = columns.get(name, 0) + column.total_compressed_size
                encodings[name] = sorted(set(encodings.get(name, [])) | set(column.encodings))
    per = {name: round(size / points, 2) for name, size in columns.items()}
    return {
        "points": points,
        "files": len(files),
        "bytesOnDisk": size,
        "bytesPerReading": round(size / points, 2),
        "columnBytesPerReading": per,
        "tsXyBytesPerReading": round(sum(per.get(c, 0) for c in ("ts", "x", "y")), 2),
        "encodings": encodings,
    }


def _timing(header: str | None) -> dict[str, Any]:
    """The ``Server-Timing`` header as ``{name: ms}``, and ``streamed``."""
    parts: dict[str, Any] = {"streamed": False}
    for part in (header or "").split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name == "streamed":
            parts["streamed"] = True
        elif duration:
            parts[name] = float(duration)
    return parts


def _get(url: str) -> tuple[float, float, int, dict[str, Any], int | None]:
    """Client ms to the first byte and to the last, bytes, Server-Timing, points (json)."""
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        first = time.perf_counter()
        header = response.headers.get("Server-Timing")
        body = response.read()
    done = time.perf_counter()
    return (first - began) * 1000, (done - began) * 1000, len(body), _timing(header), None


def _points(url: str) -> int | None:
    """Points in the answer (its own reader: JSON or Parquet), read once, untimed."""
    import io

    import orjson
    import pyarrow.parquet as pq

    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    if "format=parquet" in url:
        return int(pq.read_metadata(io.BytesIO(body)).num_rows)
    return len(orjson.loads(body)["points"])


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def time_query(http: str, query: Query, repeats: int = REPEATS) -> dict[str, Any]:
    url = f"{http}/api/devices/{DEVICE}/history?{urllib.parse.urlencode(query.params)}"
    points = _points(url)  # also warms the server's snapshot of the table
    runs = [_get(url) for _ in range(repeats)]
    server = [run[3] for run in runs]
    total = [s.get("total", math.nan) for s in server]
    client = [run[1] for run in runs]
    result: dict[str, Any] = {
        "name": query.name,
        "title": query.title,
        "params": query.params,
        "points": points,
        "bytes": runs[-1][2],
        "repeats": repeats,
        "clientMs": _summary(client),
        "firstByteMs": _summary([run[0] for run in runs]),
        "serverMs": _summary(total),
        "serverStreamed": any(s["streamed"] for s in server),
        "serverTiming": {
            name: round(statistics.median(s.get(name, 0.0) for s in server), 1)
            for name in sorted({k for s in server for k in s if k != "streamed"})
        },
        "targetMs": query.target_ms,
        # The target is judged on the client's median: what a user waits for.
        "met": None if query.target_ms is None else statistics.median(client) <= query.target_ms,
    }
    return result


def queries(start: float, seconds: float) -> list[Query]:
    end = repr(start + seconds - 1e-6)
    hour = min(3600.0, seconds)
    middle = start + max(0.0, seconds / 2 - hour / 2)
    whole = {"from": repr(start), "to": end}
    return [
        Query(
            "hour-json",
            "1 hour as JSON",
            {"from": repr(middle), "to": repr(middle + hour - 1e-6), "limit": "1000000"},
            50,
        ),
        Query(
            "day-simplified",
            "whole day simplified to 0.05 m (JSON)",
            {**whole, "simplify": "0.05"},
            200,
        ),
        Query(
            "day-parquet",
            "whole day as Parquet",
            {**whole, "format": "parquet", "limit": "1000000"},
            300,
        ),
        Query("day-json", "whole day as JSON", {**whole, "limit": "1000000"}),
    ]


def run_history(workdir: Path, seconds: float) -> dict[str, Any]:
    """Load ``seconds`` of one device at 10 Hz (ending at yesterday's end), serve it, time it."""
    points = int(seconds * RATE_HZ)
    day = 86_400.0
    start = (time.time() // day - 1) * day
    lake = workdir / "lake"
    loaded = asyncio.run(_load(str(lake), points, start))
    loaded = {**_on_disk(str(lake), points), **loaded}
    loaded["archiverAppends"] = asyncio.run(_archiver_appends(str(workdir / "appends"), start))
    server = EmbeddedServer(workdir / "server", ["--lake-url", str(lake)])
    with server:
        server.start("bench-history")
        results = [time_query(server.http, q) for q in queries(start, seconds)]
    if not all(r["points"] for r in results[:3]):
        raise BenchError(f"a history query found no points: {results}")
    return {"lake": loaded, "queries": results}
