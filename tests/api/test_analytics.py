"""GET /api/devices/{device_id}/trips, /stops, /summary, /prediction and
/api/analytics/heatmap over a real Delta lake in a temporary directory and the real DuckDB
engine: the values of known tracks, windows and their defaults, the derived tables of
``analyze`` for windows longer than a day, bad parameters, and a lake that is off or failing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, HTTPException

import iotstream.api
from iotstream.analytics import DEFAULT_CELL, DuckDBEngine, MotionParams, Window
from iotstream.api import ApiContext, analytics, create_app
from iotstream.lake.delta import DeltaLake
from iotstream.models import Batch, DeviceId, Reading
from iotstream.store import MemoryStore

from .conftest import Feed

T0 = 1_764_000_000.0
"""2025-11-24T16:00:00Z: device times in the tests are T0 + seconds."""
DAY_START = 1_763_942_400.0
"""2025-11-24T00:00:00Z."""
WINDOW = {"from": str(T0), "to": str(T0 + 1000)}
DEFAULTS = {"startSpeed": 0.2, "stopSpeed": 0.1, "minStop": 10.0, "maxGap": 60.0, "smoothing": 2.0}


@pytest.fixture
async def lake(tmp_path: Path) -> AsyncIterator[DeltaLake]:
    async with DeltaLake(str(tmp_path / "lake")) as lake:
        yield lake


@pytest.fixture
def context(context: ApiContext, lake: DeltaLake) -> ApiContext:
    context.lake = lake
    return context


def reading(device: str, t: float, **fields: Any) -> Reading:
    """A reading at device time T0 + t, received a quarter of a second later."""
    return Reading(DeviceId.parse(device), fields, T0 + t, T0 + t + 0.25)


def errand(device: str = "robot1") -> list[Reading]:
    """Still at (0, 0) for 20 s, along +x at 1 m/s for 20 s, still at (20, 0) for 20 s; one
    reading a second."""
    still = [reading(device, t, x=0.0, y=0.0) for t in range(21)]
    moving = [reading(device, 20 + k, x=float(k), y=0.0) for k in range(1, 21)]
    resting = [reading(device, 40 + k, x=20.0, y=0.0) for k in range(1, 21)]
    return still + moving + resting


async def add(lake: DeltaLake, readings: list[Reading]) -> None:
    await lake.append(Batch(readings=readings))


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> httpx.Response:
    return await client.get(path, params={k: v for k, v in params.items() if v is not None})


@pytest.fixture
async def track(lake: DeltaLake) -> None:
    # Another robot's readings, and a reading without a position, change nothing of robot1.
    await add(lake, [*errand(), reading("robot1", 30.5, motorRPM=1500), *errand("robot2")[:5]])


TRIP = {
    "start": T0 + 20,
    "end": T0 + 40,
    "startX": 0.0,
    "startY": 0.0,
    "endX": 20.0,
    "endY": 0.0,
    "distance": 20.0,
    "duration": 20.0,
    "avgSpeed": 1.0,
    "maxSpeed": 1.0,
}
STOPS = [
    {"start": T0, "end": T0 + 20, "duration": 20.0, "x": 0.0, "y": 0.0},
    {"start": T0 + 40, "end": T0 + 60, "duration": 20.0, "x": 20.0, "y": 0.0},
]
SUMMARY = {
    "start": T0,
    "end": T0 + 60,
    "distance": 20.0,
    "movingTime": 20.0,
    "stoppedTime": 40.0,
    "maxSpeed": 1.0,
    "readings": 61,
    "gaps": 0,
}


# --- trips, stops, summary ------------------------------------------------------------------


async def test_trips_of_a_known_track(client: httpx.AsyncClient, track: None) -> None:
    response = await get(client, "/api/devices/robot1/trips", **WINDOW)
    assert response.status_code == 200
    assert response.json() == {
        "deviceId": "robot1",
        "from": T0,
        "to": T0 + 1000,
        "source": "on-demand",
        "params": DEFAULTS,
        "trips": [TRIP],
    }


async def test_stops_of_a_known_track(client: httpx.AsyncClient, track: None) -> None:
    response = await get(client, "/api/devices/robot1/stops", **WINDOW)
    assert response.status_code == 200
    body = response.json()
    assert (body["deviceId"], body["source"], body["params"]) == ("robot1", "on-demand", DEFAULTS)
    assert body["stops"] == STOPS


async def test_summary_of_a_known_track(client: httpx.AsyncClient, track: None) -> None:
    response = await get(client, "/api/devices/robot1/summary", **WINDOW)
    assert response.status_code == 200
    assert response.json()["summary"] == SUMMARY


async def test_the_engine_gives_the_same_as_the_api(
    client: httpx.AsyncClient, lake: DeltaLake, track: None
) -> None:
    with DuckDBEngine(lake.url) as engine:
        [trip] = engine.trips(Window(T0, T0 + 1000, ["robot1"]), MotionParams())
    body = (await get(client, "/api/devices/robot1/trips", **WINDOW)).json()
    assert body["trips"] == [
        {
            "start": trip.start,
            "end": trip.end,
            "startX": trip.start_x,
            "startY": trip.start_y,
            "endX": trip.end_x,
            "endY": trip.end_y,
            "distance": trip.distance,
            "duration": trip.duration,
            "avgSpeed": trip.avg_speed,
            "maxSpeed": trip.max_speed,
        }
    ]


async def test_motion_parameters_change_the_analysis(
    client: httpx.AsyncClient, track: None
) -> None:
    # Still spells of 20 s are no stops when a stop takes 30.
    response = await get(client, "/api/devices/robot1/stops", minStop=30, **WINDOW)
    assert response.json()["stops"] == []
    assert response.json()["params"] == {**DEFAULTS, "minStop": 30.0}
    # At 1 m/s it never counts as moving when that takes 2 m/s.
    response = await get(
        client, "/api/devices/robot1/summary", startSpeed=2, stopSpeed=1.5, **WINDOW
    )
    summary = response.json()["summary"]
    assert (summary["movingTime"], summary["stoppedTime"], summary["distance"]) == (0.0, 60.0, 0.0)
    response = await get(client, "/api/devices/robot1/trips", startSpeed=2, stopSpeed=1.5, **WINDOW)
    assert response.json()["trips"] == []


async def test_a_window_cuts_what_it_holds(client: httpx.AsyncClient, track: None) -> None:
    """Only the readings of the window count: from T0 + 30 the robot is half way already."""
    body = (
        await get(client, "/api/devices/robot1/summary", **{"from": T0 + 30, "to": T0 + 60})
    ).json()
    assert body["summary"]["start"] == T0 + 30
    assert body["summary"]["readings"] == 31
    assert body["summary"]["distance"] == 10.0


async def test_times_are_epoch_seconds_or_iso_8601(client: httpx.AsyncClient, track: None) -> None:
    iso = {"from": "2025-11-24T16:00:00Z", "to": "2025-11-24T17:16:40+01:00"}
    body = (await get(client, "/api/devices/robot1/trips", **iso)).json()
    assert (body["from"], body["to"], body["trips"]) == (T0, T0 + 1000, [TRIP])


async def test_the_window_defaults_to_today_up_to_now(
    client: httpx.AsyncClient, track: None
) -> None:
    before = time.time()
    body = (await get(client, "/api/devices/robot1/trips")).json()
    midnight = datetime.fromtimestamp(before, UTC).replace(hour=0, minute=0, second=0)
    assert body["from"] == midnight.replace(microsecond=0).timestamp()
    assert before <= body["to"] <= time.time()
    assert body["trips"] == []  # the track is of 2025-11-24
    # `to` alone: its UTC day up to it.
    body = (await get(client, "/api/devices/robot1/trips", to=str(T0 + 1000))).json()
    assert (body["from"], body["to"], body["trips"]) == (DAY_START, T0 + 1000, [TRIP])


async def test_an_unknown_device_has_nothing(client: httpx.AsyncClient, track: None) -> None:
    for what, empty in (("trips", []), ("stops", []), ("summary", None)):
        response = await get(client, f"/api/devices/nobody/{what}", **WINDOW)
        assert response.status_code == 200
        assert response.json()[what] == empty
        assert response.json()["deviceId"] == "nobody"


@pytest.mark.parametrize("what", ["trips", "stops", "summary", "prediction"])
async def test_an_id_that_cannot_name_a_device_is_404(client: httpx.AsyncClient, what: str) -> None:
    response = await client.get(f"/api/devices/a+b/{what}")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown device 'a+b'"}


# --- heatmap ----------------------------------------------------------------------------


async def test_the_heatmap_of_a_known_track(client: httpx.AsyncClient, lake: DeltaLake) -> None:
    await add(lake, errand())
    response = await get(client, "/api/analytics/heatmap", cell=5, **WINDOW)
    assert response.status_code == 200
    # 21 readings at x=0 and x=1..4 in cell 0; 5 a cell on the way; 21 at x=20, the last
    # with no next reading to dwell until.
    assert response.json() == {
        "from": T0,
        "to": T0 + 1000,
        "source": "on-demand",
        "devices": None,
        "cell": 5.0,
        "maxGap": 60.0,
        "cells": [
            {"i": 0, "j": 0, "readings": 25, "dwell": 25.0},
            {"i": 1, "j": 0, "readings": 5, "dwell": 5.0},
            {"i": 2, "j": 0, "readings": 5, "dwell": 5.0},
            {"i": 3, "j": 0, "readings": 5, "dwell": 5.0},
            {"i": 4, "j": 0, "readings": 21, "dwell": 20.0},
        ],
    }


async def test_the_heatmap_adds_devices_up_and_caps_dwell(
    client: httpx.AsyncClient, lake: DeltaLake
) -> None:
    # robot2 waits 100 s at (-1.5, 2.5) before its next reading: its dwell is capped.
    await add(
        lake,
        [
            reading("robot1", 0, x=-1.5, y=2.5),
            reading("robot1", 4, x=-1.2, y=2.9),
            reading("robot2", 0, x=-1.9, y=2.0),
            reading("robot2", 100, x=7.0, y=-0.5),
        ],
    )
    body = (await get(client, "/api/analytics/heatmap", **WINDOW)).json()
    assert body["cell"] == DEFAULT_CELL == 0.5
    assert body["cells"] == [
        {"i": -4, "j": 4, "readings": 1, "dwell": 60.0},
        {"i": -3, "j": 5, "readings": 2, "dwell": 4.0},
        {"i": 14, "j": -1, "readings": 1, "dwell": 0.0},
    ]
    body = (await get(client, "/api/analytics/heatmap", cell=1, maxGap=30, **WINDOW)).json()
    assert body["maxGap"] == 30.0
    assert body["cells"] == [
        {"i": -2, "j": 2, "readings": 3, "dwell": 34.0},
        {"i": 7, "j": -1, "readings": 1, "dwell": 0.0},
    ]
    body = (await get(client, "/api/analytics/heatmap", devices="robot2", cell=1, **WINDOW)).json()
    assert body["devices"] == ["robot2"]
    assert body["cells"] == [
        {"i": -2, "j": 2, "readings": 1, "dwell": 60.0},
        {"i": 7, "j": -1, "readings": 1, "dwell": 0.0},
    ]
    body = (await get(client, "/api/analytics/heatmap", devices="nobody", **WINDOW)).json()
    assert body["cells"] == []


async def test_too_many_cells_is_422(
    client: httpx.AsyncClient, track: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(analytics, "MAX_CELLS", 2)
    response = await get(client, "/api/analytics/heatmap", cell=5, **WINDOW)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", "cell"]
    assert "choose a larger cell" in problem["msg"]


# --- windows longer than a day: the derived tables ----------------------------------------

LONG = {"from": str(T0 - 86_400), "to": str(T0 + 1000)}
"""Two UTC days: 2025-11-23 and 2025-11-24."""


async def test_a_long_window_needs_iotstream_analyze(
    client: httpx.AsyncClient, track: None
) -> None:
    for path in ("trips", "stops", "summary"):
        response = await get(client, f"/api/devices/robot1/{path}", **LONG)
        assert response.status_code == 422
        [problem] = response.json()["detail"]
        assert problem["loc"] == ["query", "from"]
        assert "run `iotstream analyze`" in problem["msg"]
    response = await get(client, "/api/analytics/heatmap", **LONG)
    assert response.status_code == 422
    assert "run `iotstream analyze`" in response.json()["detail"][0]["msg"]


@pytest.fixture
async def analyzed(lake: DeltaLake, track: None) -> None:
    with DuckDBEngine(lake.url) as engine:
        engine.analyze(Window(T0, T0 + 1000), MotionParams())


async def test_a_long_window_reads_the_derived_tables(
    client: httpx.AsyncClient, analyzed: None
) -> None:
    """The whole days the window touches, as `iotstream analyze` found them: the same trips,
    stops and summary as computed on demand."""
    days = {"from": DAY_START - 86_400, "to": DAY_START + 86_400 - 1e-6}
    response = await get(client, "/api/devices/robot1/trips", **LONG)
    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"]) == (days["from"], days["to"])
    assert (body["source"], body["params"], body["trips"]) == ("derived", None, [TRIP])
    body = (await get(client, "/api/devices/robot1/stops", **LONG)).json()
    assert (body["source"], body["stops"]) == ("derived", STOPS)
    body = (await get(client, "/api/devices/robot1/summary", **LONG)).json()
    assert (body["source"], body["summary"]) == ("derived", SUMMARY)
    body = (await get(client, "/api/devices/nobody/summary", **LONG)).json()
    assert body["summary"] is None


async def test_a_long_heatmap_merges_the_derived_cells(
    client: httpx.AsyncClient, analyzed: None
) -> None:
    for cell in (0.5, 5):
        derived = (await get(client, "/api/analytics/heatmap", cell=cell, **LONG)).json()
        on_demand = (await get(client, "/api/analytics/heatmap", cell=cell, **WINDOW)).json()
        assert (derived["source"], derived["maxGap"]) == ("derived", None)
        assert derived["cells"] == on_demand["cells"]
    one = (await get(client, "/api/analytics/heatmap", devices="robot2", cell=5, **LONG)).json()
    assert one["cells"] == [{"i": 0, "j": 0, "readings": 5, "dwell": 4.0}]
    response = await get(client, "/api/analytics/heatmap", cell=0.7, **LONG)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", "cell"]
    assert "whole multiple" in problem["msg"] and "0.5 m" in problem["msg"]


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/api/devices/robot1/trips", "minStop", "30"),
        ("/api/devices/robot1/summary", "smoothing", "5"),
        ("/api/analytics/heatmap", "maxGap", "10"),
    ],
)
async def test_a_long_window_takes_no_motion_parameters(
    client: httpx.AsyncClient, analyzed: None, path: str, name: str, value: str
) -> None:
    response = await get(client, path, **{name: value}, **LONG)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", name]
    assert "ask for a day at most" in problem["msg"]


# --- prediction -------------------------------------------------------------------------


def cruise(device: str, seconds: int, speed: float) -> list[Reading]:
    """Along +x at ``speed`` m/s from (0, 1), ten readings a second for ``seconds`` s."""
    return [reading(device, k / 10, x=speed * k / 10, y=1.0) for k in range(seconds * 10 + 1)]


async def test_a_moving_device_is_predicted_ahead(
    client: httpx.AsyncClient, lake: DeltaLake, feed: Feed
) -> None:
    readings = cruise("robot1", 120, 1.0)
    await add(lake, readings)
    last = readings[-1]
    await feed(
        "sensors/robot1/coordinates", b'{"x": 120.0, "y": 1.0, "timestamp": %r}' % last.timestamp
    )
    response = await get(client, "/api/devices/robot1/prediction", horizon=2)
    assert response.status_code == 200
    body = response.json()
    assert body["deviceId"] == "robot1" and body["horizon"] == 2.0
    assert body["model"] in ("velocity", "kalman")
    assert body["basis"]["timestamp"] == last.timestamp
    assert (body["basis"]["x"], body["basis"]["y"]) == (120.0, 1.0)
    assert body["basis"]["readings"] == 101  # the last 10 s
    assert body["prediction"]["timestamp"] == last.timestamp + 2
    assert body["prediction"]["x"] == pytest.approx(122.0, abs=0.01)
    assert body["prediction"]["y"] == pytest.approx(1.0, abs=0.01)
    error = body["error"]
    assert (error["source"], error["horizon"]) == ("on-demand", 2.0)
    assert error["samples"] > 0 and error["ade"] < 0.01 and error["fde"] < 0.01


async def test_a_standing_device_is_predicted_where_it_stands(
    client: httpx.AsyncClient, lake: DeltaLake, feed: Feed
) -> None:
    readings = cruise("robot1", 60, 0.0)
    await add(lake, readings)
    await feed("sensors/robot1/coordinates", b'{"x": 0.0, "y": 1.0, "timestamp": %r}' % (T0 + 60))
    body = (await get(client, "/api/devices/robot1/prediction", horizon=5)).json()
    assert body["model"] == "last"  # every model is exact: the simplest wins
    assert body["prediction"] == {"timestamp": T0 + 65, "x": 0.0, "y": 1.0}
    assert body["error"]["fde"] == 0.0


async def test_the_live_state_is_newer_than_the_lake(
    client: httpx.AsyncClient, lake: DeltaLake, feed: Feed
) -> None:
    """The store's latest state, not yet in the lake, is the newest reading predicted from."""
    await add(lake, cruise("robot1", 60, 1.0))
    await feed(
        "sensors/robot1/coordinates", b'{"x": 60.5, "y": 1.0, "timestamp": %r}' % (T0 + 60.5)
    )
    body = (await get(client, "/api/devices/robot1/prediction", horizon=1)).json()
    assert body["basis"] == {"timestamp": T0 + 60.5, "x": 60.5, "y": 1.0, "readings": 97}
    assert body["prediction"]["x"] == pytest.approx(61.5, abs=0.05)


async def test_the_error_comes_from_prediction_eval_once_analyzed(
    client: httpx.AsyncClient, lake: DeltaLake, feed: Feed
) -> None:
    readings = cruise("robot1", 120, 1.0)
    await add(lake, readings)
    with DuckDBEngine(lake.url) as engine:
        engine.analyze(Window(T0, T0 + 200), MotionParams(), horizons=[1.0, 3.0])
        [scored] = [
            s
            for s in engine.evaluate(Window(T0, T0 + 200, ["robot1"]), [1.0])
            if s.model == "velocity"
        ]
    await feed(
        "sensors/robot1/coordinates", b'{"x": 120.0, "y": 1.0, "timestamp": %r}' % (T0 + 120)
    )
    body = (await get(client, "/api/devices/robot1/prediction", horizon=1.4)).json()
    error = body["error"]
    assert (error["source"], error["horizon"]) == ("prediction_eval", 1.0)  # the nearest
    if body["model"] == "velocity":
        assert error["samples"] == scored.samples


async def test_a_device_without_a_recent_position_has_no_prediction(
    client: httpx.AsyncClient, lake: DeltaLake, feed: Feed, store: MemoryStore
) -> None:
    empty = {"deviceId": "nobody", "horizon": 2.0, "model": None, "prediction": None,
             "basis": None, "error": None}  # fmt: skip
    assert (await get(client, "/api/devices/nobody/prediction")).json() == empty
    # Known to the store, but without a position.
    await feed("sensors/robot9/motorRPM", b"1500")
    body = (await get(client, "/api/devices/robot9/prediction")).json()
    assert body["prediction"] is None and body["model"] is None


# --- bad parameters ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "name", "reason"),
    [
        ("trips", {"from": "yesterday"}, "from", "not epoch seconds or an ISO 8601 time"),
        ("trips", {"from": str(T0 + 10), "to": str(T0)}, "from", "is after to"),
        ("stops", {"to": "1e300"}, "to", "not between the years 1 and 9999"),
        ("trips", {"startSpeed": "0.1", "stopSpeed": "0.3"}, "stopSpeed", "above startSpeed"),
        ("summary", {"startSpeed": "-1"}, "startSpeed", "greater than or equal to 0"),
        ("summary", {"maxGap": "0"}, "maxGap", "greater than 0"),
        ("stops", {"minStop": "nan"}, "minStop", "finite number"),
        ("prediction", {"horizon": "0"}, "horizon", "greater than 0"),
        ("prediction", {"horizon": "61"}, "horizon", "less than or equal to 60"),
    ],
)
async def test_a_bad_device_parameter_is_422_with_the_reason(
    client: httpx.AsyncClient,
    track: None,
    path: str,
    params: dict[str, str],
    name: str,
    reason: str,
) -> None:
    response = await get(client, f"/api/devices/robot1/{path}", **params)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", name]
    assert reason in problem["msg"]


@pytest.mark.parametrize(
    ("params", "name", "reason"),
    [
        ({"cell": "0"}, "cell", "greater than or equal to 0.01"),
        ({"cell": "inf"}, "cell", "finite number"),
        ({"devices": "robot1,a+b"}, "devices", "'a+b': device id contains"),
        ({"from": "2025-13-01"}, "from", "not epoch seconds or an ISO 8601 time"),
    ],
)
async def test_a_bad_heatmap_parameter_is_422_with_the_reason(
    client: httpx.AsyncClient, track: None, params: dict[str, str], name: str, reason: str
) -> None:
    response = await get(client, "/api/analytics/heatmap", **params)
    assert response.status_code == 422
    [problem] = response.json()["detail"]
    assert problem["loc"] == ["query", name]
    assert reason in problem["msg"]


# --- the lake off or failing, the route dependencies ----------------------------------------

PATHS = [
    "/api/devices/robot1/trips",
    "/api/devices/robot1/stops",
    "/api/devices/robot1/summary",
    "/api/devices/robot1/prediction",
    "/api/analytics/heatmap",
]


@pytest.mark.parametrize("path", PATHS)
async def test_the_lake_off_is_503(
    client: httpx.AsyncClient, context: ApiContext, path: str
) -> None:
    context.lake = None
    response = await client.get(path)
    assert response.status_code == 503
    assert response.json() == {"detail": "the lake is off (--lake off)"}


def damage(table: Path) -> None:
    for data in table.rglob("*.parquet"):
        data.write_bytes(b"not parquet")


@pytest.mark.parametrize("path", PATHS)
async def test_a_failing_lake_is_503_with_the_reason(
    client: httpx.AsyncClient, lake: DeltaLake, feed: Feed, track: None, path: str
) -> None:
    """The readings' files damaged under the lake: the engine's error, as a 503."""
    await feed("sensors/robot1/coordinates", b'{"x": 20.0, "y": 0.0, "timestamp": %r}' % (T0 + 60))
    damage(Path(lake.uri("readings")))
    response = await get(client, path, **(WINDOW if "prediction" not in path else {}))
    assert response.status_code == 503
    assert response.json()["detail"].startswith("the lake failed: ")


@pytest.mark.parametrize("path", PATHS)
async def test_the_route_dependencies_guard_analytics(
    context: ApiContext, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    def refuse() -> None:
        raise HTTPException(401, "no entry")

    monkeypatch.setattr(iotstream.api, "ROUTE_DEPENDENCIES", [Depends(refuse)])
    transport = httpx.ASGITransport(app=create_app(context, ["*"]))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get(path)
    assert (response.status_code, response.json()) == (401, {"detail": "no entry"})


async def test_the_docs_describe_the_answers(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    for path in PATHS:
        route = path.replace("robot1", "{device_id}")
        assert route in spec["paths"], route
    trips = spec["components"]["schemas"]["DeviceTrips"]
    assert {"from", "to", "source", "params", "trips"} <= set(trips["properties"])
    assert trips["examples"][0]["trips"][0]["distance"] == 24.5


async def test_a_short_history_is_predicted_at_constant_velocity_without_an_error(
    client: httpx.AsyncClient, lake: DeltaLake, feed: Feed
) -> None:
    """Two seconds of readings are too few to score the models on a 2 s horizon."""
    await add(lake, cruise("robot1", 2, 0.5))
    await feed("sensors/robot1/coordinates", b'{"x": 1.0, "y": 1.0, "timestamp": %r}' % (T0 + 2))
    body = (await get(client, "/api/devices/robot1/prediction", horizon=2)).json()
    assert (body["model"], body["error"]) == ("velocity", None)
    assert body["prediction"]["x"] == pytest.approx(2.0, abs=1e-6)
