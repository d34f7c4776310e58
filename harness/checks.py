"""The reference system's checks of a running iotstream, as ``make test-mqtt``,
``make test-websocket-pipeline`` (``make websocket-test``) and ``make test-redis-pipeline``
run them::

    python -m harness.checks test-mqtt
    python -m harness.checks test-websocket-pipeline
    python -m harness.checks test-redis-pipeline

Each ends with one ``PASS <check>: ...`` or ``FAIL <check>: ...`` line and exits 0 or 1.

- ``test-mqtt``: publishes the reference system's examples (a coordinates JSON, the coordX,
  coordY and motorRPM scalars, ``test/hello``, ``tracking`` on ``orin/robot1/command``) and
  finds them in ``GET /api/coordinates`` and ``GET /api/stats``.
- ``test-websocket-pipeline``: a WebSocket client on ``/coordinates`` receives a coordinate
  published over MQTT.
- ``test-redis-pipeline``: MQTT -> bridge -> Kafka -> processor -> Redis on the engines of
  ``make services``: a coordinate with fresh values is read back from Redis' latest state. A
  bridge or processor that does not answer on its health port is started for the check and
  stopped after it.

Where to, from the environment (the server's own setting where there is one), with the
reference system's defaults:

    IOTSTREAM_CHECK_HOST            127.0.0.1   host of the HTTP API, WebSocket and broker
    IOTSTREAM_HTTP_PORT             8081
    IOTSTREAM_MQTT_PORT             3123
    IOTSTREAM_MQTT_URL              mqtt://<host>:<mqtt port>; mqtt://user:password@host:port
                                    for a broker with accounts (docker-compose.yml's)
    IOTSTREAM_API_KEY               sent as X-API-Key, for a server that asks for credentials
    IOTSTREAM_KAFKA_BOOTSTRAP       127.0.0.1:$IOTSTREAM_KAFKA_PORT (9092)
    IOTSTREAM_REDIS_URL             redis://127.0.0.1:$IOTSTREAM_REDIS_PORT (6379)/0
    IOTSTREAM_REDIS_PREFIX          iotstream
    IOTSTREAM_CHECK_BRIDGE_PORT     9081, where a running bridge answers GET /api/health
    IOTSTREAM_CHECK_PROCESSOR_PORT  9082, where a running processor does
    IOTSTREAM_CHECK_TIMEOUT         30 seconds for what was published to arrive

Runs in the venv: paho-mqtt (the device extra) and websockets (uvicorn's), for the Redis
pipeline also the kafka and redis extras.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iotstream.config import MqttEndpoint

from .embedded import http_ok
from .processes import HOST, free_port, stop_process

DEVICE = "robot1"
# The reference system's examples (its README's mosquitto_pub lines).
REFERENCE_EXAMPLES: tuple[tuple[str, str], ...] = (
    (f"sensors/{DEVICE}/coordinates", '{"x": 123.45, "y": 67.89, "timestamp": 1691234567}'),
    (f"orin/{DEVICE}/command", "tracking"),
    (f"sensors/{DEVICE}/coordX", "123.45"),
    (f"sensors/{DEVICE}/coordY", "67.89"),
    (f"sensors/{DEVICE}/motorRPM", "1500"),
    ("test/hello", "Hello World!"),
)
EXPECTED_STATE = {"x": 123.45, "y": 67.89, "motorRPM": 1500}
RAW_TOPICS = ("test/hello", f"orin/{DEVICE}/command")
# A re-published coordinate may be in flight while a bridge or processor is still joining.
REPUBLISH_SECONDS = 3.0
POLL_SECONDS = 0.1


class CheckFailed(Exception):
    """Why a check failed: the rest of its FAIL line."""


@dataclass(frozen=True)
class Target:
    """Where the checks find the server and the engines."""

    host: str
    http_port: int
    mqtt_url: str
    api_key: str | None
    kafka: str
    redis_url: str
    redis_prefix: str
    bridge_port: int
    processor_port: int
    timeout: float

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Target:
        host = env.get("IOTSTREAM_CHECK_HOST", HOST)
        return cls(
            host=host,
            http_port=int(env.get("IOTSTREAM_HTTP_PORT", "8081")),
            mqtt_url=env.get("IOTSTREAM_MQTT_URL")
            or f"mqtt://{host}:{env.get('IOTSTREAM_MQTT_PORT', '3123')}",
            api_key=env.get("IOTSTREAM_API_KEY") or None,
            kafka=env.get("IOTSTREAM_KAFKA_BOOTSTRAP")
            or f"{HOST}:{env.get('IOTSTREAM_KAFKA_PORT', '9092')}",
            redis_url=env.get("IOTSTREAM_REDIS_URL")
            or f"redis://{HOST}:{env.get('IOTSTREAM_REDIS_PORT', '6379')}/0",
            redis_prefix=env.get("IOTSTREAM_REDIS_PREFIX", "iotstream"),
            bridge_port=int(env.get("IOTSTREAM_CHECK_BRIDGE_PORT", "9081")),
            processor_port=int(env.get("IOTSTREAM_CHECK_PROCESSOR_PORT", "9082")),
            timeout=float(env.get("IOTSTREAM_CHECK_TIMEOUT", "30")),
        )

    @property
    def mqtt(self) -> MqttEndpoint:
        return MqttEndpoint.parse(self.mqtt_url)

    @property
    def http(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key} if self.api_key else {}


# --- the pieces: HTTP, MQTT, waiting ---------------------------------------------------------


def get_json(target: Target, path: str) -> Any:
    """``GET path`` of the API as JSON; a server that is not there fails the check."""
    request = urllib.request.Request(target.http + path, headers=target.headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return json.load(reply)
    except urllib.error.HTTPError as exc:
        raise CheckFailed(f"GET {target.http}{path} answered {exc.code}") from exc
    except OSError as exc:
        raise CheckFailed(
            f"no iotstream answers at {target.http} ({exc}); start it with make setup"
        ) from exc


def publish(endpoint: MqttEndpoint, messages: Sequence[tuple[str, str]]) -> None:
    """Publish ``messages`` (topic, payload) in order with QoS 1, as a device would."""
    from paho.mqtt.client import Client, ConnectFlags
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.reasoncodes import ReasonCode

    where = f"mqtt://{endpoint.host}:{endpoint.port}"
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"check-{random.getrandbits(32):x}")
    connack: list[ReasonCode] = []
    answered = threading.Event()

    def on_connect(
        client: Client, userdata: Any, flags: ConnectFlags, code: ReasonCode, props: Any
    ) -> None:
        connack.append(code)
        answered.set()

    client.on_connect = on_connect
    if endpoint.username:
        client.username_pw_set(endpoint.username, endpoint.password)
    if endpoint.tls:
        client.tls_set()
    try:
        client.connect(endpoint.host, endpoint.port, keepalive=30)
    except OSError as exc:
        raise CheckFailed(f"no MQTT broker at {where} ({exc})") from exc
    client.loop_start()
    try:
        if not answered.wait(10):
            raise CheckFailed(f"the MQTT broker at {where} did not answer CONNECT")
        if connack[0].is_failure:
            raise CheckFailed(f"the MQTT broker at {where} refused the connection: {connack[0]}")
        for topic, payload in messages:
            info = client.publish(topic, payload, qos=1)
            info.wait_for_publish(10)
            if not info.is_published():
                raise CheckFailed(f"the MQTT broker at {where} did not acknowledge {topic}")
    finally:
        client.disconnect()
        client.loop_stop()


def fresh_coordinate() -> tuple[float, float, str]:
    """x, y never sent before (to tell this check's coordinate from any other) and its JSON."""
    x, y = round(random.uniform(1, 1000), 3), round(random.uniform(1, 1000), 3)
    return x, y, json.dumps({"x": x, "y": y, "timestamp": time.time()})


def wait_until(
    found: Callable[[], Any], timeout: float, republish: Callable[[], None] | None = None
) -> Any:
    """Poll ``found()`` until it is truthy and return it; ``republish()`` every few seconds
    meanwhile. None when ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    published = time.monotonic()
    while time.monotonic() < deadline:
        result = found()
        if result:
            return result
        if republish is not None and time.monotonic() - published > REPUBLISH_SECONDS:
            republish()
            published = time.monotonic()
        time.sleep(POLL_SECONDS)
    return None


# --- the checks -----------------------------------------------------------------------------


def check_mqtt(target: Target) -> str:
    """The reference system's examples, found in the REST API."""
    before = get_json(target, "/api/stats")
    publish(target.mqtt, REFERENCE_EXAMPLES)

    def device() -> dict[str, Any] | None:
        states = get_json(target, "/api/coordinates")
        return next((s for s in states if s.get("deviceId") == DEVICE), None)

    def missing() -> list[str]:
        stats = get_json(target, "/api/stats")
        state = device() or {}
        gaps = [f"{k}={state.get(k)}" for k, v in EXPECTED_STATE.items() if state.get(k) != v]
        # Three scalar readings at least: the coordinates JSON repeats an old device timestamp,
        # so from the second run on it is a replay, which is not counted again.
        readings = stats["perDevice"].get(DEVICE, 0) - before["perDevice"].get(DEVICE, 0)
        if readings < 3:
            gaps.append(f"{readings} new readings of {DEVICE} (expected 3 or more)")
        for topic in RAW_TOPICS:
            if stats["rawTopics"].get(topic, 0) <= before["rawTopics"].get(topic, 0):
                gaps.append(f"no new {topic} message")
        return gaps

    if wait_until(lambda: not missing(), target.timeout) is None:
        raise CheckFailed(f"after {target.timeout:.0f} s: {'; '.join(missing())}")
    after = get_json(target, "/api/stats")
    return (
        f"{DEVICE} at x=123.45 y=67.89 motorRPM=1500 in GET /api/coordinates; GET /api/stats "
        f"counted the readings, {' and '.join(RAW_TOPICS)} (messages "
        f"{before['messages']} -> {after['messages']})"
    )


def check_websocket_pipeline(target: Target) -> str:
    """A coordinate published over MQTT, received by a WebSocket client."""
    from websockets.exceptions import WebSocketException
    from websockets.sync.client import connect

    url = f"ws://{target.host}:{target.http_port}/coordinates"
    x, y, payload = fresh_coordinate()
    try:
        with connect(url, additional_headers=target.headers, open_timeout=10) as ws:
            first = json.loads(ws.recv(timeout=10))
            if first.get("type") != "snapshot":
                raise CheckFailed(f"{url} began with {first.get('type')!r}, not a snapshot")
            published = time.monotonic()
            publish(target.mqtt, [(f"sensors/{DEVICE}/coordinates", payload)])
            deadline = published + target.timeout
            while time.monotonic() < deadline:
                try:
                    frame = json.loads(ws.recv(timeout=min(REPUBLISH_SECONDS, target.timeout)))
                except TimeoutError:
                    publish(target.mqtt, [(f"sensors/{DEVICE}/coordinates", payload)])
                    continue
                states = [s for s in frame.get("devices") or [] if isinstance(s, dict)]
                if any((s.get("deviceId"), s.get("x")) == (DEVICE, x) for s in states):
                    elapsed = (time.monotonic() - published) * 1000
                    return (
                        f"{url} received {DEVICE} at ({x}, {y}) ({frame['type']} frame) "
                        f"{elapsed:.0f} ms after it was published to {target.mqtt.host}:"
                        f"{target.mqtt.port}"
                    )
    except (OSError, WebSocketException) as exc:
        raise CheckFailed(
            f"no WebSocket at {url} ({exc}); start the server with make setup"
        ) from exc
    raise CheckFailed(f"{url} never received {DEVICE} at ({x}, {y}) in {target.timeout:.0f} s")


def _health_ok(port: int) -> bool:
    return http_ok(f"http://{HOST}:{port}/api/health")


@contextmanager
def _role(name: str, argv: list[str], workdir: Path, timeout: float) -> Iterator[None]:
    """``iotstream <name>`` on a free health port until the block ends."""
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "iotstream", name, *argv, "--metrics-port", str(port),
             "--data-dir", str(workdir / name)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        if wait_until(lambda: process.poll() is not None or _health_ok(port), timeout) is None:
            raise CheckFailed(f"the {name} started for the check was not healthy in time")
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:]
            raise CheckFailed(f"the {name} started for the check exited: {' '.join(tail)}")
        yield
    finally:
        stop_process(process)


def check_redis_pipeline(target: Target) -> str:
    """MQTT -> bridge -> Kafka -> processor -> Redis, read back from Redis."""
    try:
        import redis
    except ImportError as exc:
        raise CheckFailed("redis-py is missing: pip install -e '.[kafka,redis]'") from exc
    kafka_host, _, kafka_port = target.kafka.split(",")[0].rpartition(":")
    try:
        socket.create_connection((kafka_host, int(kafka_port)), timeout=5).close()
    except OSError as exc:
        raise CheckFailed(
            f"no Kafka at {target.kafka} ({exc}); start the engines with make services"
        ) from exc
    client = redis.Redis.from_url(target.redis_url, socket_timeout=5)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise CheckFailed(
            f"no Redis at {target.redis_url} ({exc}); start the engines with make services"
        ) from exc
    roles = {
        "bridge": (
            target.bridge_port,
            ["--mqtt-url", target.mqtt_url, "--kafka-bootstrap", target.kafka],
        ),
        "processor": (
            target.processor_port,
            ["--kafka-bootstrap", target.kafka, "--redis-url", target.redis_url],
        ),
    }
    started = [name for name, (port, _) in roles.items() if not _health_ok(port)]
    key = f"{target.redis_prefix}:state"
    with tempfile.TemporaryDirectory(prefix="iotstream-check-") as tmp, ExitStack() as stack:
        for name in started:
            stack.enter_context(_role(name, roles[name][1], Path(tmp), 60))
        x, y, payload = fresh_coordinate()

        def in_redis() -> bool:
            state = client.hget(key, DEVICE)  # a synchronous client: bytes or None
            return isinstance(state, bytes) and json.loads(state).get("x") == x

        def send() -> None:
            publish(target.mqtt, [(f"sensors/{DEVICE}/coordinates", payload)])

        began = time.monotonic()
        send()
        if not wait_until(in_redis, target.timeout, republish=send):
            raise CheckFailed(
                f"{DEVICE} at ({x}, {y}) never reached Redis {key} in {target.timeout:.0f} s"
            )
        elapsed = time.monotonic() - began
    how = f"{' and '.join(started)} started for the check" if started else "running roles"
    return (
        f"{DEVICE} at ({x}, {y}) went MQTT {target.mqtt.host}:{target.mqtt.port} -> Kafka "
        f"{target.kafka} -> Redis {key} in {elapsed:.1f} s ({how})"
    )


CHECKS: dict[str, Callable[[Target], str]] = {
    "test-mqtt": check_mqtt,
    "test-websocket-pipeline": check_websocket_pipeline,
    "test-redis-pipeline": check_redis_pipeline,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.checks",
        description="Check a running iotstream as the reference system's make targets do.",
    )
    parser.add_argument("check", choices=CHECKS)
    args = parser.parse_args(argv)
    try:
        detail = CHECKS[args.check](Target.from_env())
    except CheckFailed as exc:
        print(f"FAIL {args.check}: {exc}")
        return 1
    print(f"PASS {args.check}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
