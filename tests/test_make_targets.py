"""The reference system's make targets, through the modules the Makefile runs them with
(``harness.embedded`` for make setup/restart/stop, ``harness.checks`` for make test-mqtt,
test-websocket-pipeline and test-redis-pipeline), against real servers: each ends with a PASS
line and exit 0, or a FAIL line and exit 1."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

import harness
from harness.embedded import PID_FILE
from harness.processes import pid_alive

from .conftest import require
from .test_distributed import Stack

ROOT = Path(__file__).resolve().parent.parent


def run(module: str, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """``python -m module args`` as the Makefile runs it: its exit code and last line."""
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=180,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, f"no output; stderr:\n{result.stderr}"
    return result.returncode, lines[-1]


def recorded_pid(env: dict[str, str]) -> int:
    record = json.loads((Path(env["IOTSTREAM_DATA_DIR"]) / PID_FILE).read_text())
    return int(record["pid"])


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment of a ``make setup`` on free ports; whatever it started is stopped."""
    require("mosquitto")
    http_port, mqtt_port = harness.free_ports(2)
    env = {
        "IOTSTREAM_DATA_DIR": str(tmp_path / "data"),
        "IOTSTREAM_HTTP_PORT": str(http_port),
        "IOTSTREAM_MQTT_PORT": str(mqtt_port),
    }
    yield env
    run("harness.embedded", "stop", env=env)


def test_make_targets_are_there() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target, command in {
        "setup": "harness.embedded start",
        "restart": "harness.embedded restart",
        "stop": "harness.embedded stop",
        "run": "harness.embedded run",
        "test-mqtt": "harness.checks test-mqtt",
        "test-websocket-pipeline websocket-test": "harness.checks test-websocket-pipeline",
        "test-redis-pipeline": "harness.checks test-redis-pipeline",
    }.items():
        rule = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n)+)", makefile, re.M)
        assert rule is not None, target
        assert command in rule.group(1), (target, rule.group(1))
    assert re.search(r"^clean: stop$", makefile, re.M)
    assert re.search(r"^logs-%:", makefile, re.M)
    assert "prometheus:prometheus" in makefile.split("system-packages:")[1].split("\n\n")[0]


@pytest.mark.e2e
def test_setup_restart_and_stop_the_embedded_server(embedded: dict[str, str]) -> None:
    code, line = run("harness.embedded", "start", env=embedded)
    assert code == 0 and line.startswith("PASS setup: iotstream run (pid "), line
    first = recorded_pid(embedded)
    # The record keeps the server's IOTSTREAM_* settings: for its owner only.
    assert (Path(embedded["IOTSTREAM_DATA_DIR"]) / PID_FILE).stat().st_mode & 0o777 == 0o600
    health = f"http://127.0.0.1:{embedded['IOTSTREAM_HTTP_PORT']}/api/health"
    assert httpx.get(health).status_code == 200

    code, line = run("harness.embedded", "start", env=embedded)
    assert (code, line) == (0, f"PASS setup: iotstream run already runs (pid {first}), {health}")

    # Restart finds the server by its PID file alone, with its settings recorded there.
    data_dir_only = {"IOTSTREAM_DATA_DIR": embedded["IOTSTREAM_DATA_DIR"]}
    code, line = run("harness.embedded", "restart", env=data_dir_only)
    assert code == 0 and line.startswith(f"PASS restart: pid {first} stopped; iotstream run"), line
    second = recorded_pid(embedded)
    assert second != first and not pid_alive(first) and pid_alive(second)
    assert httpx.get(health).status_code == 200

    assert run("harness.embedded", "stop", env=embedded) == (
        0,
        f"PASS stop: iotstream run (pid {second}) stopped",
    )
    assert not pid_alive(second)
    assert run("harness.embedded", "status", env=embedded)[0] == 1


@pytest.mark.e2e
def test_the_checks_pass_against_a_running_server(embedded: dict[str, str]) -> None:
    assert run("harness.embedded", "start", env=embedded)[0] == 0

    code, line = run("harness.checks", "test-mqtt", env=embedded)
    assert code == 0 and line.startswith("PASS test-mqtt: robot1 at x=123.45 y=67.89"), line
    http = f"http://127.0.0.1:{embedded['IOTSTREAM_HTTP_PORT']}"
    robot = httpx.get(f"{http}/api/devices/robot1").json()
    assert (robot["x"], robot["y"], robot["motorRPM"]) == (123.45, 67.89, 1500)
    stats = httpx.get(f"{http}/api/stats").json()
    assert stats["rawTopics"]["test/hello"] == 1
    assert stats["rawTopics"]["orin/robot1/command"] == 1

    code, line = run("harness.checks", "test-websocket-pipeline", env=embedded)
    assert code == 0, line
    match = re.match(r"PASS test-websocket-pipeline: .* received robot1 at \(([\d.]+), ", line)
    assert match is not None, line
    # The value the WebSocket client saw is the one the server now holds.
    assert httpx.get(f"{http}/api/devices/robot1").json()["x"] == float(match.group(1))


@pytest.mark.parametrize("check", ["test-mqtt", "test-websocket-pipeline", "test-redis-pipeline"])
def test_a_check_fails_when_nothing_runs(check: str) -> None:
    http_port, mqtt_port, kafka_port = harness.free_ports(3)
    env = {
        "IOTSTREAM_HTTP_PORT": str(http_port),
        "IOTSTREAM_MQTT_PORT": str(mqtt_port),
        "IOTSTREAM_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
        "IOTSTREAM_CHECK_TIMEOUT": "5",
    }
    code, line = run("harness.checks", check, env=env)
    assert code == 1 and line.startswith(f"FAIL {check}: "), line
    assert str(kafka_port if check == "test-redis-pipeline" else http_port) in line


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes() and pid_alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.kafka
@pytest.mark.redis
def test_the_redis_pipeline_check_on_kafka_and_redis(
    tmp_path: Path, kafka: harness.Service, redis_server: harness.Service
) -> None:
    require("mosquitto")
    with harness.start_mosquitto(harness.free_port(), tmp_path / "mosquitto") as broker:
        stack = Stack(tmp_path, broker.port, kafka.address, f"redis://{redis_server.address}/0")
        env = {
            "IOTSTREAM_MQTT_URL": f"mqtt://127.0.0.1:{broker.port}",
            "IOTSTREAM_KAFKA_BOOTSTRAP": kafka.address,
            "IOTSTREAM_REDIS_URL": stack.redis,
            # What the running roles use, so the roles the check starts use it too.
            "IOTSTREAM_KAFKA_TOPIC": stack.topic,
            "IOTSTREAM_KAFKA_GROUP": f"processor-{stack.topic}",
            "IOTSTREAM_KAFKA_PARTITIONS": "8",
            "IOTSTREAM_REDIS_PREFIX": stack.topic,
            "IOTSTREAM_CHECK_MARKER": uuid.uuid4().hex,
        }
        try:
            stack.start_bridge()
            stack.start("processor", "processor")
            for name in ("bridge", "processor"):
                stack.wait_healthy(name)
            env["IOTSTREAM_CHECK_BRIDGE_PORT"] = stack.http["bridge"].rsplit(":", 1)[1]
            env["IOTSTREAM_CHECK_PROCESSOR_PORT"] = stack.http["processor"].rsplit(":", 1)[1]
            code, line = run("harness.checks", "test-redis-pipeline", env=env)
            assert code == 0 and line.endswith("(running roles)"), line
        finally:
            stack.stop_all()

        # Nothing answers on those ports now: the check starts a bridge and a processor.
        code, line = run("harness.checks", "test-redis-pipeline", env=env)
        assert code == 0 and line.endswith("(bridge and processor started for the check)"), line
        match = re.search(r"robot1 at \(([\d.]+), ([\d.]+)\)", line)
        assert match is not None, line
        state = redis.Redis.from_url(stack.redis).hget(f"{stack.topic}:state", "robot1")
        assert isinstance(state, bytes)
        assert json.loads(state)["x"] == float(match.group(1))
        # ... and stops them.
        assert processes_with(env["IOTSTREAM_CHECK_MARKER"]) == []
