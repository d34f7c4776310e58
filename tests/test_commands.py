"""Tracked commands through real components: a Mosquitto, the ingest, the memory bus, the
processor and the command service, with MQTT 5 and MQTT 3.1.1 devices."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from gmqtt import Client
from gmqtt.mqtt.constants import MQTTv50

import harness
from harness import free_port, stop_process
from harness.engines import mosquitto_config
from iotstream.broker import MosquittoBroker
from iotstream.bus.memory import MemoryBus
from iotstream.commands import CommandService
from iotstream.config import MqttEndpoint
from iotstream.ingest import Ingest
from iotstream.models import Batch, Command, DeviceId, Reading
from iotstream.mqtt import MqttConnection
from iotstream.parser import Parser
from iotstream.processor import Processor
from iotstream.store import MemoryStore

from .broker.client import MqttClient
from .conftest import Server, require, start_server
from .faults import wait_until

TIMEOUT = 10.0


@dataclass
class Pipeline:
    broker: MosquittoBroker
    store: MemoryStore
    commands: CommandService

    async def command(self, command_id: str) -> Command:
        found = await self.store.command(command_id)
        assert found is not None
        return found

    async def wait_for_status(self, command_id: str, *statuses: str) -> Command:
        """The command once its transitions went through ``statuses``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while True:
            command = await self.command(command_id)
            if [t.status for t in command.transitions][: len(statuses)] == list(statuses):
                return command
            if loop.time() > deadline:
                raise AssertionError(f"command never went {statuses}: {command}")
            await asyncio.sleep(0.01)


@asynccontextmanager
async def serving(endpoint: MqttEndpoint) -> AsyncIterator[tuple[MemoryStore, CommandService]]:
    """The ingest, the memory bus and store, the processor and the command service on a
    broker."""
    async with MemoryStore() as store, MemoryBus() as bus:
        ingest = Ingest(endpoint, ["#"], 1, Parser(), bus)
        link = MqttConnection(endpoint, "commands", mqtt5=True)
        commands = CommandService(link, store, offline_after=30, sweep_interval=0.05)
        async with Processor(bus, store), ingest, link, commands:
            yield store, commands


@pytest.fixture
async def pipeline(tmp_path: Path) -> AsyncIterator[Pipeline]:
    broker = MosquittoBroker("127.0.0.1", free_port(), tmp_path / "mosquitto", require("mosquitto"))
    async with broker, serving(MqttEndpoint(broker.host, broker.port)) as (store, commands):
        yield Pipeline(broker, store, commands)


class Mqtt5Device:
    """A device on MQTT 5 (gmqtt): what it receives, with the publish properties."""

    def __init__(self, port: int, device_id: str) -> None:
        self.port = port
        self.device_id = device_id
        self.client = Client(f"dev-{uuid.uuid4().hex[:8]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.messages: asyncio.Queue[tuple[bytes, dict[str, Any]]] = asyncio.Queue()
        self._subscribed = asyncio.Event()

    def _on_message(
        self, client: Any, topic: str, payload: bytes, qos: int, properties: dict[str, Any]
    ) -> int:
        self.messages.put_nowait((payload, properties))
        return 0

    def _on_subscribe(self, client: Any, mid: int, granted: Any, properties: Any) -> None:
        self._subscribed.set()

    async def __aenter__(self) -> Mqtt5Device:
        await self.client.connect("127.0.0.1", self.port, version=MQTTv50)
        self.client.subscribe(f"orin/{self.device_id}/command", qos=1)
        await asyncio.wait_for(self._subscribed.wait(), 10)  # the SUBACK
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.client.disconnect()

    async def receive(self) -> tuple[bytes, dict[str, Any]]:
        return await asyncio.wait_for(self.messages.get(), TIMEOUT)

    def answer(self, kind: str, document: dict[str, Any]) -> None:
        self.client.publish(f"orin/{self.device_id}/command/{kind}", orjson.dumps(document), qos=1)


async def test_a_command_goes_out_with_mqtt5_properties_and_plain_to_a_3_1_1_device(
    pipeline: Pipeline,
) -> None:
    async with (
        Mqtt5Device(pipeline.broker.port, "r1") as device,
        MqttClient(pipeline.broker.port) as plain,
    ):
        await plain.subscribe("orin/r1/command", qos=1)
        command = await pipeline.commands.submit("r1", "goto", [1.5, 2], ttl=30)
        assert command.status == "sent"
        payload, properties = await device.receive()
        assert payload == b"goto 1.5 2"
        assert properties["correlation_data"] == [command.id.encode()]
        assert properties["response_topic"] == ["orin/r1/command/result"]
        assert 28 <= properties["message_expiry_interval"][0] <= 30
        [message] = await plain.receive(1)
        assert (message.payload, message.qos) == (b"goto 1.5 2", 1)


async def test_acks_and_results_move_the_command_through_the_ingest(pipeline: Pipeline) -> None:
    async with Mqtt5Device(pipeline.broker.port, "r1") as device:
        command = await pipeline.commands.submit("r1", "slam")
        await device.receive()
        device.answer("ack", {"id": command.id, "status": "delivered"})
        await pipeline.wait_for_status(command.id, "queued", "sent", "delivered")
        device.answer("result", {"id": command.id, "status": "succeeded", "result": {"map": 3}})
        done = await pipeline.wait_for_status(
            command.id, "queued", "sent", "delivered", "succeeded"
        )
        assert (done.closed, done.delivery, done.result) == (True, "confirmed", {"map": 3})


async def test_a_command_for_an_offline_device_waits_for_its_return(pipeline: Pipeline) -> None:
    async with Mqtt5Device(pipeline.broker.port, "r2") as device:
        presence = MqttClient(pipeline.broker.port)
        async with presence:
            presence.publish("sensors/r2/presence", "offline", qos=1, retain=True)
            await wait_until_offline(pipeline, "r2")
            command = await pipeline.commands.submit("r2", "tracking", ttl=30)
            assert command.status == "queued"
            await asyncio.sleep(0.3)
            assert device.messages.empty()
            presence.publish("sensors/r2/presence", "online", qos=1, retain=True)
            payload, properties = await device.receive()
        assert payload == b"tracking"
        assert properties["correlation_data"] == [command.id.encode()]
        sent = await pipeline.command(command.id)
        assert (sent.status, sent.attempts) == ("sent", 1)


async def test_a_command_whose_ttl_passed_offline_expires_and_is_never_sent(
    pipeline: Pipeline,
) -> None:
    async with Mqtt5Device(pipeline.broker.port, "r3") as device:
        presence = MqttClient(pipeline.broker.port)
        async with presence:
            presence.publish("sensors/r3/presence", "offline", qos=1, retain=True)
            await wait_until_offline(pipeline, "r3")
            command = await pipeline.commands.submit("r3", "goto", [9, 9], ttl=1)
            expired = await pipeline.wait_for_status(command.id, "queued", "expired")
            assert (expired.closed, expired.reason) == (True, "ttl_expired")
            presence.publish("sensors/r3/presence", "online", qos=1, retain=True)
            await wait_until(lambda: "r3" not in pipeline.commands._waiting, "r3 was checked")
            await asyncio.sleep(0.3)
        assert device.messages.empty()
        assert (await pipeline.command(command.id)).status == "expired"


RECEIVE_MAXIMUM = 5
"""QoS 1 messages the broker of the next test lets a client have unacknowledged."""


async def test_a_returning_devices_queue_longer_than_the_brokers_receive_maximum_all_goes_out(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = mosquitto_config(port).replace(
        "max_inflight_messages 0", f"max_inflight_messages {RECEIVE_MAXIMUM}"
    )
    assert f"max_inflight_messages {RECEIVE_MAXIMUM}" in config
    broker = harness.start_mosquitto(port, tmp_path / "mosquitto", config)
    try:
        async with (
            serving(MqttEndpoint("127.0.0.1", port)) as (store, commands),
            Mqtt5Device(port, "r7") as device,
            MqttClient(port) as presence,
        ):
            presence.publish("sensors/r7/presence", "offline", qos=1, retain=True)
            await wait_until_offline(store, "r7")
            made = [await commands.submit("r7", "goto", [n, n], ttl=60) for n in range(60)]
            assert {command.status for command in made} == {"queued"}
            presence.publish("sensors/r7/presence", "online", qos=1, retain=True)
            received = [await device.receive() for _ in made]
        # Every one, once, in the order they were queued.
        assert [payload for payload, _ in received] == [f"goto {n} {n}".encode() for n in range(60)]
        assert [p["correlation_data"] for _, p in received] == [[c.id.encode()] for c in made]
        for command in made:
            sent = await store.command(command.id)
            assert sent is not None and (sent.status, sent.attempts) == ("sent", 1)
        assert commands.sent == 60
    finally:
        broker.stop()


async def wait_until_offline(pipeline: Pipeline | MemoryStore, device_id: str) -> None:
    store = pipeline.store if isinstance(pipeline, Pipeline) else pipeline
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while True:
        state = await store.device(device_id)
        if state is not None and state.get("presence") == "offline":
            return
        assert loop.time() < deadline, f"{device_id} never went offline: {state}"
        await asyncio.sleep(0.01)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``iotstream run`` with two simulated robots, as ``make demo`` runs it with twenty."""
    srv = start_server(
        tmp_path_factory.mktemp("simulated"), "--simulate", "2", "--simulate-rate", "10"
    )
    yield srv
    stop_process(srv.process)


def test_a_simulated_robot_drives_to_its_goal_in_the_embedded_server(simulated: Server) -> None:
    srv = simulated
    state = srv.wait_for(
        "/api/devices/robot1", lambda r: r.status_code == 200 and "x" in r.json()
    ).json()
    goal = [round(min(55.0, max(5.0, state["x"] + 1.5)), 2), round(state["y"], 2)]
    response = httpx.post(
        f"{srv.http}/api/devices/robot1/commands",
        json={"command": "goto", "args": goal, "ttl": 30},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    command_id = response.json()["id"]
    done = srv.wait_for(
        f"/api/commands/{command_id}", lambda r: r.json()["closed"], timeout=20
    ).json()
    assert [t["status"] for t in done["transitions"]] == [
        "queued",
        "sent",
        "delivered",
        "succeeded",
    ]
    assert abs(done["result"]["x"] - goal[0]) < 0.5
    assert abs(done["result"]["y"] - goal[1]) < 0.5


def test_the_reference_examples_reach_a_simulated_robot(simulated: Server) -> None:
    """``mosquitto_pub -t orin/robot1/command -m tracking`` and ``curl -X POST
    /api/commands/robot1``, unchanged, against a robot of the device SDK."""
    srv = simulated
    srv.wait_for("/api/devices/robot2", lambda r: r.json().get("presence") == "online")
    subprocess.run(
        [require("mosquitto_pub"), "-h", "localhost", "-p", str(srv.mqtt_port),
         "-t", "orin/robot2/command", "-m", "tracking"],
        check=True, timeout=10,
    )  # fmt: skip
    srv.wait_for(
        "/api/devices/robot2",
        lambda r: (r.json().get("mode"), r.json().get("lastCommand")) == ("tracking", "tracking"),
    )
    answer = subprocess.run(
        [require("curl"), "-s", "-X", "POST", f"{srv.http}/api/commands/robot2",
         "-H", "Content-Type: application/json", "-d", '{"command": "slam"}'],
        check=True, timeout=10, capture_output=True,
    )  # fmt: skip
    accepted = orjson.loads(answer.stdout)
    assert (accepted["status"], accepted["topic"]) == ("accepted", "orin/robot2/command")
    done = srv.wait_for(
        f"/api/commands/{accepted['id']}", lambda r: r.json()["status"] == "succeeded"
    ).json()
    assert done["result"] == {"mode": "slam"}
    # The robot reports its mode with its next batch of readings.
    srv.wait_for("/api/devices/robot2", lambda r: r.json().get("mode") == "slam")


@pytest.mark.redis
async def test_a_queued_command_outlives_its_api_instance_on_redis(
    tmp_path: Path, redis_server: harness.Service
) -> None:
    from iotstream.store.redis import RedisStore

    url, prefix = f"redis://{redis_server.address}/0", f"test-{uuid.uuid4().hex}"
    broker = MosquittoBroker("127.0.0.1", free_port(), tmp_path / "mosquitto", require("mosquitto"))
    endpoint = MqttEndpoint(broker.host, broker.port)
    now = time.time()
    async with broker:
        first_link = MqttConnection(endpoint, "commands", mqtt5=True)
        async with RedisStore(url, prefix=prefix) as store, first_link:
            first = CommandService(first_link, store)
            async with first:
                offline = Reading(DeviceId("r9"), {"presence": "offline"}, now, now)
                await store.apply(Batch(readings=[offline]))
                command = await first.submit("r9", "goto", [4, 5], ttl=30)
                assert command.status == "queued"
        # Another instance, started after the first one stopped, sends it on the return.
        second_link = MqttConnection(endpoint, "commands", mqtt5=True)
        async with (
            RedisStore(url, prefix=prefix) as store,
            second_link,
            CommandService(second_link, store),
            Mqtt5Device(broker.port, "r9") as device,
        ):
            online = Reading(DeviceId("r9"), {"presence": "online"}, now + 1, now + 1)
            await store.apply(Batch(readings=[online]))
            payload, properties = await device.receive()
            assert payload == b"goto 4 5"
            assert properties["correlation_data"] == [command.id.encode()]
            sent = await store.command(command.id)
            assert sent is not None and (sent.status, sent.attempts) == ("sent", 1)


def test_the_command_bench_runs_at_a_small_size(tmp_path: Path) -> None:
    from bench.commands import run_commands

    result = run_commands(tmp_path, devices=4, rate=10, seconds=1, queued=8, workers=1)
    trip, queue = result["roundTrip"], result["offlineQueue"]
    assert (trip["commands"], trip["refused"], trip["missingOnWebSocket"]) == (10, 0, 0)
    assert trip["rest"]["count"] == trip["websocket"]["count"] == 10
    assert queue["statusesWhenPosted"] == {"queued": 8}
    assert queue["delivered"] == 8
    # The store's word too: every queued command ran, and the watcher missed no frame.
    assert queue["statusesAtEnd"] == {"succeeded": 8}
    assert (queue["watcherResyncs"], queue["afterOwnReturn"]["count"]) == (0, 8)
