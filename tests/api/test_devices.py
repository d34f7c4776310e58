"""GET /api/coordinates, /api/devices/{device_id} and /api/deadletters."""

from __future__ import annotations

import httpx
import pytest

from .conftest import Feed

ROBOT1 = {"deviceId": "robot1", "x": 123.45, "y": 67.89, "timestamp": 1691234567.0}


async def test_coordinates_lists_the_latest_state_of_every_device(
    client: httpx.AsyncClient, feed: Feed
) -> None:
    assert (await client.get("/api/coordinates")).json() == []
    await feed("sensors/robot1/coordinates", b'{"x": 1, "y": 2, "timestamp": 1691234560}', 10.0)
    await feed(
        "sensors/robot1/coordinates", b'{"x": 123.45, "y": 67.89, "timestamp": 1691234567}', 11.0
    )
    await feed("sensors/robot2/motorRPM", b"1500", 12.0)
    response = await client.get("/api/coordinates")
    assert response.status_code == 200
    states = sorted(response.json(), key=lambda state: state["deviceId"])
    assert states == [
        {**ROBOT1, "receivedAt": 11.0},
        {"deviceId": "robot2", "motorRPM": 1500, "timestamp": 12.0, "receivedAt": 12.0},
    ]


async def test_a_device_by_id(client: httpx.AsyncClient, feed: Feed) -> None:
    await feed(
        "sensors/robot1/coordinates", b'{"x": 123.45, "y": 67.89, "timestamp": 1691234567}', 11.0
    )
    response = await client.get("/api/devices/robot1")
    assert response.status_code == 200
    assert response.json() == {**ROBOT1, "receivedAt": 11.0}


async def test_an_unknown_device_is_404(client: httpx.AsyncClient, feed: Feed) -> None:
    await feed("sensors/robot1/coordinates", b'{"x": 1, "y": 2}')
    response = await client.get("/api/devices/nobody-here")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown device 'nobody-here'"}


@pytest.mark.parametrize(
    ("path", "device_id"),
    [("a+b", "a+b"), ("%23", "#"), ("%01", "\x01"), ("x" * 129, "x" * 129)],
)
async def test_an_id_that_cannot_name_a_device_is_an_unknown_device(
    client: httpx.AsyncClient, path: str, device_id: str
) -> None:
    response = await client.get(f"/api/devices/{path}")
    assert response.status_code == 404
    assert response.json() == {"detail": f"unknown device {device_id!r}"}


async def test_deadletters_newest_first_with_the_reason(
    client: httpx.AsyncClient, feed: Feed
) -> None:
    await feed("sensors/r1/coordinates", b"not json", 100.0)
    await feed("sensors/r1/coordinates", b'{"x": "north", "y": 1}', 101.0)
    await feed("sensors/r1/coordinates", b"\xff\xfe", 102.0)
    await feed("sensors/r1/coordinates", b'{"x": 1, "y": 2}', 103.0)  # a good one: not kept
    response = await client.get("/api/deadletters")
    assert response.status_code == 200
    letters = response.json()
    assert [(d["reason"], d["receivedAt"]) for d in letters] == [
        ("invalid_json", 102.0),
        ("invalid_coordinate", 101.0),
        ("invalid_json", 100.0),
    ]
    assert letters[0] == {
        "topic": "sensors/r1/coordinates",
        "reason": "invalid_json",
        "detail": letters[0]["detail"],
        "size": 2,
        "payload": "\ufffd\ufffd",  # bytes that are not UTF-8, replaced
        "receivedAt": 102.0,
    }
    assert "not JSON" in letters[0]["detail"]
    assert letters[1]["payload"] == '{"x": "north", "y": 1}'
    assert letters[1]["detail"] == "x is not a number"
    assert letters[2]["size"] == len(b"not json")


async def test_deadletters_limit(client: httpx.AsyncClient, feed: Feed) -> None:
    for i in range(101):
        await feed("sensors/r1/coordinates", b"[%d]" % i, float(i))
    default = (await client.get("/api/deadletters")).json()
    assert len(default) == 100
    assert default[0]["payload"] == "[100]"
    one = (await client.get("/api/deadletters", params={"limit": 1})).json()
    assert [d["payload"] for d in one] == ["[100]"]
    every = (await client.get("/api/deadletters", params={"limit": 10_000})).json()
    assert len(every) == 101


@pytest.mark.parametrize("limit", ["0", "-1", "10001", "many"])
async def test_deadletters_refuses_a_limit_out_of_range(
    client: httpx.AsyncClient, limit: str
) -> None:
    response = await client.get("/api/deadletters", params={"limit": limit})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "limit"]
