"""GET /api/devices/{device_id}/history, /api/history and /api/raw over a real Delta lake in a
temporary directory: every format read back with an independent reader, paging across
appends, simplification, late readings, times, bad parameters and a lake that is off or
failing."""

from __future__ import annotations

import base64
import csv
import io
import json
import random
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi import Depends, HTTPException

import iotstream.api
from iotstream.api import ApiContext, create_app, history
from iotstream.lake import LakeError, ReadingQuery
from iotstream.lake.delta import DeltaLake
from iotstream.models import Batch, DeviceId, RawMessage, Reading

T0 = 1_764_000_000.0
"""2025-11-24T16:00:00Z: device times in the tests are T0 + seconds."""
WINDOW = {"from": str(T0), "to": str(T0 + 1000)}


@pytest.fixture
async def lake(tmp_path: Path) -> AsyncIterator[DeltaLake]:
    async with DeltaLake(str(tmp_path / "lake")) as lake:
        yield lake


@pytest.fixture
def context(context: ApiContext, lake: DeltaLake) -> ApiContext:
    context.lake = lake
    return context


def reading(device: str, t: float, received: float | None = None, **fields: Any) -> Reading:
    """A reading at device time T0 + t, received at T0 + t + 0.25 unless said otherwise."""
    received_at = T0 + t + 0.25 if received is None else T0 + received
    return Reading(DeviceId.parse(device), fields, T0 + t, received_at)


async def add(lake: DeltaLake, *readings: Reading, raw: list[RawMessage] | None = None) -> None:
    await lake.append(Batch(readings=list(readings), raw=raw or []))


def point(r: Reading) -> dict[str, Any]:
    """A reading as a point of one device's JSON history."""
    return {"timestamp": r.timestamp, "receivedAt": r.received_at, **r.fields}


def row(r: Reading) -> dict[str, Any]:
    """A reading as a row of ndjson, csv, parquet and the fleet's history."""
    return {"deviceId": r.device_id, **point(r)}


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> httpx.Response:
    return await client.get(path, params={k: v for k, v in params.items() if v is not None})


# --- formats ----------------------------------------------------------------------------

TRACK = [
    reading("robot1", 1, x=1.5, y=2.5, heading=90),
    reading("robot1", 2, x=2.0, y=2.5, z=0.5, mode="slam"),
    reading("robot1", 3, x=3.0, y=2.5, battery={"v": 12.1, "ok": True}),
    reading("robot1", 4, motorRPM=1500),  # no position: a scalar sensor topic
]
OTHERS = [reading("robot2", 2.5, x=9.0, y=9.0)]


@pytest.fixture
async def track(lake: DeltaLake) -> None:
    await add(lake, *TRACK, *OTHERS)


async def test_json_is_the_device_window_in_device_time(
    client: httpx.AsyncClient, track: None
) -> None:
    response = await get(client, "/api/devices/robot1/history", **WINDOW)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.content) == {
        "deviceId": "robot1",
        "from": T0,
        "to": T0 + 1000,
        "points": [point(r) for r in TRACK],
        "next": None,
    }


async def test_ndjson_is_one_reading_a_line(client: httpx.AsyncClient, track: None) -> None:
    response = await get(client, "/api/devices/robot1/history", format="ndjson", **WINDOW)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    assert "x-next-cursor" not in response.headers
    lines = response.text.split("\n")
    assert lines[-1] == ""
    assert [json.loads(line) for line in lines[:-1]] == [row(r) for r in TRACK]


async def test_csv_has_a_header_of_every_column_of_the_page(
    client: httpx.AsyncClient, track: None
) -> None:
    response = await get(client, "/api/devices/robot1/history", format="csv", **WINDOW)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == ('attachment; filename="robot1-history.csv"')
    reader = csv.DictReader(io.StringIO(response.text))
    assert reader.fieldnames == [
        "deviceId",
        "timestamp",
        "receivedAt",
        "x",
        "y",
        "z",
        "battery",
        "heading",
        "mode",
        "motorRPM",
    ]
    rows = list(reader)
    assert [float(r["timestamp"]) for r in rows] == [r.timestamp for r in TRACK]
    assert rows[0] == {
        "deviceId": "robot1",
        "timestamp": repr(T0 + 1),
        "receivedAt": repr(T0 + 1.25),
        "x": "1.5",
        "y": "2.5",
        "z": "",
        "battery": "",
        "heading": "90",
        "mode": "",
        "motorRPM": "",
    }
    assert (rows[1]["z"], rows[1]["mode"]) == ("0.5", "slam")
    assert json.loads(rows[2]["battery"]) == {"v": 12.1, "ok": True}
    assert (rows[3]["x"], rows[3]["motorRPM"]) == ("", "1500")


async def test_geojson_is_a_feature_collection_on_the_plane(
    client: httpx.AsyncClient, track: None
) -> None:
    response = await get(client, "/api/devices/robot1/history", format="geojson", **WINDOW)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/geo+json"
    collection = json.loads(response.content)
    assert collection["type"] == "FeatureCollection"
    assert (collection["deviceId"], collection["next"]) == ("robot1", None)
    features = collection["features"]
    assert all(
        f["type"] == "Feature" and set(f) == {"type", "geometry", "properties"} for f in features
    )
    assert [f["geometry"] for f in features] == [
        {"type": "Point", "coordinates": [1.5, 2.5]},
        {"type": "Point", "coordinates": [2.0, 2.5]},
        {"type": "Point", "coordinates": [3.0, 2.5]},
        None,  # a reading without a position
    ]
    assert features[1]["properties"] == {
        "deviceId": "robot1",
        "timestamp": T0 + 2,
        "receivedAt": T0 + 2.25,
        "z": 0.5,
        "mode": "slam",
    }
    assert features[3]["properties"]["motorRPM"] == 1500


async def test_parquet_is_a_file_pyarrow_reads(client: httpx.AsyncClient, track: None) -> None:
    response = await get(client, "/api/devices/robot1/history", format="parquet", **WINDOW)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    table = pq.read_table(io.BytesIO(response.content))
    types = {field.name: str(field.type) for field in table.schema}
    assert types == {
        "deviceId": "string",
        "timestamp": "double",
        "receivedAt": "double",
        "x": "double",
        "y": "double",
        "z": "double",
        "battery": "string",
        "heading": "int64",
        "mode": "string",
        "motorRPM": "int64",
    }
    rows = table.to_pylist()
    assert [r["timestamp"] for r in rows] == [r.timestamp for r in TRACK]
    assert rows[0] == {
        "deviceId": "robot1",
        "timestamp": T0 + 1,
        "receivedAt": T0 + 1.25,
        "x": 1.5,
        "y": 2.5,
        "z": None,
        "battery": None,
        "heading": 90,
        "mode": None,
        "motorRPM": None,
    }
    assert json.loads(rows[2]["battery"]) == {"v": 12.1, "ok": True}


# --- paging -----------------------------------------------------------------------------


async def page(
    client: httpx.AsyncClient, path: str, fmt: str, cursor: str | None, **params: Any
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a paged request, parsed with its format's own reader, and its cursor."""
    response = await get(client, path, format=fmt, cursor=cursor, **params)
    assert response.status_code == 200, response.text
    if fmt == "json":
        body = json.loads(response.content)
        return body["points"], body["next"]
    cursor = response.headers.get("x-next-cursor")
    if fmt == "ndjson":
        return [json.loads(line) for line in response.text.splitlines()], cursor
    if fmt == "csv":
        rows = [
            {k: v if k == "deviceId" else float(v) for k, v in r.items() if v != ""}
            for r in csv.DictReader(io.StringIO(response.text))
        ]
        return rows, cursor
    return pq.read_table(io.BytesIO(response.content)).to_pylist(), cursor


async def pages(
    client: httpx.AsyncClient, path: str, fmt: str, **params: Any
) -> list[list[dict[str, Any]]]:
    found, cursor = [], None
    while True:
        rows, cursor = await page(client, path, fmt, cursor, **params)
        found.append(rows)
        if cursor is None:
            return found


def key(r: dict[str, Any]) -> tuple[float, str, float]:
    return (r["timestamp"], r.get("deviceId", ""), r["receivedAt"])


@pytest.mark.parametrize("chunk", [1000, 3])
@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv", "parquet"])
async def test_paging_across_appends_neither_loses_nor_repeats(
    client: httpx.AsyncClient,
    lake: DeltaLake,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    chunk: int,
) -> None:
    """Pages of 4 while readings arrive between pages, some ahead of the cursor (seen) and
    some behind it (late, not in this walk's remaining pages). With chunk 3 every page is
    read in two chunks."""
    monkeypatch.setattr(history, "CHUNK", chunk)
    first = [reading("robot1", t, x=t, y=0.0) for t in range(10, 30)]
    await add(lake, *first)
    seen: list[dict[str, Any]] = []
    expected = [row(r) for r in first]
    cursor: str | None = None
    page_no = 0
    while True:
        rows, cursor = await page(
            client, "/api/devices/robot1/history", fmt, cursor, limit=4, **WINDOW
        )
        assert len(rows) <= 4
        seen.extend(rows)
        if cursor is None:
            break
        page_no += 1
        ahead = reading("robot1", 100 + page_no, x=1.0, y=2.0)
        behind = reading("robot1", 0.5 * page_no, x=3.0, y=4.0)  # late, before the cursor
        tie = reading("robot1", seen[-1]["timestamp"] - T0, received=500 + page_no, x=5.0, y=6.0)
        await add(lake, ahead, behind, tie)
        expected += [row(ahead), row(tie)]
    assert page_no >= 6
    got = [(r["timestamp"], r["receivedAt"]) for r in seen]
    assert got == sorted(set(got)), "a row was repeated or out of order"
    assert got == sorted((r["timestamp"], r["receivedAt"]) for r in expected)
    if fmt != "json":  # json points carry no deviceId
        assert {r["deviceId"] for r in seen} == {"robot1"}


async def test_a_cursor_keeps_its_window(client: httpx.AsyncClient, lake: DeltaLake) -> None:
    await add(lake, *[reading("robot1", t, x=t, y=0.0) for t in (1, 2, 3, 500)])
    first = (await get(client, "/api/devices/robot1/history", limit=2, to=T0 + 10)).json()
    assert [p["timestamp"] for p in first["points"]] == [T0 + 1, T0 + 2]
    rest = (await get(client, "/api/devices/robot1/history", cursor=first["next"])).json()
    assert (rest["from"], rest["to"]) == (first["from"], first["to"]) == (T0 - 3590, T0 + 10)
    assert [p["timestamp"] for p in rest["points"]] == [T0 + 3]
    assert rest["next"] is None


async def test_a_full_last_page_says_there_is_no_next(
    client: httpx.AsyncClient, lake: DeltaLake
) -> None:
    await add(lake, *[reading("robot1", t, x=t, y=0.0) for t in (1, 2)])
    body = (await get(client, "/api/devices/robot1/history", limit=2, **WINDOW)).json()
    assert len(body["points"]) == 2
    assert body["next"] is None


# --- simplification ---------------------------------------------------------------------


def noisy_line(n: int, noise: float = 0.01) -> list[Reading]:
    rng = random.Random(7)
    return [reading("robot1", i * 0.125, x=i * 0.1, y=rng.uniform(-noise, noise)) for i in range(n)]


@pytest.mark.parametrize("chunk", [50_000, 64])
async def test_a_straight_noisy_line_simplifies_to_its_ends(
    client: httpx.AsyncClient, lake: DeltaLake, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    monkeypatch.setattr(history, "CHUNK", chunk)
    line = noisy_line(500)
    await add(lake, *line, reading("robot1", 20, motorRPM=10))  # no position: left out
    body = (await get(client, "/api/devices/robot1/history", simplify=0.05, **WINDOW)).json()
    assert body["points"] == [point(line[0]), point(line[-1])]
    assert body["next"] is None


async def test_a_corner_survives_simplification(client: httpx.AsyncClient, lake: DeltaLake) -> None:
    rng = random.Random(3)
    # East 50 m with noise, then north 49 m: the corner at t=50.
    leg1 = [reading("robot1", i, x=float(i), y=rng.uniform(-0.01, 0.01)) for i in range(51)]
    leg2 = [reading("robot1", 50 + i, x=50.0, y=float(i)) for i in range(1, 50)]
    await add(lake, *leg1, *leg2)
    for fmt in ("json", "csv", "parquet"):
        response = await get(
            client, "/api/devices/robot1/history", simplify=0.5, format=fmt, **WINDOW
        )
        if fmt == "json":
            stamps = [p["timestamp"] for p in response.json()["points"]]
        elif fmt == "csv":
            stamps = [float(r["timestamp"]) for r in csv.DictReader(io.StringIO(response.text))]
        else:
            stamps = pq.read_table(io.BytesIO(response.content)).column("timestamp").to_pylist()
        assert stamps == [T0, T0 + 50, T0 + 99], fmt


async def test_simplify_zero_keeps_every_point(client: httpx.AsyncClient, lake: DeltaLake) -> None:
    line = noisy_line(300)
    await add(lake, *line)
    body = (await get(client, "/api/devices/robot1/history", simplify=0, **WINDOW)).json()
    assert body["points"] == [point(r) for r in line]


async def test_a_simplified_page_pages_on(client: httpx.AsyncClient, lake: DeltaLake) -> None:
    line = noisy_line(100)
    await add(lake, *line)
    first = (
        await get(client, "/api/devices/robot1/history", simplify=0.05, limit=60, **WINDOW)
    ).json()
    assert first["points"] == [point(line[0]), point(line[59])]
    rest = (
        await get(client, "/api/devices/robot1/history", simplify=0.05, cursor=first["next"])
    ).json()
    assert rest["points"] == [point(line[60]), point(line[99])]
    assert rest["next"] is None


async def test_text_where_a_coordinate_goes_is_no_position(
    client: httpx.AsyncClient, lake: DeltaLake
) -> None:
    """A device may send anything on sensors/{id}/x: it is kept as sent, but it places
    nothing on the plane."""
    line = [reading("robot1", t, x=float(t), y=0.0) for t in range(5)]
    odd = reading("robot1", 2.5, x="north", y=1.0)
    await add(lake, *line, odd)
    body = (await get(client, "/api/devices/robot1/history", **WINDOW)).json()
    assert point(odd) in body["points"]
    body = (await get(client, "/api/devices/robot1/history", simplify=0.1, **WINDOW)).json()
    assert body["points"] == [point(line[0]), point(line[-1])]
    collection = (
        await get(client, "/api/devices/robot1/history", format="geojson", **WINDOW)
    ).json()
    [feature] = [f for f in collection["features"] if f["geometry"] is None]
    assert feature["properties"]["x"] == "north"


# --- time -------------------------------------------------------------------------------


async def test_late_readings_are_at_their_device_time(
    client: httpx.AsyncClient, lake: DeltaLake
) -> None:
    await add(lake, reading("robot1", 10, x=1.0, y=1.0), reading("robot1", 30, x=3.0, y=3.0))
    late = reading("robot1", 20, received=60, x=2.0, y=2.0)  # sent at 20, arrived at 60
    await add(lake, late)
    body = (await get(client, "/api/devices/robot1/history", **WINDOW)).json()
    assert [(p["timestamp"], p["receivedAt"]) for p in body["points"]] == [
        (T0 + 10, T0 + 10.25),
        (T0 + 20, T0 + 60),
        (T0 + 30, T0 + 30.25),
    ]


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (str(T0 + 15), str(T0 + 25)),
        ("1764000015", "1764000025.0"),
        ("2025-11-24T16:00:15Z", "2025-11-24T16:00:25+00:00"),
        ("2025-11-24T16:00:15", "2025-11-24 16:00:25"),  # no zone: UTC
        ("2025-11-24T17:00:15+01:00", "2025-11-24T11:00:25-05:00"),
    ],
)
async def test_iso_and_epoch_times(
    client: httpx.AsyncClient, lake: DeltaLake, start: str, end: str
) -> None:
    await add(lake, *[reading("robot1", t, x=t, y=0.0) for t in (10, 15, 20, 25, 30)])
    response = await client.get("/api/devices/robot1/history", params={"from": start, "to": end})
    body = response.json()
    assert (body["from"], body["to"]) == (T0 + 15, T0 + 25)
    assert [p["timestamp"] for p in body["points"]] == [T0 + 15, T0 + 20, T0 + 25]


async def test_the_widest_window(client: httpx.AsyncClient, track: None) -> None:
    params = {"from": "0001-01-01", "to": "9999-12-31T23:59:59"}
    body = (await client.get("/api/devices/robot1/history", params=params)).json()
    assert (body["from"], body["to"]) == (-62135596800, 253402300799)
    assert body["points"] == [point(r) for r in TRACK]


async def test_the_default_window_is_the_last_hour(
    client: httpx.AsyncClient, lake: DeltaLake
) -> None:
    now = time.time()
    recent = Reading(DeviceId("robot1"), {"x": 1.0, "y": 1.0}, now - 60, now - 60)
    old = Reading(DeviceId("robot1"), {"x": 2.0, "y": 2.0}, now - 7200, now - 7200)
    await add(lake, recent, old)
    body = (await client.get("/api/devices/robot1/history")).json()
    assert body["to"] - body["from"] == pytest.approx(3600)
    assert body["to"] == pytest.approx(time.time(), abs=5)
    assert [p["x"] for p in body["points"]] == [1.0]


# --- many devices and raw messages ------------------------------------------------------


async def test_many_devices_by_time_with_devices_and_rect(
    client: httpx.AsyncClient, lake: DeltaLake
) -> None:
    a1 = reading("a", 1, x=1.0, y=1.0)
    b1 = reading("b", 1, x=5.0, y=5.0)
    c1 = reading("c", 1.5, x=1.0, y=1.0)
    a2 = reading("a", 2, x=8.0, y=8.0)
    await add(lake, a2, c1, b1, a1)
    body = (await get(client, "/api/history", **WINDOW)).json()
    assert body["points"] == [row(a1), row(b1), row(c1), row(a2)]
    assert (body["devices"], body["rect"], body["next"]) == (None, None, None)
    body = (await get(client, "/api/history", devices="a,b", **WINDOW)).json()
    assert body["points"] == [row(a1), row(b1), row(a2)]
    assert body["devices"] == ["a", "b"]
    body = (await get(client, "/api/history", devices="a,b", rect="6,0,0,6", **WINDOW)).json()
    assert body["points"] == [row(a1), row(b1)]
    assert body["rect"] == [0, 0, 6, 6]
    assert await pages(client, "/api/history", "ndjson", limit=3, **WINDOW) == [
        [row(a1), row(b1), row(c1)],
        [row(a2)],
    ]


async def test_raw_messages_as_text_or_base64(client: httpx.AsyncClient, lake: DeltaLake) -> None:
    raw = [
        RawMessage("test/hello", b"hello \xe2\x9c\x93", T0 + 1),
        RawMessage("test/bin", b"\xff\x00\x01", T0 + 2),
        RawMessage("test/hello", b"again", T0 + 3),
    ]
    await add(lake, raw=raw)
    body = (await get(client, "/api/raw", **WINDOW)).json()
    assert body == {
        "topic": None,
        "from": T0,
        "to": T0 + 1000,
        "messages": [
            {
                "topic": "test/hello",
                "receivedAt": T0 + 1,
                "payload": "hello ✓",
                "encoding": "utf-8",
            },
            {"topic": "test/bin", "receivedAt": T0 + 2, "payload": "/wAB", "encoding": "base64"},
            {"topic": "test/hello", "receivedAt": T0 + 3, "payload": "again", "encoding": "utf-8"},
        ],
        "next": None,
    }
    assert base64.b64decode(body["messages"][1]["payload"]) == b"\xff\x00\x01"
    body = (await get(client, "/api/raw", topic="test/hello", limit=1, **WINDOW)).json()
    assert [m["payload"] for m in body["messages"]] == ["hello ✓"]
    rest = (await get(client, "/api/raw", topic="test/hello", cursor=body["next"])).json()
    assert [m["payload"] for m in rest["messages"]] == ["again"]
    response = await get(client, "/api/raw", format="csv", **WINDOW)
    assert list(csv.reader(io.StringIO(response.text))) == [
        ["topic", "receivedAt", "payload", "encoding"],
        ["test/hello", repr(T0 + 1), "hello ✓", "utf-8"],
        ["test/bin", repr(T0 + 2), "/wAB", "base64"],
        ["test/hello", repr(T0 + 3), "again", "utf-8"],
    ]


# --- errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "name", "reason"),
    [
        ("/api/devices/r1/history", {"from": "yesterday"}, "from", "not epoch seconds or an ISO"),
        ("/api/devices/r1/history", {"to": "2025-13-01"}, "to", "not epoch seconds or an ISO"),
        ("/api/devices/r1/history", {"from": "nan"}, "from", "not between the years 1 and 9999"),
        ("/api/devices/r1/history", {"to": "1e20"}, "to", "not between the years 1 and 9999"),
        ("/api/history", {"from": "-inf"}, "from", "not between the years 1 and 9999"),
        ("/api/devices/r1/history", {"from": "20", "to": "10"}, "from", "from (20.0) is after to"),
        ("/api/devices/r1/history", {"format": "xml"}, "format", "Input should be 'json'"),
        ("/api/devices/r1/history", {"limit": "0"}, "limit", "greater than or equal to 1"),
        ("/api/devices/r1/history", {"limit": "1000001"}, "limit", "less than or equal to 1000000"),
        ("/api/devices/r1/history", {"limit": "ten"}, "limit", "valid integer"),
        ("/api/devices/r1/history", {"simplify": "-1"}, "simplify", "greater than or equal to 0"),
        ("/api/devices/r1/history", {"simplify": "inf"}, "simplify", "finite number"),
        ("/api/devices/r1/history", {"cursor": "bm9wZQ"}, "cursor", "not a cursor"),
        ("/api/devices/r1/history", {"cursor": "%%%"}, "cursor", "not a cursor"),
        ("/api/history", {"rect": "1,2,3"}, "rect", "four numbers"),
        ("/api/history", {"rect": "0,0,inf,1"}, "rect", "finite"),
        ("/api/history", {"devices": "a,b+c"}, "devices", "'b+c': device id contains"),
        ("/api/raw", {"format": "geojson"}, "format", "Input should be 'json'"),
        ("/api/raw", {"from": "soon"}, "from", "not epoch seconds or an ISO"),
    ],
)
async def test_a_bad_parameter_is_422_with_the_reason(
    client: httpx.AsyncClient, path: str, params: dict[str, str], name: str, reason: str
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", name]
    assert reason in error["msg"], error


async def test_a_cursor_of_readings_is_not_one_of_raw_messages(
    client: httpx.AsyncClient, lake: DeltaLake
) -> None:
    await add(lake, *[reading("robot1", t, x=t, y=0.0) for t in (1, 2)])
    cursor = (await get(client, "/api/devices/robot1/history", limit=1, **WINDOW)).json()["next"]
    response = await get(client, "/api/raw", cursor=cursor)
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "not a cursor of raw"


async def test_an_unknown_device_has_an_empty_history(
    client: httpx.AsyncClient, track: None
) -> None:
    body = (await get(client, "/api/devices/nobody/history", **WINDOW)).json()
    assert body == {"deviceId": "nobody", "from": T0, "to": T0 + 1000, "points": [], "next": None}
    response = await get(client, "/api/devices/nobody/history", format="csv", **WINDOW)
    assert (response.status_code, response.text) == (200, "deviceId,timestamp,receivedAt,x,y\r\n")
    response = await get(client, "/api/devices/nobody/history", format="parquet", **WINDOW)
    table = pq.read_table(io.BytesIO(response.content))
    assert (table.num_rows, table.column_names[:3]) == (0, ["deviceId", "timestamp", "receivedAt"])


async def test_an_id_that_cannot_name_a_device_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/devices/a+b/history")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown device 'a+b'"}


@pytest.mark.parametrize("path", ["/api/devices/robot1/history", "/api/history", "/api/raw"])
async def test_the_lake_off_is_503(
    client: httpx.AsyncClient, context: ApiContext, path: str
) -> None:
    context.lake = None
    response = await client.get(path)
    assert response.status_code == 503
    assert response.json() == {"detail": "the lake is off (--lake off)"}


@pytest.mark.parametrize(
    "error", [LakeError("reading readings failed: disk gone"), OSError(5, "Input/output error")]
)
@pytest.mark.parametrize("fmt", ["json", "csv"])
async def test_a_failing_lake_is_503_with_the_reason(
    client: httpx.AsyncClient,
    lake: DeltaLake,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    fmt: str,
) -> None:
    async def fail(query: ReadingQuery, rows: int) -> AsyncIterator[pa.Table]:
        raise error
        yield  # an async generator, as the lake's

    monkeypatch.setattr(lake, "reading_batches", fail)
    response = await get(client, "/api/devices/robot1/history", format=fmt)
    assert response.status_code == 503
    assert response.json() == {"detail": f"the lake failed: {error}"}
    response = await get(client, "/api/history", format=fmt)
    assert response.status_code == 503


async def test_a_really_broken_lake_is_503(
    client: httpx.AsyncClient, lake: DeltaLake, track: None
) -> None:
    """The table's files removed under the lake: its own error, not a 500."""
    shutil.rmtree(lake.uri("readings"))
    response = await get(client, "/api/devices/robot1/history", **WINDOW)
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the lake failed: ")


async def test_a_lake_failing_mid_stream_cuts_the_response(
    client: httpx.AsyncClient, lake: DeltaLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the first bytes a 503 is too late: the response ends without its end, so a
    client never takes a cut export for a whole one."""
    monkeypatch.setattr(history, "CHUNK", 2)
    await add(lake, *[reading("robot1", t, x=t, y=0.0) for t in range(6)])
    batches = lake.reading_batches

    async def fail_later(query: ReadingQuery, rows: int) -> AsyncIterator[pa.Table]:
        # Two chunks are read before the response starts; the third fails after it did.
        read = 0
        async for table in batches(query, rows):
            read += 1
            if read > 2:
                raise LakeError("reading readings failed: gone")
            yield table

    monkeypatch.setattr(lake, "reading_batches", fail_later)
    with pytest.raises(history.LakeFailed):
        await get(client, "/api/devices/robot1/history", **WINDOW)


async def test_the_docs_say_geojson_is_on_the_plane(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in ("/api/devices/{device_id}/history", "/api/history"):
        [fmt] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "format"]
        assert "not WGS84" in fmt["description"]


@pytest.mark.parametrize("path", ["/api/devices/robot1/history", "/api/history", "/api/raw"])
async def test_the_route_dependencies_guard_history(
    context: ApiContext, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    def refuse() -> None:
        raise HTTPException(401, "no entry")

    monkeypatch.setattr(iotstream.api, "ROUTE_DEPENDENCIES", [Depends(refuse)])
    transport = httpx.ASGITransport(app=create_app(context, ["*"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(path)
    assert (response.status_code, response.json()) == (401, {"detail": "no entry"})


# --- columns, chunks and spooling -------------------------------------------------------

ODD_FIELDS = [
    reading("robot1", 1, x=1.0, y=2.0, big=2**70, text='é "q", \n', nested={"a": [1, None]}),
    reading("robot1", 2, x=1.5, y=2.5),
    reading("robot1", 3, x=1.0e16, y=-0.0, flag=True),
    reading("robot1", 4, x=5, y="north"),  # an int and text where floats go
    reading("robot1", 5, mode="idle"),
]


@pytest.mark.parametrize("fmt", ["json", "ndjson", "geojson"])
async def test_fields_read_back_as_sent_in_every_json_format(
    client: httpx.AsyncClient, lake: DeltaLake, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """Chunks of plain rows are encoded from columns, chunks with a coordinate that is not a
    float a row at a time: both give what was sent."""
    monkeypatch.setattr(history, "CHUNK", 3)
    await add(lake, *ODD_FIELDS)
    response = await get(client, "/api/devices/robot1/history", format=fmt, **WINDOW)
    assert response.status_code == 200
    if fmt == "json":
        assert json.loads(response.content)["points"] == [point(r) for r in ODD_FIELDS]
    elif fmt == "ndjson":
        assert [json.loads(line) for line in response.text.splitlines()] == [
            row(r) for r in ODD_FIELDS
        ]
    else:
        features = json.loads(response.content)["features"]
        assert [f["geometry"] for f in features] == [
            {"type": "Point", "coordinates": [1.0, 2.0]},
            {"type": "Point", "coordinates": [1.5, 2.5]},
            {"type": "Point", "coordinates": [1.0e16, -0.0]},
            None,
            None,
        ]
        assert features[0]["properties"]["big"] == 2**70
        assert features[3]["properties"]["y"] == "north"


@pytest.mark.parametrize("fmt", ["json", "ndjson", "csv", "parquet", "geojson"])
@pytest.mark.parametrize("fields", [False, True])
async def test_a_page_spooled_to_disk_is_the_page_held_in_memory(
    client: httpx.AsyncClient,
    lake: DeltaLake,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
    fields: bool,
) -> None:
    extra = {"heading": 90} if fields else {}
    await add(lake, *[reading("robot1", t / 4, x=t / 8, y=1.0, **extra) for t in range(200)])
    monkeypatch.setattr(history, "CHUNK", 30)
    params = {"format": fmt, "limit": 150, **WINDOW}
    held = await get(client, "/api/devices/robot1/history", **params)
    monkeypatch.setattr(history, "HOLD_BYTES", 0)
    spooled = await get(client, "/api/devices/robot1/history", **params)
    assert held.status_code == spooled.status_code == 200
    assert held.content == spooled.content
    assert held.headers.get("x-next-cursor") == spooled.headers.get("x-next-cursor")
    # A page longer than a chunk streams, but CSV and Parquet are encoded while read.
    assert ("streamed" in held.headers["server-timing"]) == (fmt not in ("csv", "parquet"))
    monkeypatch.setattr(history, "CHUNK", 1000)
    whole = await get(client, "/api/devices/robot1/history", **params)
    assert whole.content == held.content or fmt == "parquet"  # Parquet: one row group less
    if fmt == "parquet":
        assert pq.read_table(io.BytesIO(whole.content)) == pq.read_table(io.BytesIO(held.content))


async def test_a_simplified_spooled_page_keeps_the_same_points(
    client: httpx.AsyncClient, lake: DeltaLake, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = noisy_line(400)
    await add(lake, *line)
    monkeypatch.setattr(history, "CHUNK", 64)
    monkeypatch.setattr(history, "HOLD_BYTES", 0)
    body = (await get(client, "/api/devices/robot1/history", simplify=0.05, **WINDOW)).json()
    assert body["points"] == [point(line[0]), point(line[-1])]


async def test_server_timing_says_where_the_time_went(
    client: httpx.AsyncClient, track: None
) -> None:
    response = await get(client, "/api/devices/robot1/history", simplify=0.1, **WINDOW)
    timing = dict(
        part.strip().split(";dur=") for part in response.headers["server-timing"].split(",")
    )
    assert set(timing) == {"lake", "simplify", "encode", "total"}
    assert all(float(ms) >= 0 for ms in timing.values())
    assert float(timing["total"]) >= float(timing["lake"])


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson"])
async def test_columns_a_later_chunk_brings_are_in_the_page(
    client: httpx.AsyncClient, lake: DeltaLake, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    """The page is encoded while it is read with the first chunk's columns; a later chunk
    with more (a z, a field) makes it encode the page again with all of them."""
    plain = [reading("robot1", t, x=float(t), y=1.0) for t in range(7)]
    later = [reading("robot1", 7, x=7.0, y=1.0, z=0.5), reading("robot1", 8, mode="idle")]
    await add(lake, *plain, *later)
    monkeypatch.setattr(history, "CHUNK", 3)
    chunked = await get(client, "/api/devices/robot1/history", format=fmt, **WINDOW)
    monkeypatch.setattr(history, "CHUNK", 1000)
    whole = await get(client, "/api/devices/robot1/history", format=fmt, **WINDOW)
    if fmt == "parquet":
        table = pq.read_table(io.BytesIO(chunked.content))
        assert table == pq.read_table(io.BytesIO(whole.content))
        assert table.column_names == ["deviceId", "timestamp", "receivedAt", "x", "y", "z", "mode"]
        assert table.to_pylist()[-2:] == [
            {**row(later[0]), "mode": None},
            {**row(later[1]), "x": None, "y": None, "z": None},
        ]
    else:
        assert chunked.content == whole.content
    if fmt == "csv":
        assert chunked.text.splitlines()[0] == "deviceId,timestamp,receivedAt,x,y,z,mode"
