"""End to end: ``iotstream run`` as a subprocess, real Mosquitto clients, WebSocket and HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect

from harness import children, free_port, stop_process

from .conftest import MqttListener, Server, require, start_server

pytestmark = pytest.mark.e2e


def unique(prefix: str = "robot") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def next_frame(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    import asyncio

    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def frame_with(
    ws: ClientConnection, device: str, kind: str = "update", timeout: float = 5.0
) -> dict[str, Any]:
    """Read frames until one of ``kind`` mentions ``device``."""
    deadline = time.monotonic() + timeout
    while True:
        frame = await next_frame(ws, max(0.1, deadline - time.monotonic()))
        names = [d if isinstance(d, str) else d["deviceId"] for d in frame.get("devices", [])]
        if frame["type"] == kind and device in names:
            return frame


def test_reference_examples_work_verbatim(server: Server) -> None:
    server.publish(
        "sensors/robot1/coordinates", '{"x": 123.45, "y": 67.89, "timestamp": 1691234567}'
    )
    server.publish("orin/robot1/command", "tracking")
    server.publish("sensors/robot1/coordX", "123.45")
    server.publish("sensors/robot1/coordY", "67.89")
    server.publish("sensors/robot1/motorRPM", "1500")
    server.publish("test/hello", "Hello World!")
    assert server.get("/api/health").json()["status"] == "UP"
    state = server.wait_for(
        "/api/devices/robot1", lambda r: r.status_code == 200 and "motorRPM" in r.json()
    ).json()
    assert (state["x"], state["y"], state["motorRPM"]) == (123.45, 67.89, 1500)
    stats = server.wait_for("/api/stats", lambda r: r.json()["rawTopics"].get("test/hello")).json()
    assert stats["perDevice"]["robot1"] >= 4
    assert stats["rawTopics"]["orin/robot1/command"] >= 1
    coordinates = server.get("/api/coordinates").json()
    assert any(d["deviceId"] == "robot1" for d in coordinates)


def test_health_lists_every_component(server: Server) -> None:
    body = server.get("/api/health").json()
    assert body["status"] == "UP"
    assert {"broker", "ingest", "bus", "processor", "store", "hub", "commands"} <= set(
        body["components"]
    )
    assert "mosquitto pid" in body["components"]["broker"]["detail"]


async def test_websocket_snapshot_then_live_updates(server: Server) -> None:
    device = unique()
    server.publish(f"sensors/{device}/coordinates", '{"x": 1, "y": 2}')
    server.wait_for(f"/api/devices/{device}", lambda r: r.status_code == 200)
    async with connect(server.ws + "/coordinates") as ws:
        snapshot = await next_frame(ws)
        assert snapshot["type"] == "snapshot"
        assert any(d["deviceId"] == device for d in snapshot["devices"])
        seq = snapshot["seq"]
        sent = time.time()
        server.publish(f"sensors/{device}/coordinates", '{"x": 5.5, "y": 6.5, "heading": 45}')
        frames = []
        while True:
            frame = await next_frame(ws)
            frames.append(frame)
            if any(d["deviceId"] == device for d in frame["devices"]):
                break
        latency = time.time() - sent
        [mine] = [d for d in frames[-1]["devices"] if d["deviceId"] == device]
        assert (mine["x"], mine["y"], mine["heading"]) == (5.5, 6.5, 45)
        assert [f["seq"] for f in frames] == list(range(seq + 1, seq + 1 + len(frames)))
        assert latency < 5  # generous: timing is measured by the benchmark, not asserted here


async def test_a_burst_is_coalesced_and_nothing_is_lost(server: Server) -> None:
    device = unique()
    count = 500
    lines = [json.dumps({"x": float(i), "y": 0.0, "seq": i}) for i in range(count)]
    async with connect(server.ws + "/coordinates") as ws:
        snapshot = await next_frame(ws)
        server.publish_lines(f"sensors/{device}/coordinates", lines)
        seq, last, frames = snapshot["seq"], -1, 0
        while last != count - 1:
            frame = await next_frame(ws)
            assert frame["seq"] == seq + 1
            seq = frame["seq"]
            frames += 1
            for state in frame["devices"]:
                if state["deviceId"] == device:
                    assert state["seq"] > last  # never goes back
                    last = state["seq"]
    stats = server.get("/api/stats").json()
    assert stats["perDevice"][device] == count
    assert frames <= count


async def test_ping_is_answered_and_frames_are_not_compressed(server: Server) -> None:
    async with connect(server.ws + "/coordinates") as ws:
        # The client offers permessage-deflate; the server declines so a frame is encoded once.
        assert ws.protocol.extensions == []
        assert (await next_frame(ws))["type"] == "snapshot"
        await ws.send('{"type": "ping"}')
        while (frame := await next_frame(ws))["type"] != "pong":
            assert frame["type"] == "update"


async def test_resume_replays_missed_frames(server: Server) -> None:
    device = unique()
    async with connect(server.ws + "/coordinates") as ws:
        seen = (await next_frame(ws))["seq"]
    server.publish(f"sensors/{device}/coordinates", '{"x": 7, "y": 8}')
    server.wait_for(f"/api/devices/{device}", lambda r: r.status_code == 200)
    async with connect(f"{server.ws}/coordinates?since={seen}") as ws:
        frame = await frame_with(ws, device)
        assert frame["seq"] > seen
    async with connect(f"{server.ws}/coordinates?since=999999999") as ws:
        assert (await next_frame(ws))["type"] == "snapshot"


def test_commands_reach_the_device_over_mqtt(server: Server) -> None:
    device = unique()
    commands = ["tracking", "slam", "none", "goto 3.5 2.0"]
    with MqttListener(server.mqtt_port, f"orin/{device}/command") as device_side:
        for command in commands:
            response = httpx.post(f"{server.http}/api/commands/{device}", json={"command": command})
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["topic"] == f"orin/{device}/command" and body["id"]
        assert device_side.lines(len(commands)) == commands


@pytest.mark.parametrize(
    ("device", "body", "status", "reason"),
    [
        ("robot1", {"command": ""}, 422, "at least 1 character"),
        ("robot1", {"command": "x" * 257}, 422, "at most 256 characters"),
        ("robot1", {"command": "bad\u0007bell"}, 400, "not printable"),
        ("robot1", {"command": 5}, 422, "valid string"),
        ("robot1", {"cmd": "slam"}, 422, "Field required"),
        ("robot1", "not json", 422, ""),
        ("a+b", {"command": "slam"}, 400, "device id contains"),
        ("x" * 129, {"command": "slam"}, 400, "longer than 128"),
    ],
)
def test_bad_commands_get_a_4xx_with_a_reason(
    server: Server, device: str, body: object, status: int, reason: str
) -> None:
    url = f"{server.http}/api/commands/{httpx.URL(device)}"
    if isinstance(body, str):
        response = httpx.post(url, content=body, headers={"content-type": "application/json"})
    else:
        response = httpx.post(url, json=body)
    assert response.status_code == status, response.text
    assert reason in response.text
    assert response.json()["detail"]


def test_bad_mqtt_input_is_counted_kept_aside_and_does_not_stop_the_pipeline(
    server: Server,
) -> None:
    device = unique()
    before = server.get("/api/stats").json()["rejectedReasons"]
    server.publish(f"sensors/{device}/coordinates", "not json")
    server.publish(f"sensors/{device}/coordinates", '{"x": "north", "y": 1}')
    server.publish(f"sensors/{device}/coordinates", "[1, 2]")
    server.publish(f"sensors/{device}/coordinates", b"\x00\xff" * 40_000)
    server.publish(f"sensors/{device}/coordX", "NaN")
    server.publish(f"sensors/{device}/coordinates", '{"x": 1, "y": 2}')
    state = server.wait_for(f"/api/devices/{device}", lambda r: r.status_code == 200).json()
    assert (state["x"], state["y"]) == (1.0, 2.0)
    after = server.get("/api/stats").json()["rejectedReasons"]
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    assert grown["invalid_json"] >= 1
    assert grown["invalid_coordinate"] >= 2
    assert grown["not_an_object"] >= 1
    assert grown["payload_too_large"] >= 1
    letters = [d for d in server.get("/api/deadletters?limit=1000").json() if device in d["topic"]]
    assert {d["reason"] for d in letters} == {
        "invalid_json",
        "invalid_coordinate",
        "not_an_object",
        "payload_too_large",
    }
    big = next(d for d in letters if d["reason"] == "payload_too_large")
    assert big["size"] == 80_000 and "65536" in big["detail"]
    assert server.get("/api/deadletters?limit=0").status_code == 422
    assert server.get("/api/health").status_code == 200


def test_an_older_timestamp_does_not_overwrite_the_latest_state(server: Server) -> None:
    device = unique()
    server.publish(f"sensors/{device}/coordinates", '{"x": 10, "y": 10, "timestamp": 1700000010}')
    server.publish(f"sensors/{device}/coordinates", '{"x": 0, "y": 0, "timestamp": 1700000000000}')
    server.wait_for("/api/stats", lambda r: r.json()["perDevice"].get(device) == 2)
    state = server.get(f"/api/devices/{device}").json()
    assert (state["x"], state["timestamp"]) == (10.0, 1700000010.0)


def test_unknown_device_is_404(server: Server) -> None:
    response = server.get("/api/devices/nobody-here")
    assert response.status_code == 404
    assert "nobody-here" in response.json()["detail"]


def test_docs_openapi_and_cors(server: Server) -> None:
    assert server.get("/docs").status_code == 200
    redirect = server.get("/swagger-ui.html")
    assert redirect.status_code in (302, 307) and redirect.headers["location"] == "/docs"
    spec = server.get("/openapi.json").json()
    for path in (
        "/api/health",
        "/api/stats",
        "/api/coordinates",
        "/api/devices/{device_id}",
        "/api/commands/{device_id}",
        "/api/deadletters",
    ):
        assert path in spec["paths"]
    assert "CommandRequest" in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["CommandRequest"]["examples"]
    response = httpx.get(server.http + "/api/health", headers={"Origin": "http://example.com"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "iotstream_component_up" in server.get("/metrics").text


async def test_silent_devices_expire_with_a_removed_frame(tmp_path: Path) -> None:
    require("mosquitto")
    srv = start_server(tmp_path, "--device-ttl", "1")
    try:
        device = unique()
        async with connect(srv.ws + "/coordinates") as ws:
            await next_frame(ws)
            srv.publish(f"sensors/{device}/coordinates", '{"x": 1, "y": 1}')
            await frame_with(ws, device, "update")
            removed = await frame_with(ws, device, "removed", timeout=10)
            assert removed["devices"] == [device]
        assert srv.get(f"/api/devices/{device}").status_code == 404
    finally:
        stop_process(srv.process)


def test_a_dead_broker_is_reported_and_restarted(tmp_path: Path) -> None:
    require("mosquitto")
    srv = start_server(tmp_path)
    try:
        [broker_pid] = children(srv.process.pid)
        import os

        os.kill(broker_pid, signal.SIGKILL)
        down = srv.wait_for("/api/health", lambda r: r.status_code == 503, timeout=10).json()
        assert down["status"] == "DOWN"
        srv.wait_for("/api/health", lambda r: r.status_code == 200, timeout=30)
        assert children(srv.process.pid) != [broker_pid]
        assert "restarts: 1" in srv.get("/api/health").json()["components"]["broker"]["detail"]
        device = unique()
        srv.publish(f"sensors/{device}/coordinates", '{"x": 3, "y": 4}')
        srv.wait_for(f"/api/devices/{device}", lambda r: r.status_code == 200)
    finally:
        stop_process(srv.process)
    assert not Path(f"/proc/{broker_pid}").exists()


def test_an_external_broker_is_used_and_none_is_started(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
    broker = subprocess.Popen([require("mosquitto"), "-c", str(config)], stderr=subprocess.DEVNULL)
    try:
        srv = start_server(tmp_path, "--mqtt-url", f"mqtt://127.0.0.1:{port}")
        try:
            assert children(srv.process.pid) == []
            srv.mqtt_port = port
            srv.publish("sensors/ext/coordinates", '{"x": 1, "y": 2}')
            srv.wait_for("/api/devices/ext", lambda r: r.status_code == 200)
        finally:
            stop_process(srv.process)
    finally:
        stop_process(broker)


def test_the_in_process_amqtt_broker_works(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--broker", "amqtt")
    try:
        assert children(srv.process.pid) == []
        assert "amqtt" in srv.get("/api/health").json()["components"]["broker"]["detail"]
        srv.publish("sensors/am/coordinates", '{"x": 1, "y": 2}', qos=0)
        srv.wait_for("/api/devices/am", lambda r: r.status_code == 200)
    finally:
        stop_process(srv.process)


def test_the_server_stops_its_broker_on_sigterm(tmp_path: Path) -> None:
    require("mosquitto")
    srv = start_server(tmp_path)
    [broker_pid] = children(srv.process.pid)
    stop_process(srv.process)
    assert srv.process.returncode == 0, srv.log.read_text()
    assert not Path(f"/proc/{broker_pid}").exists()


def test_the_simulator_drives_robots_that_move(server: Server) -> None:
    prefix_devices = 3
    subprocess.run(
        [
            sys.executable,
            "-m",
            "iotstream",
            "simulate",
            "--devices",
            str(prefix_devices),
            "--rate",
            "10",
            "--duration",
            "1.5",
            "--seed",
            "7",
            "--mqtt-url",
            f"mqtt://127.0.0.1:{server.mqtt_port}",
        ],
        check=True,
        timeout=30,
        capture_output=True,
    )
    states = {d["deviceId"]: d for d in server.get("/api/coordinates").json()}
    for i in range(1, prefix_devices + 1):
        state = states[f"robot{i}"]
        assert {"x", "y", "heading", "speed", "timestamp"} <= set(state)
        assert 0 <= state["x"] <= 60 and 0 <= state["y"] <= 40
    counts = server.get("/api/stats").json()["perDevice"]
    assert all(counts[f"robot{i}"] >= 10 for i in range(1, prefix_devices + 1))


async def test_run_with_simulate_shows_moving_robots(tmp_path: Path) -> None:
    srv = start_server(tmp_path, "--simulate", "4", "--simulate-rate", "10")
    try:
        async with connect(srv.ws + "/coordinates") as ws:
            first = await frame_with(ws, "robot4")
            [a] = [d for d in first["devices"] if d["deviceId"] == "robot4"]
            while True:
                frame = await frame_with(ws, "robot4")
                [b] = [d for d in frame["devices"] if d["deviceId"] == "robot4"]
                if (b["x"], b["y"]) != (a["x"], a["y"]):
                    break
    finally:
        stop_process(srv.process)


def test_the_broker_does_not_outlive_a_killed_server(tmp_path: Path) -> None:
    require("mosquitto")
    srv = start_server(tmp_path)
    [broker_pid] = children(srv.process.pid)
    srv.process.kill()
    srv.process.wait()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{broker_pid}").exists() and time.monotonic() < deadline:
        state = Path(f"/proc/{broker_pid}/stat").read_text().split()[2]
        if state == "Z":  # exited; only the reaping is left
            break
        time.sleep(0.05)
    else:
        assert not Path(f"/proc/{broker_pid}").exists()
