"""Mosquitto with iotstream's accounts and ACLs, checked on delivery.

Mosquitto answers a forbidden PUBLISH over MQTT 3.1.1 with a normal PUBACK and grants a
forbidden SUBSCRIBE, then filters at delivery: so, as in Mosquitto's own tests, every
refusal here is a message that does not arrive, shown by a permitted marker message that
was published after it and arrives first.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from gmqtt.mqtt.handler import MQTTConnectError

from harness import free_port
from harness.engines import MQTT_SERVICE_ACCOUNT, mosquitto_url, start_mosquitto
from iotstream.broker import Accounts, Credentials, MosquittoBroker
from iotstream.broker.accounts import COMMANDS, INGEST, SIMULATOR, password_hash, password_matches
from iotstream.config import MqttEndpoint
from iotstream.errors import BrokerError, InvalidDeviceId
from iotstream.mqtt import MqttConnection

from ..conftest import require
from ..faults import wait_until
from .client import Message, MqttClient

DEVICES_SCRIPT = Path(__file__).resolve().parents[2] / "deploy/mosquitto/devices.sh"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    workdir = tmp_path / "mosquitto"
    broker = MosquittoBroker(
        "127.0.0.1", free_port(), workdir, require("mosquitto"), accounts=Accounts(workdir)
    )
    async with broker:
        yield broker


def accounts(broker: MosquittoBroker) -> Accounts:
    assert broker.accounts is not None
    return broker.accounts


def connect(broker: MosquittoBroker, who: Credentials | str) -> MqttClient:
    """A client of ``broker`` as a device (its credentials) or a server account (its name)."""
    if isinstance(who, str):
        endpoint = broker.client_endpoint(who)
        who = Credentials(str(endpoint.username), str(endpoint.password))
    return MqttClient(broker.port, username=who.username, password=who.password)


async def only(client: MqttClient, marker: str) -> list[Message]:
    """What ``client`` received up to ``marker`` (its last message), marker left out."""
    got: list[Message] = []
    while not got or got[-1].payload != marker.encode():
        got += await client.receive(1)
    return got[:-1]


def test_hashes_are_mosquittos_format() -> None:
    hashed = password_hash("secret", salt=b"0123456789ab")
    assert hashed.startswith("$7$1000$MDEyMzQ1Njc4OWFi$")
    assert password_matches("secret", hashed) and not password_matches("other", hashed)


@pytest.mark.parametrize(
    ("name", "why"),
    [("a+b", "'+'"), ("a/b", "'/'"), ("#", "'#'"), ("a:b", "':'"), (" a", "blank")],
)
def test_a_name_that_cannot_be_a_user_name_is_refused(tmp_path: Path, name: str, why: str) -> None:
    with pytest.raises(InvalidDeviceId, match=re.escape(why)):
        Accounts(tmp_path).add_device(name)
    with pytest.raises(InvalidDeviceId, match="server's own"):
        Accounts(tmp_path).add_device(INGEST)
    assert not (tmp_path / "passwd").exists()


def test_adding_a_device_twice_needs_replace(tmp_path: Path) -> None:
    store = Accounts(tmp_path)
    first = store.add_device("robot7")
    with pytest.raises(BrokerError, match="already"):
        store.add_device("robot7")
    second = store.add_device("robot7", replace=True)
    assert first.password != second.password
    assert store.devices() == ["robot7"]
    assert (tmp_path / "passwd").stat().st_mode & 0o077 == 0
    assert second.password not in (tmp_path / "passwd").read_text()  # only its hash


async def test_anonymous_and_wrong_passwords_are_refused(broker: MosquittoBroker) -> None:
    robot = accounts(broker).add_device("robot7")
    assert accounts(broker).reload() == broker.pid
    for client in (
        MqttClient(broker.port),
        connect(broker, Credentials("robot7", "wrong")),
        connect(broker, Credentials("robot8", robot.password)),
    ):
        with pytest.raises(MQTTConnectError):
            await client.connect()
    async with connect(broker, robot) as device:
        assert device.client.is_connected


async def test_a_device_publishes_its_own_topics_only(broker: MosquittoBroker) -> None:
    robot7, robot8 = accounts(broker).add_device("robot7"), accounts(broker).add_device("robot8")
    accounts(broker).reload()
    async with connect(broker, INGEST) as ingest, connect(broker, COMMANDS) as commands:
        assert await ingest.subscribe("#", 1) == 1  # granted, yet filtered at delivery
        await commands.subscribe("orin/+/command/+", 1)
        async with connect(broker, robot7) as device, connect(broker, robot8) as other:
            device.publish("sensors/robot7/coordinates", '{"x": 1, "y": 2}', qos=1)
            device.publish("sensors/robot8/coordinates", "as another robot", qos=1)
            device.publish("orin/robot8/command", "slam", qos=1)
            device.publish("test/hello", "anywhere else", qos=1)
            device.publish("orin/robot7/command/ack", "ack", qos=1)
            device.publish("orin/robot8/command/ack", "another robot's ack", qos=1)
            device.publish("orin/robot7/command/result", "done", qos=1)
            await device.drain()
            other.publish("sensors/robot8/motorRPM", "marker", qos=1)
            other.publish("orin/robot8/command/result", "marker", qos=1)
            await other.drain()
            received = await only(ingest, "marker")
            results = await only(commands, "marker")
    assert [(m.topic, m.payload) for m in received] == [
        ("sensors/robot7/coordinates", b'{"x": 1, "y": 2}'),
        ("orin/robot7/command/ack", b"ack"),
        ("orin/robot7/command/result", b"done"),
    ]
    assert [m.topic for m in results] == ["orin/robot7/command/ack", "orin/robot7/command/result"]


async def test_a_device_reads_its_own_commands_only(broker: MosquittoBroker) -> None:
    robot7 = accounts(broker).add_device("robot7")
    accounts(broker).reload()
    async with connect(broker, robot7) as device, connect(broker, COMMANDS) as commands:
        await device.subscribe("orin/#", 1)
        await device.subscribe("sensors/#", 1)
        commands.publish("orin/robot8/command", "for robot8", qos=1)
        commands.publish("orin/robot7/command/ack", "not a command", qos=1)
        async with connect(broker, SIMULATOR) as simulator:
            simulator.publish("sensors/robot8/coordinates", "another robot's data", qos=1)
            await simulator.drain()
        # Not even its own command topic may a device write (no spoofed commands).
        device.publish("orin/robot7/command", "from the device", qos=1)
        await device.drain()
        commands.publish("orin/robot7/command", "marker", qos=1)
        assert await only(device, "marker") == []


async def test_a_device_added_while_running_connects_and_a_removed_one_is_cut_off(
    broker: MosquittoBroker,
) -> None:
    store = accounts(broker)
    stays, goes = store.add_device("robot-stays"), store.add_device("robot-goes")
    assert store.reload() == broker.pid
    async with connect(broker, stays) as staying, connect(broker, goes) as leaving:
        assert store.remove_device("robot-goes")
        assert store.reload() == broker.pid
        await wait_until(lambda: not leaving.client.is_connected, "the removed one is cut off")
        with pytest.raises(MQTTConnectError):
            await connect(broker, goes).connect()
        # Everyone else keeps the session they had: a message still arrives on it.
        await staying.subscribe("orin/robot-stays/command", 1)
        async with connect(broker, COMMANDS) as commands:
            commands.publish("orin/robot-stays/command", "still here", qos=1)
            [message] = await staying.receive(1)
        assert message.payload == b"still here"
    assert store.devices() == ["robot-stays"]


async def test_the_servers_own_clients_connect_with_generated_accounts(
    broker: MosquittoBroker,
) -> None:
    secret = broker.client_endpoint(INGEST)
    assert secret.username == INGEST and secret.password
    stored = (accounts(broker).directory / "server-accounts").read_text()
    assert secret.password in stored
    assert secret.password not in accounts(broker).passwd.read_text()
    topic = f"sensors/r{uuid.uuid4().hex[:6]}/coordX"
    received: asyncio.Queue[bytes] = asyncio.Queue()

    def on_message(client: object, topic: str, payload: bytes, qos: int, props: object) -> int:
        received.put_nowait(payload)
        return 0

    link = MqttConnection(secret, "ingest", subscriptions=[topic], qos=1, on_message=on_message)
    async with link, connect(broker, SIMULATOR) as simulator:
        assert link.health().ok
        await wait_until(lambda: link.connected.is_set(), "ingest connected")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while received.empty():  # its SUBSCRIBE may still be on the way
            assert loop.time() < deadline
            simulator.publish(topic, "1.5", qos=1)
            await simulator.drain()
            await asyncio.sleep(0.05)
        assert await received.get() == b"1.5"


async def test_the_harness_mosquitto_secured_takes_the_same_accounts(tmp_path: Path) -> None:
    """``make services`` with IOTSTREAM_SERVICES_MQTT_AUTH=on: the distributed roles use the
    service account's --mqtt-url; ``iotstream devices --accounts-dir`` adds robots to it."""
    require("mosquitto")
    workdir = tmp_path / "services-mosquitto"
    service = await asyncio.to_thread(start_mosquitto, free_port(), workdir, secured=True)
    with service:
        url = MqttEndpoint.parse(mosquitto_url(service))
        assert (url.username, url.port) == (MQTT_SERVICE_ACCOUNT, service.port) and url.password
        store = Accounts(workdir)
        robot = store.add_device("robot7")
        assert store.reload() == service.pid
        with pytest.raises(MQTTConnectError):
            await MqttClient(service.port).connect()
        bridge = MqttClient(service.port, username=url.username, password=url.password)
        async with bridge, connect_to(service.port, robot) as device:
            await bridge.subscribe("#", 1)
            device.publish("sensors/robot8/coordinates", "as another robot", qos=1)
            device.publish("sensors/robot7/coordinates", "marker", qos=1)
            await device.drain()
            assert await only(bridge, "marker") == []
    assert not service.running()


def connect_to(port: int, who: Credentials) -> MqttClient:
    return MqttClient(port, username=who.username, password=who.password)


async def test_the_compose_stacks_devices_script_adds_and_removes_robots(tmp_path: Path) -> None:
    """deploy/mosquitto/devices.sh, run here against a harness broker instead of the
    container's: the robot it adds connects at once, and is cut off once removed."""
    workdir = tmp_path / "compose-mosquitto"
    service = await asyncio.to_thread(start_mosquitto, free_port(), workdir, secured=True)
    env = {"PATH": os.environ["PATH"] + ":/usr/bin:/usr/sbin", "PASSWD": str(workdir / "passwd")}
    env |= {"BROKER_PID": str(service.pid), "OWNER": ""}

    def devices(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(DEVICES_SCRIPT), *args], env=env, capture_output=True, text=True, check=False
        )

    with service:
        assert devices("add", "a/b").returncode == 2
        added = devices("add", "robot7")
        assert added.returncode == 0, added.stderr
        password = re.search(r"password  (\S+)", added.stdout)
        assert password is not None
        robot = Credentials("robot7", password.group(1))
        async with connect_to(service.port, robot) as device:
            removed = devices("remove", "robot7")
            assert removed.returncode == 0, removed.stderr
            await wait_until(lambda: not device.client.is_connected, "robot7 is cut off")
        with pytest.raises(MQTTConnectError):
            await connect_to(service.port, robot).connect()
