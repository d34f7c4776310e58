"""POST /api/commands/{device_id}: 202 and the command on the broker, or a 4xx/503 saying why;
and the tracked commands' routes and WebSocket frames."""

from __future__ import annotations

import time

import httpx
import pytest
from fastapi import FastAPI

from iotstream.api import ApiContext
from iotstream.broker import AmqttBroker
from tests.broker.client import MqttClient

from .conftest import Feed, WebSocketSession


async def test_a_command_is_accepted_and_reaches_the_device(
    client: httpx.AsyncClient, context: ApiContext, reachable_broker: AmqttBroker
) -> None:
    async with MqttClient(reachable_broker.port) as device:
        await device.subscribe("orin/robot1/command", qos=1)
        before = time.time()
        response = await client.post("/api/commands/robot1", json={"command": "goto 3.5 2.0"})
        after = time.time()
        assert response.status_code == 202, response.text
        body = response.json()
        assert len(body.pop("id")) == 32
        assert before <= body.pop("sentAt") <= after
        assert body == {
            "deviceId": "robot1",
            "command": "goto 3.5 2.0",
            "topic": "orin/robot1/command",
            "status": "accepted",
        }
        [message] = await device.receive(1)
        assert (message.topic, message.payload, message.qos) == (
            "orin/robot1/command",
            b"goto 3.5 2.0",
            1,
        )
    assert context.commands.sent == 1
    assert (await client.get("/api/stats")).json()["commandsSent"] == 1


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("a+b", "device id contains '+', '#', '/' or a control character"),
        ("%23", "device id contains '+', '#', '/' or a control character"),
        ("%01", "device id contains '+', '#', '/' or a control character"),
        ("x" * 129, "device id is longer than 128 characters"),
    ],
)
async def test_an_id_that_cannot_name_a_device_is_400_with_the_reason(
    client: httpx.AsyncClient, context: ApiContext, path: str, reason: str
) -> None:
    response = await client.post(f"/api/commands/{path}", json={"command": "slam"})
    assert response.status_code == 400
    assert response.json() == {"detail": reason}
    assert context.commands.sent == 0


async def test_a_command_that_is_not_printable_is_400(
    client: httpx.AsyncClient, context: ApiContext
) -> None:
    response = await client.post("/api/commands/robot1", json={"command": "bad\u0007bell"})
    assert response.status_code == 400
    assert response.json() == {"detail": "command contains characters that are not printable"}
    assert context.commands.sent == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"command": ""}, "at least 1 character"),
        ({"command": "x" * 257}, "at most 256 characters"),
        ({"command": 5}, "valid string"),
        ({"cmd": "slam"}, "Field required"),
        ({"command": "slam", "priority": 1}, "Extra inputs are not permitted"),
        ("not json", "JSON decode error"),
    ],
)
async def test_a_body_that_is_not_a_command_is_422(
    client: httpx.AsyncClient, body: object, reason: str
) -> None:
    if isinstance(body, str):
        response = await client.post(
            "/api/commands/robot1", content=body, headers={"content-type": "application/json"}
        )
    else:
        response = await client.post("/api/commands/robot1", json=body)
    assert response.status_code == 422
    assert reason in response.json()["detail"][0]["msg"]


async def test_503_when_the_broker_is_unreachable(
    client: httpx.AsyncClient, context: ApiContext
) -> None:
    response = await client.post("/api/commands/robot1", json={"command": "tracking"})
    assert response.status_code == 503
    endpoint = context.commands.connection.endpoint
    assert response.json() == {"detail": f"the MQTT broker at {endpoint} is not reachable"}
    assert context.commands.sent == 0


# -- tracked commands ------------------------------------------------------------------


async def test_a_tracked_command_is_sent_and_readable(
    client: httpx.AsyncClient, reachable_broker: AmqttBroker
) -> None:
    async with MqttClient(reachable_broker.port) as device:
        await device.subscribe("orin/robot1/command", qos=1)
        response = await client.post(
            "/api/devices/robot1/commands", json={"command": "goto", "args": [3.5, 2], "ttl": 30}
        )
        assert response.status_code == 202, response.text
        body = response.json()
        assert (body["status"], body["payload"], body["ttl"], body["attempts"]) == (
            "sent",
            "goto 3.5 2",
            30.0,
            1,
        )
        assert [t["status"] for t in body["transitions"]] == ["queued", "sent"]
        assert "fingerprint" not in body
        [message] = await device.receive(1)
        assert message.payload == b"goto 3.5 2"
    assert (await client.get(f"/api/commands/{body['id']}")).json() == body
    listed = await client.get("/api/devices/robot1/commands", params={"status": "sent"})
    assert [c["id"] for c in listed.json()] == [body["id"]]
    assert (await client.get("/api/devices/robot1/commands?status=failed")).json() == []
    assert (await client.get("/api/devices/robot1/commands?status=lost")).status_code == 422
    assert (await client.get("/api/commands/nothing")).status_code == 404


async def test_the_reference_route_answers_the_tracked_command_id(
    client: httpx.AsyncClient, reachable_broker: AmqttBroker
) -> None:
    response = await client.post("/api/commands/robot1", json={"command": "slam"})
    tracked = await client.get(f"/api/commands/{response.json()['id']}")
    assert tracked.status_code == 200
    assert (tracked.json()["command"], tracked.json()["status"]) == ("slam", "sent")


async def test_an_idempotency_key_returns_the_same_command_or_422(
    client: httpx.AsyncClient, reachable_broker: AmqttBroker, context: ApiContext
) -> None:
    headers = {"Idempotency-Key": "k-1"}
    body = {"command": "tracking"}
    first = await client.post("/api/devices/robot1/commands", json=body, headers=headers)
    again = await client.post("/api/devices/robot1/commands", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert context.commands.sent == 1
    other = await client.post(
        "/api/devices/robot1/commands", json={"command": "slam"}, headers=headers
    )
    assert other.status_code == 422
    assert "idempotency key" in other.json()["detail"]


async def test_a_command_for_an_offline_device_is_queued_and_can_be_canceled(
    client: httpx.AsyncClient, reachable_broker: AmqttBroker, feed: Feed, context: ApiContext
) -> None:
    await feed("sensors/robot2/presence", b"offline")
    response = await client.post("/api/devices/robot2/commands", json={"command": "slam"})
    assert response.json()["status"] == "queued"
    assert context.commands.sent == 0
    command_id = response.json()["id"]
    canceled = await client.delete(f"/api/commands/{command_id}")
    assert canceled.status_code == 200
    assert (canceled.json()["status"], canceled.json()["reason"]) == ("canceled", "canceled")
    again = await client.delete(f"/api/commands/{command_id}")
    assert again.status_code == 409
    assert (await client.delete("/api/commands/nothing")).status_code == 404


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"command": "goto", "args": ["a b"]}, 400),
        ({"command": "goto", "ttl": 10_000}, 400),
        ({"command": "goto", "ttl": 0}, 422),
        ({"command": "goto", "args": [True]}, 422),
        ({"command": "goto", "priority": 1}, 422),
    ],
)
async def test_a_tracked_command_that_cannot_be_sent_is_refused(
    client: httpx.AsyncClient, reachable_broker: AmqttBroker, body: object, status: int
) -> None:
    response = await client.post("/api/devices/robot1/commands", json=body)
    assert response.status_code == status, response.text


async def test_every_move_is_a_command_frame_in_sequence(
    app: FastAPI, client: httpx.AsyncClient, reachable_broker: AmqttBroker, feed: Feed
) -> None:
    await feed("sensors/robot3/presence", b"offline")
    async with WebSocketSession(app, "/coordinates") as ws:
        snapshot = await ws.receive_frame()
        response = await client.post("/api/devices/robot3/commands", json={"command": "slam"})
        command_id = response.json()["id"]
        await client.delete(f"/api/commands/{command_id}")
        seen: list[str] = []
        seq = snapshot["seq"]
        while seen != ["queued", "canceled"]:
            frame = await ws.receive_frame()
            assert frame["seq"] == seq + 1
            seq = frame["seq"]
            if frame["type"] == "command":
                seen += [c["status"] for c in frame["commands"] if c["id"] == command_id]
