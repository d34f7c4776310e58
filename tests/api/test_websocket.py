"""The /coordinates WebSocket route: query parameters reach the hub, frames come back."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from iotstream.hub import Hub

from .conftest import Feed, WebSocketSession, until


async def two_robots(feed: Feed, hub: Hub) -> None:
    """robot1 at (1, 1) and robot2 at (50, 50), one frame each, so ``hub.seq`` is 2."""
    await feed("sensors/robot1/coordinates", b'{"x": 1, "y": 1, "timestamp": 100}', 200.0)
    await until(lambda: hub.frames == 1)
    await feed("sensors/robot2/coordinates", b'{"x": 50, "y": 50, "timestamp": 100}', 200.0)
    await until(lambda: hub.frames == 2)


def state(device_id: str, x: float, y: float, timestamp: float = 100.0) -> dict[str, object]:
    return {"deviceId": device_id, "x": x, "y": y, "timestamp": timestamp, "receivedAt": 200.0}


async def test_a_snapshot_then_updates(app: FastAPI, hub: Hub, feed: Feed) -> None:
    await two_robots(feed, hub)
    async with WebSocketSession(app, "/coordinates") as ws:
        snapshot = await ws.receive_frame()
        assert snapshot == {
            "type": "snapshot",
            "seq": 2,
            "epoch": hub.epoch,
            "devices": [state("robot1", 1.0, 1.0), state("robot2", 50.0, 50.0)],
        }
        await feed("sensors/robot1/coordinates", b'{"x": 2, "y": 3, "timestamp": 101}', 200.0)
        update = await ws.receive_frame()
        assert update == {"type": "update", "seq": 3, "devices": [state("robot1", 2, 3, 101)]}


async def test_devices_and_rect_narrow_the_view(app: FastAPI, hub: Hub, feed: Feed) -> None:
    await two_robots(feed, hub)
    async with WebSocketSession(app, "/coordinates?devices=robot2") as ws:
        assert (await ws.receive_frame())["devices"] == [state("robot2", 50.0, 50.0)]
    async with WebSocketSession(app, "/coordinates?rect=0,0,10,10") as ws:
        assert (await ws.receive_frame())["devices"] == [state("robot1", 1.0, 1.0)]


async def test_a_bad_view_gets_an_error_frame_and_a_1008_close(app: FastAPI) -> None:
    ws = WebSocketSession(app, "/coordinates?rect=1,2")
    assert (await ws.open())["type"] == "websocket.accept"
    assert await ws.receive_frame() == {
        "type": "error",
        "reason": "'rect' must be [x_min, y_min, x_max, y_max]",
    }
    close = await ws.receive()
    assert (close["type"], close["code"]) == ("websocket.close", 1008)
    assert close["reason"] == "'rect' must be [x_min, y_min, x_max, y_max]"
    await ws.close()


async def test_a_query_parameter_of_the_wrong_type_refuses_the_handshake(app: FastAPI) -> None:
    ws = WebSocketSession(app, "/coordinates?since=yesterday")
    refusal = await ws.open()
    assert (refusal["type"], refusal["code"]) == ("websocket.close", 1008)
    await ws.close()


async def test_resuming_in_the_same_epoch_skips_the_snapshot(
    app: FastAPI, hub: Hub, feed: Feed
) -> None:
    await two_robots(feed, hub)
    async with WebSocketSession(app, f"/coordinates?since=2&epoch={hub.epoch}") as ws:
        ws.send_frame({"type": "ping"})
        assert await ws.receive_frame() == {"type": "pong"}
    async with WebSocketSession(app, "/coordinates?since=2&epoch=another-run") as ws:
        assert (await ws.receive_frame())["type"] == "snapshot"


async def test_connected_clients_show_in_stats(
    app: FastAPI, client: httpx.AsyncClient, hub: Hub
) -> None:
    async with WebSocketSession(app, "/coordinates") as ws:
        assert (await ws.receive_frame())["type"] == "snapshot"
        assert (await client.get("/api/stats")).json()["websocketClients"] == 1
        assert "iotstream_websocket_clients 1.0\n" in (await client.get("/metrics")).text
    assert not hub.subscribers
    assert (await client.get("/api/stats")).json()["websocketClients"] == 0
