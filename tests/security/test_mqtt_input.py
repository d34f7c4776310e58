"""Whatever iotstream sends to the broker is valid for it, and a message the broker refuses
cannot wedge a connection.

The failure these tests pin down: ``POST /api/commands/%C2%85`` was answered 202, and
Mosquitto disconnected the command connection for the topic ``orin/\\x85/command``. gmqtt
resent the message after reconnecting (its reconnects resume the session), was disconnected
again, and so on: every later command got 503 until the server restarted.
"""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from harness import free_port, stop_process
from iotstream.broker import MosquittoBroker
from iotstream.config import MqttEndpoint, load_settings
from iotstream.errors import ConfigError, InvalidDeviceId, InvalidMessage
from iotstream.models import DeviceId
from iotstream.mqtt import MAX_ATTEMPTS, MqttConnection

from ..broker.client import MqttClient
from ..conftest import MqttListener, Server, require, start_server
from ..faults import wait_until

# One code point of every class Mosquitto's UTF-8 check refuses, and neighbours it accepts.
REFUSED = [0x01, 0x1F, 0x7F, 0x80, 0x85, 0x9F, 0xD800, 0xDFFF, 0xFDD0, 0xFDEF, 0xFFFE]
REFUSED += [0xFFFF, 0x1FFFE, 0x10FFFF]
ACCEPTED = [0x20, 0x7E, 0xA0, 0xE9, 0xFDCF, 0xFDF0, 0xFFFD, 0x10FFFD, 0x1F916]


@pytest.fixture
async def mosquitto(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    broker = MosquittoBroker("127.0.0.1", free_port(), tmp_path / "mosquitto", require("mosquitto"))
    async with broker:
        yield broker


def _publish_raw(port: int, topic: bytes) -> bool:
    """Publish ``topic`` (any bytes) at QoS 1 over a bare socket: whether Mosquitto took it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
        assert sock.recv(4) == b"\x20\x02\x00\x00"
        body = len(topic).to_bytes(2, "big") + topic + b"\x00\x01" + b"x"
        assert len(body) < 128
        sock.sendall(bytes([0x32, len(body)]) + body)
        try:
            return sock.recv(4) == b"\x40\x02\x00\x01"  # PUBACK, not a closed connection
        except ConnectionResetError:
            return False


async def test_a_device_id_is_exactly_what_mosquitto_takes_as_a_topic_level(
    mosquitto: MosquittoBroker,
) -> None:
    for code in REFUSED + ACCEPTED:
        text = f"r{chr(code)}"
        topic = f"orin/{text}/command".encode("utf-8", "surrogatepass")
        taken = await asyncio.to_thread(_publish_raw, mosquitto.port, topic)
        try:
            DeviceId.parse(text)
            valid = True
        except InvalidDeviceId as exc:
            valid = False
            assert f"U+{code:04X}" in str(exc) or "control character" in str(exc)
        assert (code, valid) == (code, taken)
        assert taken == (code in ACCEPTED)


async def test_a_topic_the_broker_would_refuse_is_not_sent(mosquitto: MosquittoBroker) -> None:
    async with MqttConnection(MqttEndpoint("127.0.0.1", mosquitto.port), "commands") as link:
        for topic in ["orin/\x85/command", "orin/\ufffe/command", "", "orin/+/command"]:
            with pytest.raises(InvalidMessage):
                link.publish(topic, b"slam", qos=1)
        assert link.refused == 4
        assert [m.topic for m in link.rejected][:2] == ["orin/\x85/command", "orin/\ufffe/command"]
        assert link.disconnects == 0 and link.health().ok
        assert "4 messages refused" in link.health().detail


async def test_a_message_the_broker_refuses_is_dropped_not_resent_forever(
    mosquitto: MosquittoBroker,
) -> None:
    """A persistent session (the bridge's) gets its in-flight messages resent after every
    reconnect, so the refused one is tried again: after ``MAX_ATTEMPTS`` it is dropped and
    the messages behind it go through."""
    endpoint = MqttEndpoint("127.0.0.1", mosquitto.port)
    topic = f"orin/{uuid.uuid4().hex[:8]}/command"
    client_id = f"test-wedge-{uuid.uuid4().hex[:8]}"
    async with MqttClient(mosquitto.port) as device:
        await device.subscribe(topic, 1)
        link = MqttConnection(endpoint, "commands", client_id=client_id, clean_session=False)
        async with link:
            # Past the check in publish(): a message the broker refuses for a reason
            # iotstream does not know of.
            link.client.publish("orin/\x85/command", b"refused", qos=1)
            await wait_until(lambda: link.disconnects >= 1, "the broker dropped the connection")
            await wait_until(lambda: link.connected.is_set(), "the link reconnected", 10)
            link.publish(topic, b"slam", qos=1)
            await wait_until(lambda: link.refused == 1, "the refused message was dropped", 15)
            [message] = await device.receive(1)
            assert message.payload == b"slam"
            await asyncio.wait_for(link.drain(), 10)
            assert link.disconnects == MAX_ATTEMPTS
            [rejected] = link.rejected
            assert (rejected.topic, rejected.payload) == ("orin/\x85/command", b"refused")
            assert "dropped the connection" in rejected.reason


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    require("mosquitto")
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    stop_process(srv.process)


@pytest.mark.e2e
def test_commands_the_broker_would_refuse_are_400_and_commands_keep_working(
    server: Server,
) -> None:
    with MqttListener(server.mqtt_port, "orin/robot1/command") as device:
        # A C1 control and noncharacters of each kind; the first one twice, as the second
        # of two such commands was the one that wedged the connection for good.
        for path in ["%C2%85", "%EF%BF%BF", "%EF%B7%90", "%F0%9F%BF%BE", "%C2%85"]:
            response = httpx.post(f"{server.http}/api/commands/{path}", json={"command": "slam"})
            assert response.status_code == 400, response.text
            assert "MQTT does not allow" in response.json()["detail"]
        for command in ["tracking", "slam"]:
            response = httpx.post(f"{server.http}/api/commands/robot1", json={"command": command})
            assert response.status_code == 202, response.text
        assert device.lines(2) == ["tracking", "slam"]
    health = server.get("/api/health").json()
    assert health["components"]["commands"]["status"] == "UP"


@pytest.mark.parametrize(
    ("flags", "why"),
    [
        ({"mqtt_topics": "sensors/#/x"}, "not an MQTT topic filter"),
        ({"mqtt_topics": "sensors/a+"}, "not an MQTT topic filter"),
        ({"mqtt_topics": "sensors/\ufffe"}, "U+FFFE"),
        ({"mqtt_client_id": "bridge\x00"}, "U+0000"),
        ({"mqtt_share_group": "g\ud800"}, "U+D800"),
    ],
)
def test_settings_the_broker_would_refuse_are_a_config_error(
    flags: dict[str, str], why: str
) -> None:
    """A subscription or client id the broker refuses would get the ingest disconnected at
    every attempt: they are refused at start instead."""
    with pytest.raises(ConfigError, match=re.escape(why)):
        load_settings(**flags)
    assert load_settings(mqtt_topics="sensors/+/coordinates,orin/#").mqtt.topics == [
        "sensors/+/coordinates",
        "orin/#",
    ]
