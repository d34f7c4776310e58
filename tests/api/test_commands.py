"""POST /api/commands/{device_id}: 202 and the command on the broker, or a 4xx/503 saying why."""

from __future__ import annotations

import time

import httpx
import pytest

from iotstream.api import ApiContext
from iotstream.broker import AmqttBroker
from tests.broker.client import MqttClient


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
