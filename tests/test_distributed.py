"""The distributed mode on real engines: Mosquitto -> bridge -> Kafka -> processor -> Redis ->
two api instances, and Kafka -> archiver -> the lake, each role its own ``iotstream`` process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect

import harness
from iotstream.config import MqttEndpoint
from iotstream.mqtt import MqttConnection

from .conftest import MqttListener, require, stop_process
from .test_metrics import scrape, scrape_until

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@dataclass
class Stack:
    """The engines plus the role processes of one test, all on free loopback ports."""

    tmp: Path
    mqtt_port: int
    kafka: str
    redis: str
    topic: str = field(default_factory=lambda: f"mqtt-{uuid.uuid4().hex[:8]}")
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    http: dict[str, str] = field(default_factory=dict)
    """Where each process answers GET /api/health: an api's HTTP port, the others' own."""

    def flags(self, role: str) -> list[str]:
        """Only what each role needs, as the README's quick start gives them."""
        kafka = [
            "--kafka-bootstrap",
            self.kafka,
            "--kafka-topic",
            self.topic,
            "--kafka-partitions",
            "8",
            "--kafka-group",
            f"processor-{self.topic}",
        ]
        redis = ["--redis-url", self.redis, "--redis-prefix", self.topic]
        mqtt = ["--mqtt-url", f"mqtt://127.0.0.1:{self.mqtt_port}"]
        lake = ["--lake-url", str(self.tmp / "lake")]
        engines = {
            "bridge": mqtt + kafka,
            "processor": kafka + redis,
            "api": redis + mqtt + lake,
            "archiver": kafka + lake,
        }[role]
        return [*engines, "--data-dir", str(self.tmp / "data"), "--log-level", "info"]

    def start(self, name: str, role: str, *extra: str) -> None:
        """Start ``role`` as ``name``; a restart keeps the name's port."""
        if name not in self.http:
            self.http[name] = f"http://127.0.0.1:{harness.free_port()}"
        port = self.http[name].rsplit(":", 1)[1]
        listener = ["--http-port" if role == "api" else "--metrics-port", port]
        log = (self.tmp / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "iotstream", role, *self.flags(role), *listener, *extra],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def start_bridge(self) -> None:
        self.start("bridge", "bridge", "--mqtt-client-id", f"bridge-{self.topic}")

    def start_api(self, name: str) -> None:
        self.start(name, "api")
        self.wait_healthy(name)

    def health(self, name: str) -> httpx.Response:
        return httpx.get(self.http[name] + "/api/health", timeout=5)

    def wait_healthy(self, name: str) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.health(name).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.processes[name].poll() is None, self.log(name)
            assert time.monotonic() < deadline, self.log(name)
            time.sleep(0.1)

    def kill(self, name: str) -> None:
        process = self.processes[name]
        os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for process in self.processes.values():
            stop_process(process)


@contextmanager
def running_stack(
    tmp: Path, kafka: harness.Service, redis_server: harness.Service
) -> Iterator[Stack]:
    require("mosquitto")
    with harness.start_mosquitto(harness.free_port(), tmp / "mosquitto") as broker:
        stack = Stack(tmp, broker.port, kafka.address, f"redis://{redis_server.address}/0")
        try:
            stack.start_bridge()
            stack.start("processor", "processor")
            stack.start("archiver", "archiver")
            stack.start_api("api1")
            stack.start_api("api2")
            for name in ("bridge", "processor", "archiver"):
                stack.wait_healthy(name)
            yield stack
        finally:
            stack.stop_all()
        for name, process in stack.processes.items():
            assert process.returncode in (0, -signal.SIGKILL), f"{name}:\n{stack.log(name)}"


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, kafka: harness.Service, redis_server: harness.Service
) -> Iterator[Stack]:
    """One stack for the tests that only add devices of their own to it (in file order: the
    metrics test counts what the bridge and api1 did, so it comes before the others that
    publish or post)."""
    with running_stack(tmp_path_factory.mktemp("stack"), kafka, redis_server) as stack:
        yield stack


@pytest.fixture
def stack(tmp_path: Path, kafka: harness.Service, redis_server: harness.Service) -> Iterator[Stack]:
    """A stack of its own, for a test that kills its roles."""
    with running_stack(tmp_path, kafka, redis_server) as stack:
        yield stack


def test_every_role_answers_health_on_a_port_of_its_own(shared: Stack) -> None:
    expected = {
        "bridge": {"broker", "bus", "ingest"},
        "processor": {"bus", "store", "processor"},
        "api1": {"broker", "store", "hub", "commands", "lake"},
        "archiver": {"bus", "lake", "archiver"},
    }
    for name, components in expected.items():
        response = shared.health(name)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "UP"
        assert set(body["components"]) == components, body
    for name in ("bridge", "processor", "archiver"):
        # Health only: the API and its docs are the api's.
        assert httpx.get(shared.http[name] + "/api/stats").status_code == 404
        assert f"Health     {shared.http[name]}/api/health" in shared.log(name)


def test_every_role_serves_metrics_of_its_own(shared: Stack) -> None:
    """Each process counts what it did itself: the bridge what it received and published, the
    processor and the archiver what they consumed and wrote, an api its commands and
    requests."""
    device = f"metered-{uuid.uuid4().hex[:6]}"
    lines = [orjson.dumps({"x": float(i), "y": 0.0, "seq": i}).decode() for i in range(50)]
    subprocess.run(
        [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(shared.mqtt_port), "-q", "1",
         "-t", f"sensors/{device}/coordinates", "-l"],
        input="\n".join(lines).encode() + b"\n", check=True, timeout=30,
    )  # fmt: skip
    subprocess.run(
        [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(shared.mqtt_port), "-q", "1",
         "-t", f"sensors/{device}/coordinates", "-m", "not json"],
        check=True, timeout=10,
    )  # fmt: skip
    api = shared.http["api1"]
    command = httpx.post(f"{api}/api/commands/{device}", json={"command": "tracking"})
    assert command.status_code == 202, command.text
    deadline = time.monotonic() + 30
    while httpx.get(f"{api}/api/devices/{device}").json().get("seq") != 49:
        assert time.monotonic() < deadline, shared.log("processor")[-2000:]
        time.sleep(0.1)

    bridge = scrape_until(
        shared.http["bridge"],
        lambda got: got.total("iotstream_bus_published_events_total", kind="raw") >= 1,
    )
    assert bridge.value("iotstream_build_info", role="bridge") == 1
    assert bridge.total("iotstream_mqtt_messages_received_total") >= 52
    assert bridge.total("iotstream_bus_published_events_total", kind="reading") == 50
    assert bridge.total("iotstream_bus_published_events_total", kind="rejected") == 1
    assert bridge.total("iotstream_parse_rejects_total", reason="invalid_json") == 1
    assert bridge.value("iotstream_mqtt_connected") == 1
    assert (bridge.value("iotstream_bus_publish_duration_seconds_count") or 0) >= 1
    assert bridge.value("iotstream_devices") is None  # the api's alone
    assert bridge.value("iotstream_store_up") is None  # it has none

    # Until everything is committed: end offset - committed offset is 0 on every partition.
    processor = scrape_until(
        shared.http["processor"],
        lambda got: (
            got.total("iotstream_bus_consumed_events_total", group="processor") >= 52
            and bool(got.labels("iotstream_bus_consumer_lag_events", "partition"))
            and got.total("iotstream_bus_consumer_lag_events") == 0
        ),
    )
    assert processor.value("iotstream_build_info", role="processor") == 1
    assert processor.labels("iotstream_bus_consumer_lag_events", "partition") <= {
        f"{topic}-{n}" for topic in (shared.topic, f"{shared.topic}.deadletter") for n in range(8)
    }
    assert (processor.value("iotstream_store_write_duration_seconds_count") or 0) >= 1
    assert processor.value("iotstream_store_up") == 1
    assert processor.value("iotstream_pipeline_lag_seconds", group="processor") is not None
    assert processor.value("iotstream_mqtt_connected") is None
    health = shared.health("processor").json()
    assert health["consumerLag"] == {"processor": 0}
    assert set(health["pipelineLagSeconds"]) == {"processor"}

    archiver = scrape_until(
        shared.http["archiver"],
        lambda got: got.total("iotstream_lake_rows_written_total", table="readings") >= 50,
    )
    assert archiver.total("iotstream_bus_consumed_events_total", group="archiver") >= 52
    assert (archiver.value("iotstream_lake_commit_duration_seconds_count") or 0) >= 1

    served = scrape(api)
    assert served.value("iotstream_build_info", role="api") == 1
    assert served.total("iotstream_commands_total", state="queued") >= 1
    assert served.total("iotstream_commands_total", state="sent") >= 1
    posted = served.value(
        "iotstream_http_request_duration_seconds_count",
        method="POST",
        route="/api/commands/{device_id}",
        status="202",
    )
    assert posted == 1
    assert (served.value("iotstream_devices") or 0) >= 1
    assert served.value("iotstream_websocket_clients") == 0
    assert served.value("iotstream_store_up") == 1
    assert served.value("iotstream_bus_consumed_events_total") is None  # no consumer here


async def until_device(ws: Any, device: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        frame = orjson.loads(await asyncio.wait_for(ws.recv(), deadline - time.monotonic()))
        for state in frame.get("devices", []):
            if isinstance(state, dict) and state["deviceId"] == device:
                return state  # type: ignore[no-any-return]


async def test_a_coordinate_reaches_websocket_clients_of_both_apis(shared: Stack) -> None:
    device = f"robot-{uuid.uuid4().hex[:6]}"
    async with (
        connect(shared.http["api1"].replace("http", "ws") + "/coordinates") as ws1,
        connect(shared.http["api2"].replace("http", "ws") + "/coordinates") as ws2,
    ):
        for ws in (ws1, ws2):
            assert orjson.loads(await ws.recv())["type"] == "snapshot"
        subprocess.run(
            [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(shared.mqtt_port), "-q", "1",
             "-t", f"sensors/{device}/coordinates", "-m", '{"x": 123.45, "y": 67.89}'],
            check=True, timeout=10,
        )  # fmt: skip
        for ws in (ws1, ws2):
            state = await until_device(ws, device)
            assert (state["x"], state["y"]) == (123.45, 67.89)
    for api in ("api1", "api2"):
        body = httpx.get(f"{shared.http[api]}/api/devices/{device}").json()
        assert body["x"] == 123.45
        stats = httpx.get(f"{shared.http[api]}/api/stats").json()
        assert stats["perDevice"][device] == 1


def test_a_command_posted_to_either_api_reaches_the_device(shared: Stack) -> None:
    device = f"orin-{uuid.uuid4().hex[:6]}"
    ids = []
    with MqttListener(shared.mqtt_port, f"orin/{device}/command") as device_side:
        for api, command in (("api1", "tracking"), ("api2", "slam")):
            response = httpx.post(
                f"{shared.http[api]}/api/commands/{device}", json={"command": command}
            )
            assert response.status_code == 202, response.text
            ids.append(response.json()["id"])
        assert device_side.lines(2) == ["tracking", "slam"]
    # The device's report goes bridge -> Kafka -> processor -> Redis: the other api sees it.
    subprocess.run(
        [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(shared.mqtt_port), "-q", "1",
         "-t", f"orin/{device}/command/result",
         "-m", orjson.dumps({"id": ids[0], "status": "succeeded", "result": 1}).decode()],
        check=True, timeout=10,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while (command := httpx.get(f"{shared.http['api2']}/api/commands/{ids[0]}").json())[
        "status"
    ] != "succeeded":
        assert time.monotonic() < deadline, command
        time.sleep(0.05)
    assert (command["result"], command["delivery"]) == (1, "confirmed")


async def publish_stream(port: int, devices: int, count: int, rate: float) -> None:
    """``count`` sequence-numbered, timestamped readings per device at ``rate`` rounds/s (QoS 1)."""
    async with MqttConnection(MqttEndpoint("127.0.0.1", port), "stream") as link:
        await link.connected.wait()
        t0 = time.time()
        for seq in range(count):
            for d in range(devices):
                payload = {"x": float(seq), "y": float(d), "seq": seq, "timestamp": t0 + seq / 1000}
                link.publish(f"sensors/dev{d}/coordinates", orjson.dumps(payload), qos=1)
            await asyncio.sleep(1 / rate)
        await asyncio.wait_for(link.drain(), 60)


async def test_kill_9_of_processor_and_bridge_loses_nothing(stack: Stack) -> None:
    devices, count = 100, 60
    publisher = asyncio.create_task(publish_stream(stack.mqtt_port, devices, count, rate=20))
    await asyncio.sleep(0.8)
    stack.kill("bridge")
    await asyncio.sleep(0.5)
    stack.start_bridge()
    await asyncio.sleep(0.5)
    stack.kill("processor")
    await asyncio.sleep(0.5)
    stack.start("processor", "processor")
    await publisher

    api = stack.http["api1"]
    deadline = time.monotonic() + 60
    while True:
        states = {d["deviceId"]: d for d in httpx.get(f"{api}/api/coordinates").json()}
        done = all(states.get(f"dev{d}", {}).get("seq") == count - 1 for d in range(devices))
        if done or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    lagging = {
        f"dev{d}": states.get(f"dev{d}", {}).get("seq")
        for d in range(devices)
        if states.get(f"dev{d}", {}).get("seq") != count - 1
    }
    assert not lagging, (
        f"{lagging}\n{stack.log('bridge')[-3000:]}\n{stack.log('processor')[-3000:]}"
    )
    counts = httpx.get(f"{api}/api/stats").json()["perDevice"]
    assert {d: counts.get(f"dev{d}") for d in range(devices)} == {d: count for d in range(devices)}


async def test_a_redis_outage_holds_the_processor_and_loses_nothing(
    tmp_path: Path, kafka: harness.Service
) -> None:
    """While Redis is down the processor keeps its batch and commits nothing; once Redis is
    back, what was published during the outage arrives."""
    require("mosquitto")

    def publish(seqs: range) -> None:
        lines = [orjson.dumps({"x": float(s), "y": 0.0, "seq": s}).decode() for s in seqs]
        subprocess.run(
            [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(broker.port), "-q", "1",
             "-t", "sensors/outage/coordinates", "-l"],
            input="\n".join(lines).encode() + b"\n", check=True, timeout=30,
        )  # fmt: skip

    def wait_for(predicate: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"{what}\n{stack.log('processor')[-2000:]}"
            time.sleep(0.1)

    def seq() -> Any:
        response = httpx.get(f"{stack.http['api']}/api/devices/outage", timeout=5)
        return response.json().get("seq") if response.status_code == 200 else None

    with (
        harness.start_mosquitto(harness.free_port(), tmp_path / "mosquitto") as broker,
        harness.start_redis(harness.free_port(), tmp_path / "redis") as redis,
    ):
        stack = Stack(tmp_path, broker.port, kafka.address, f"redis://{redis.address}/0")
        try:
            stack.start_bridge()
            stack.start("processor", "processor")
            stack.start_api("api")
            publish(range(10))
            wait_for(lambda: seq() == 9, "the first readings never arrived")

            redis.kill()
            wait_for(
                lambda: httpx.get(f"{stack.http['api']}/api/health", timeout=5).status_code == 503,
                "health never reported the Redis outage",
            )
            publish(range(10, 30))
            wait_for(
                lambda: "holding the batch until it is back" in stack.log("processor"),
                "the processor never met the outage",
            )
            assert stack.processes["processor"].poll() is None, stack.log("processor")
            assert stack.health("processor").status_code == 503

            redis.restart()
            wait_for(lambda: seq() == 29, "readings published during the outage were lost")
            for name in ("api", "processor"):
                health = stack.health(name)
                assert health.status_code == 200, health.text
        finally:
            stack.stop_all()
