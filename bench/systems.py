"""The systems under test, each started on free loopback ports and stopped by PID.

- ``EmbeddedServer``: ``iotstream run`` with its managed Mosquitto child.
- ``DistributedServer``: ``iotstream bridge``, ``processor`` and ``api`` on ``Engines``
  (Mosquitto, Redis and Kafka from ``harness.engines``, as the tests start them, shared by the
  scenarios; each scenario gets its own Kafka topic, consumer group and Redis prefix).

Before a system is handed to a scenario, a probe message has gone through its whole pipeline.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import orjson

from harness import (
    HarnessError,
    Service,
    children,
    command_name,
    find_java,
    find_program,
    free_port,
    free_ports,
    start_kafka,
    start_mosquitto,
    start_redis,
    stop_process,
)

from .errors import BenchError
from .generator import HOST, publish_once
from .workers import StopOnExit

START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
"""A server stopping writes what its archiver still holds to the lake first."""
PIPELINE_TIMEOUT = 90.0


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return orjson.loads(response.read())


def _answers(url: str) -> bool:
    try:
        get_json(url, timeout=2)
        return True
    except (urllib.error.URLError, OSError):
        return False


class System(StopOnExit, ABC):
    """A running iotstream: where to publish, where to watch, which processes it is."""

    mode: str

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.http_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    @abstractmethod
    def mqtt_port(self) -> int: ...

    @abstractmethod
    def pids(self) -> dict[str, int]:
        """The processes whose CPU and memory count as the server's, by name."""

    @property
    def http(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.http_port}/coordinates"

    def stats(self) -> Any:
        return get_json(self.http + "/api/stats")

    def states(self) -> list[dict[str, Any]]:
        states: list[dict[str, Any]] = get_json(self.http + "/api/coordinates", timeout=30)
        return states

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "iotstream", *argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.workdir / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait_healthy(self, name: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.http + "/api/health"):
            process = self.processes[name]
            if process.poll() is not None:
                raise BenchError(f"{name} exited with {process.returncode}:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise BenchError(f"{name} not healthy after {START_TIMEOUT:.0f} s")
            time.sleep(0.1)

    def wait_pipeline(self, prefix: str) -> None:
        """Publish a probe until it shows up in the API: every stage is up and subscribed."""
        device = f"{prefix}-probe"
        deadline = time.monotonic() + PIPELINE_TIMEOUT
        while time.monotonic() < deadline:
            asyncio.run(
                publish_once(self.mqtt_port, f"sensors/{device}/coordinates", b'{"x":0,"y":0}')
            )
            until = time.monotonic() + 1.0
            while time.monotonic() < until:
                try:
                    get_json(f"{self.http}/api/devices/{device}", timeout=2)
                    return
                except (urllib.error.URLError, OSError):
                    time.sleep(0.05)
        raise BenchError(f"a probe message did not pass the {self.mode} pipeline in time")

    def stop(self) -> None:
        for process in reversed(self.processes.values()):
            stop_process(process, STOP_TIMEOUT)


class EmbeddedServer(System):
    """``iotstream run`` with a managed Mosquitto and default settings (the archiver on, its
    lake under ``<workdir>/data/lake``), on free ports; ``extra`` options are added."""

    mode = "embedded"

    def __init__(self, workdir: Path, extra: list[str] | None = None) -> None:
        super().__init__(workdir)
        self._mqtt_port = free_port()
        self.extra = extra or []

    @property
    def mqtt_port(self) -> int:
        return self._mqtt_port

    def start(self, prefix: str) -> None:
        try:
            self._spawn(
                "server",
                [
                    "run",
                    "--http-port", str(self.http_port),
                    "--mqtt-port", str(self.mqtt_port),
                    "--data-dir", str(self.workdir / "data"),
                    "--broker", "mosquitto",
                    "--log-level", "warning",
                    *self.extra,
                ],
            )  # fmt: skip
            self._wait_healthy("server")
            self.wait_pipeline(prefix)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> dict[str, int]:
        server = self.processes["server"].pid
        brokers = [p for p in children(server) if command_name(p) == "mosquitto"]
        if not brokers:
            raise BenchError("the server runs no mosquitto child")
        return {"server": server, "mosquitto": brokers[0]}


def distributed_unavailable() -> str | None:
    """Why the distributed mode cannot run here, or ``None`` when it can."""
    try:
        find_java()
        find_program("mvn", "apt-get install -y maven")
        find_program("redis-server", "apt-get install -y redis-server")
        find_program("mosquitto", "apt-get install -y mosquitto")
    except HarnessError as exc:  # it names the missing program
        return str(exc)
    return None


class Engines:
    """Mosquitto, Redis and Kafka on free loopback ports, for every distributed scenario.

    ``persistent``: Mosquitto and Redis keep what they hold on disk, as a deployment runs them,
    so that a ``restart()`` of either loses nothing (Kafka keeps its log on disk either way)."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.workdir = workdir
        self.persistent = persistent
        self.started: dict[str, Service] = {}

    def __enter__(self) -> Self:
        keep = self.persistent
        try:
            self.started["mosquitto"] = start_mosquitto(
                free_port(), self.workdir / "mosquitto", persistent=keep
            )
            self.started["redis"] = start_redis(
                free_port(), self.workdir / "redis", persistent=keep
            )
            port, controller = free_ports(2)
            self.started["kafka"] = start_kafka(port, controller, self.workdir / "kafka")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for service in reversed(self.started.values()):
            service.stop()

    def pids(self) -> dict[str, int]:
        return {name: service.pid for name, service in self.started.items()}


class DistributedServer(System):
    """One bridge, one processor, one archiver (its lake under ``<workdir>/data/lake``) and
    one api on the engines, with default settings."""

    mode = "distributed"

    def __init__(
        self,
        workdir: Path,
        engines: Engines,
        log_level: str = "warning",
        *,
        instance_ids: bool = False,
    ) -> None:
        """``instance_ids``: the processor and the archiver get a ``--kafka-instance-id``, as
        processes a supervisor restarts do, so a replacement takes their partitions at once."""
        super().__init__(workdir)
        self.engines = engines
        self.log_level = log_level
        self.instance_ids = instance_ids
        self.argv: dict[str, list[str]] = {}
        """How each role was started, to start a replacement the same way."""
        self.health_urls: dict[str, str] = {}
        self.kafka_topic = ""
        self.kafka_group = ""
        """The processors' consumer group."""

    @property
    def mqtt_port(self) -> int:
        return self.engines.started["mosquitto"].port

    def _spawn_role(self, argv: list[str], health_port: int) -> None:
        name = argv[0]
        self.argv[name] = argv
        self.health_urls[name] = f"http://{HOST}:{health_port}/api/health"
        self._spawn(name, argv)

    def kill(self, name: str) -> None:
        """SIGKILL one role's process, as a crash would."""
        process = self.processes[name]
        process.kill()
        process.wait()

    def replace(self, name: str) -> None:
        """Start a new process of a role that exited, with the same options and ports, as a
        supervisor does; returns at once."""
        if self.processes[name].poll() is None:
            raise BenchError(f"{name} still runs")
        self._spawn(name, self.argv[name])

    def healthy(self, name: str) -> bool:
        """Whether the role answers ``GET /api/health`` with 200."""
        try:
            with urllib.request.urlopen(self.health_urls[name], timeout=2):
                return True
        except (urllib.error.URLError, OSError):  # a 503 is an HTTPError, a URLError
            return False

    def start(self, prefix: str) -> None:
        kafka = self.engines.started["kafka"].address
        redis = f"redis://{self.engines.started['redis'].address}/0"
        mqtt = f"mqtt://{HOST}:{self.mqtt_port}"
        self.kafka_topic = self.kafka_group = f"bench-{prefix}"
        topic = ["--kafka-bootstrap", kafka, "--kafka-topic", self.kafka_topic]
        store = ["--redis-url", redis, "--redis-prefix", f"bench-{prefix}"]
        common = ["--data-dir", str(self.workdir / "data"), "--log-level", self.log_level]
        bridge, processor, archiver = free_ports(3)
        members = {
            role: ["--kafka-instance-id", f"{role}-{prefix}"] if self.instance_ids else []
            for role in ("processor", "archiver")
        }
        try:
            self._spawn_role(
                [
                    "bridge",
                    "--mqtt-url",
                    mqtt,
                    *topic,
                    "--mqtt-client-id",
                    f"bridge-{prefix}",
                    "--metrics-port",
                    str(bridge),
                    *common,
                ],
                bridge,
            )
            self._spawn_role(
                [
                    "processor",
                    *topic,
                    *store,
                    "--kafka-group",
                    self.kafka_group,
                    *members["processor"],
                    "--metrics-port",
                    str(processor),
                    *common,
                ],
                processor,
            )
            self._spawn_role(
                [
                    "archiver",
                    *topic,
                    *members["archiver"],
                    "--metrics-port",
                    str(archiver),
                    *common,
                ],
                archiver,
            )
            self._spawn_role(
                ["api", *store, "--mqtt-url", mqtt, "--http-port", str(self.http_port), *common],
                self.http_port,
            )
            self._wait_healthy("api")
            self.wait_pipeline(prefix)
        except BaseException:
            self.stop()
            raise

    def pids(self) -> dict[str, int]:
        own = {name: process.pid for name, process in self.processes.items()}
        return {**own, **self.engines.pids()}
