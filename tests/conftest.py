"""Fixtures: free ports, real Mosquitto clients, and ``iotstream run`` as a subprocess."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser
    from pyspark.sql import SparkSession

# The engines and processes, started and stopped as the bench and `make services` do.
import harness
from harness import free_port, stop_process


def require(binary: str) -> str:
    """The path of ``binary``; a missing engine fails the test (``make test`` installs it)."""
    path = shutil.which(binary)
    if path is None:
        pytest.fail(f"{binary} is not installed; `make test` installs it")
    return path


PROBE = "__iotstream_probe__"


class MqttListener:
    """A real ``mosquitto_sub`` on one topic, live before the test goes on: probes are
    published until it prints one, so no sleep has to guess when the subscription is in."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self.process = subprocess.Popen(
            [require("mosquitto_sub"), "-h", "127.0.0.1", "-p", str(port), "-t", topic, "-q", "1"],
            stdout=subprocess.PIPE,
        )
        self._buffer = b""
        deadline = time.monotonic() + 20
        while self._read_line(0.2) != PROBE:
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"mosquitto_sub on {topic} never received a probe")
            subprocess.run(
                [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(port), "-t", topic,
                 "-q", "1", "-m", PROBE],
                check=True, timeout=10,
            )  # fmt: skip

    def _read_line(self, timeout: float) -> str | None:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def lines(self, count: int, timeout: float = 20) -> list[str]:
        """The next ``count`` messages, probes left out."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            line = self._read_line(deadline - time.monotonic())
            if line is not None and line != PROBE:
                got.append(line)
        return got

    def __enter__(self) -> MqttListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        stop_process(self.process)
        assert self.process.stdout is not None
        self.process.stdout.close()


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http: str
    ws: str
    mqtt_port: int
    data_dir: Path
    log: Path

    def publish(self, topic: str, message: str | bytes, qos: int = 1) -> None:
        """Publish one message with the real ``mosquitto_pub``."""
        payload = message if isinstance(message, bytes) else message.encode()
        self._mosquitto_pub(topic, qos, ["-s"], payload)

    def publish_lines(self, topic: str, lines: list[str], qos: int = 1) -> None:
        """Publish one message per line over one connection (``mosquitto_pub -l``)."""
        self._mosquitto_pub(topic, qos, ["-l"], "\n".join(lines).encode() + b"\n")

    def _mosquitto_pub(self, topic: str, qos: int, mode: list[str], stdin: bytes) -> None:
        args = [
            require("mosquitto_pub"),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.mqtt_port),
            "-t",
            topic,
            "-q",
            str(qos),
            *mode,
        ]
        subprocess.run(args, input=stdin, check=True, timeout=30)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.http + path, timeout=10)

    def wait_for(self, path: str, predicate: object, timeout: float = 10) -> httpx.Response:
        """Poll ``GET path`` until ``predicate(response)`` holds."""
        deadline = time.monotonic() + timeout
        while True:
            response = self.get(path)
            if predicate(response):  # type: ignore[operator]
                return response
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"GET {path} never matched; last: {response.status_code} {response.text[:500]}"
                )
            time.sleep(0.05)


def start_server(tmp: Path, *extra: str, env: dict[str, str] | None = None) -> Server:
    http_port, mqtt_port = free_port(), free_port()
    data_dir = tmp / "data"
    log = tmp / "server.log"
    args = [
        sys.executable,
        "-m",
        "iotstream",
        "run",
        "--http-port",
        str(http_port),
        "--mqtt-port",
        str(mqtt_port),
        "--data-dir",
        str(data_dir),
        *extra,
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    server = Server(
        process,
        f"http://127.0.0.1:{http_port}",
        f"ws://127.0.0.1:{http_port}",
        mqtt_port,
        data_dir,
        log,
    )
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise AssertionError(f"iotstream run exited {process.returncode}:\n{log.read_text()}")
        try:
            if server.get("/api/health").status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_process(process)
            raise AssertionError(f"iotstream run did not become healthy:\n{log.read_text()}")
        time.sleep(0.1)


def _started(start: Callable[[], harness.Service]) -> Iterator[harness.Service]:
    """A service started on fresh ports, tried again when another process took a port first
    (free ports are only free until someone binds them)."""
    for attempt in range(3):
        try:
            service = start()
        except harness.HarnessError:
            if attempt == 2:
                raise
            continue
        with service:
            yield service
        return


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Service]:
    """A real single-node Apache Kafka (KRaft) on free loopback ports, for the whole session."""
    require("java")
    require("mvn")
    yield from _started(
        lambda: harness.start_kafka(*harness.free_ports(2), tmp_path_factory.mktemp("kafka"))
    )


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Service]:
    """A real redis-server on a free loopback port, for the whole session."""
    require("redis-server")
    yield from _started(
        lambda: harness.start_redis(harness.free_port(), tmp_path_factory.mktemp("redis"))
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[harness.Service]:
    """A real S3 API server (s3proxy over a directory, jars from Maven Central) on a free
    loopback port, for the whole session; tests make a bucket or a prefix of their own."""
    require("java")
    require("mvn")
    yield from _started(
        lambda: harness.start_s3(harness.free_port(), tmp_path_factory.mktemp("s3"))
    )


@pytest.fixture(scope="session")
def spark_jars() -> Path:
    """The directory of the jars a Spark session needs beyond pyspark's (Delta Lake, the Kafka
    source, S3A), fetched by Maven once into the cache; ``IOTSTREAM_SPARK_JARS`` for a
    subprocess."""
    require("java")
    require("mvn")
    from harness.engines import ensure_spark_jars

    return ensure_spark_jars()


@pytest.fixture(scope="session")
def spark(spark_jars: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkSession]:
    """One local SparkSession (Delta Lake, the Kafka source) for the whole run, stopped with its
    JVM at the end. Tests share it: give each its own table paths and temporary view names."""
    from iotstream.spark.session import (
        SERIAL_GC,
        SparkSettings,
        jar_files,
        spark_session,
        stop_session,
    )

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    settings = SparkSettings(
        jars=jar_files([str(spark_jars)]),
        conf={
            "spark.sql.warehouse.dir": str(warehouse),
            # A session for the whole run: unlike a short one (FAST_JVM_OPTIONS), it gains
            # from the optimising compiler.
            "spark.driver.extraJavaOptions": SERIAL_GC,
        },
    )
    session = spark_session(settings)
    yield session
    stop_session(session)


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's headless Chromium, one per test module; each test opens a context of its own.
    Not one per run: Playwright's sync API keeps its own event loop running while it is open,
    and the asyncio tests of later modules then cannot start theirs."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is not installed; `make test` installs it (Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One embedded server (with Mosquitto) shared by a test module."""
    require("mosquitto")
    srv = start_server(tmp_path_factory.mktemp("server"), "--ws-interval", "0.02")
    yield srv
    stop_process(srv.process)
