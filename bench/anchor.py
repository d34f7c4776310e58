"""The bridge alone, beside the reference system's: the bench's generator → Mosquitto → a
bridge → Kafka, for ``iotstream bridge`` and for Telegraf (its ``mqtt_consumer`` input and
``kafka`` output, the bridge of the reference system) at the same rates, one after the other
on the same Mosquitto and Kafka, after ``WARM`` seconds of each at 10k msg/s that are not
reported (Kafka's JIT compiler works for a while on each client's requests).

Per bridge and rate: the bridge's CPU (percent of one core) and peak RSS over the window,
Mosquitto's and Kafka's CPU, the latency from the generator's ``sent`` to Kafka's append
time (the topics are made with ``LogAppendTime``), how long after the generator's last write
the topic last grew, and the messages on the topic against those sent. ``iotstream bridge``
packs a poll's readings into a record per partition, so its records are decoded and their
readings counted; Telegraf writes one record per message. The generator publishes at QoS 0,
so both bridges get every message at QoS 0 whatever they subscribe with.

Telegraf is built once, with only those plugins (``TELEGRAF_TAGS``), by ``go install`` from
the Go module proxy into the cache beside Kafka's jars (about a minute). Its agent has the
reference system's timing: input every 100 ms, output flushed at least every 200 ms.

    python -m bench.anchor [--rates 1000 10000 ...] [--bridges iotstream telegraf]
                           [--window 10] [--warm 30] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import numpy as np
import orjson

from harness import (
    HarnessError,
    find_program,
    free_ports,
    start_kafka,
    start_mosquitto,
    stop_process,
)
from iotstream.bus.kafka import default_partitions
from iotstream.bus.kafka_codec import decode_all
from iotstream.models import Reading

from .errors import BenchError
from .generator import HOST, Generator, Load, publish_once
from .latency import Histogram
from .machine import describe, source
from .resources import ResourceSampler
from .scenarios import _sleep_until
from .systems import _answers

TELEGRAF_MODULE = "github.com/influxdata/telegraf/cmd/telegraf"
TELEGRAF_VERSION = "v1.37.2"
TELEGRAF_TAGS = "custom,inputs.mqtt_consumer,outputs.kafka,parsers.json,serializers.json"
RATES = (1_000, 10_000, 30_000, 60_000)
DEVICES = 1_000
WARMUP = 2.0
WINDOW = 10.0
WARM = 30.0
QUIET = 1.0
"""The topic is drained once its end offsets have not moved for this long."""
POLL = 0.02
"""How often the topic's end offsets are read while a bridge runs (seconds)."""
DRAIN_TIMEOUT = 60.0
READY_TIMEOUT = 60.0
BRIDGES = ("iotstream", "telegraf")


def telegraf_binary() -> Path:
    default_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iotstream"
    root = Path(os.environ.get("IOTSTREAM_KAFKA_CACHE") or default_root)
    return root / f"telegraf-{TELEGRAF_VERSION}" / "telegraf"


def ensure_telegraf() -> Path:
    """Telegraf with the two plugins, built the first time."""
    binary = telegraf_binary()
    if binary.is_file():
        return binary
    go = find_program("go", "install Go (https://go.dev/doc/install)")
    with tempfile.TemporaryDirectory() as gobin:
        env = {**os.environ, "GOBIN": gobin, "GOFLAGS": "-buildvcs=false"}
        argv = [go, "install", "-tags", TELEGRAF_TAGS, f"{TELEGRAF_MODULE}@{TELEGRAF_VERSION}"]
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BenchError(f"building Telegraf failed:\n{result.stderr[-2000:]}")
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(Path(gobin) / "telegraf"), binary)
    return binary


def telegraf_config(mqtt_port: int, kafka: str, topic: str, client_id: str) -> str:
    """An agent subscribing to the robots' coordinates and writing each message, parsed from
    JSON, to ``topic`` as a JSON record."""
    return f"""[agent]
  interval = "100ms"
  flush_interval = "200ms"
  omit_hostname = true

[[inputs.mqtt_consumer]]
  servers = ["tcp://{HOST}:{mqtt_port}"]
  topics = ["sensors/+/coordinates"]
  qos = 1
  client_id = "{client_id}"
  data_format = "json"

[[outputs.kafka]]
  brokers = ["{kafka}"]
  topic = "{topic}"
  data_format = "json"
"""


SentTimes = Callable[[bytes | None], list[float | None]]
"""The generator's ``sent`` of each message one record carries (``None`` for a probe)."""


def iotstream_sent(value: bytes | None) -> list[float | None]:
    """``iotstream bridge``'s records carry a reading each, or several in columns."""
    return [e.fields.get("sent") for e in decode_all(value) if isinstance(e, Reading)]


def telegraf_sent(value: bytes | None) -> list[float | None]:
    """Telegraf's JSON serializer writes ``{"fields": {...}, "name": ..., "tags": {...},
    "timestamp": ...}``, one metric per record."""
    fields = orjson.loads(value or b"{}").get("fields", {})
    return [fields.get("sent")]


class Topic:
    """One Kafka topic of the run: created with the partitions iotstream gives one broker and
    the broker's append time as each record's timestamp, watched by its end offsets, and read
    by a consumer that counts the messages on it and their latencies (from the generator's
    ``sent`` to Kafka's append)."""

    def __init__(self, bootstrap: str, name: str, *, partitions: int | None = None) -> None:
        """Creates the topic, unless its ``partitions`` are given (it exists)."""
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

        self.name = name
        if partitions is None:
            partitions = default_partitions(1)
            admin = AdminClient({"bootstrap.servers": bootstrap})
            config = {"message.timestamp.type": "LogAppendTime"}
            admin.create_topics([NewTopic(name, partitions, 1, config=config)])[name].result(30)
        self.partitions = partitions
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"anchor-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
            }
        )
        self.counted = 0
        self.latency = Histogram()
        self._next = [0] * partitions

    def _ends(self) -> list[int]:
        from confluent_kafka import KafkaException, TopicPartition

        deadline = time.monotonic() + 30
        while True:
            try:
                return [
                    self.consumer.get_watermark_offsets(TopicPartition(self.name, p), timeout=10)[1]
                    for p in range(self.partitions)
                ]
            except KafkaException:  # a topic just created may have no leader yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def end_offsets(self) -> int:
        """How far the topic's partitions reach, summed (records, and any markers)."""
        return sum(self._ends())

    def count(self, sent_times: SentTimes, since: float = float("inf")) -> int:
        """Reads what was added since the last call; the messages on the topic so far. The
        latencies of those sent at ``since`` or later go to ``latency``.

        The consumer is assigned only meanwhile: one left assigned fetches in the background
        whenever a produce request arrives, which was more of Kafka's CPU than the bridge."""
        from confluent_kafka import TopicPartition

        ends = self._ends()
        places = [TopicPartition(self.name, p, at) for p, at in enumerate(self._next)]
        self.consumer.assign(places)
        latencies: list[float] = []
        deadline = time.monotonic() + 60
        while any(at < end for at, end in zip(self._next, ends, strict=True)):
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name}: read to {self._next} of {ends}")
            for record in self.consumer.consume(10_000, timeout=0.5):
                if record.error():
                    raise BenchError(f"{self.name}: {record.error()}")
                sent = sent_times(record.value())
                self.counted += len(sent)
                appended = record.timestamp()[1] / 1000
                latencies.extend(appended - t for t in sent if t is not None and t >= since)
            # Past the records read, and any transaction markers after them.
            for place in self.consumer.position(places):
                self._next[place.partition] = max(self._next[place.partition], place.offset)
        self.consumer.unassign()
        self.latency.add(np.array(latencies, dtype=np.float64))
        return self.counted

    def close(self) -> None:
        self.consumer.close()


class Run:
    """Mosquitto and Kafka on free loopback ports, and the bridges started on them in turn."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        mqtt, kafka, controller = free_ports(3)
        self.mosquitto = start_mosquitto(mqtt, workdir / "mosquitto")
        try:
            self.kafka = start_kafka(kafka, controller, workdir / "kafka")
        except BaseException:
            self.mosquitto.stop()
            raise

    def close(self) -> None:
        self.kafka.stop()
        self.mosquitto.stop()

    def start_bridge(self, bridge: str, topic: str) -> subprocess.Popen[bytes]:
        mqtt, kafka = self.mosquitto.port, self.kafka.address
        workdir = self.workdir / topic
        workdir.mkdir(parents=True)
        if bridge == "telegraf":
            config = workdir / "telegraf.conf"
            config.write_text(telegraf_config(mqtt, kafka, topic, topic))
            argv = [str(ensure_telegraf()), "--config", str(config)]
            health = None  # the probe tells
        else:
            [metrics] = free_ports(1)
            argv = [
                sys.executable, "-m", "iotstream", "bridge",
                "--mqtt-url", f"mqtt://{HOST}:{mqtt}",
                "--kafka-bootstrap", kafka, "--kafka-topic", topic,
                "--mqtt-client-id", topic, "--metrics-port", str(metrics),
                "--data-dir", str(workdir / "data"), "--log-level", "warning",
            ]  # fmt: skip
            health = f"http://{HOST}:{metrics}/api/health"
        with (workdir / f"{bridge}.log").open("wb") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT
        while health is not None and not _answers(health):
            if process.poll() is not None or time.monotonic() > deadline:
                stop_process(process)
                raise BenchError(f"{bridge} did not start: see {workdir / f'{bridge}.log'}")
            time.sleep(0.2)
        return process

    def probe(self, topic: Topic, process: subprocess.Popen[bytes], bridge: str) -> None:
        """One message through the bridge onto the topic (again every two seconds until one
        arrives: a bridge may not have subscribed yet)."""
        deadline = time.monotonic() + READY_TIMEOUT
        while topic.end_offsets() == 0:
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchError(f"{bridge}: nothing reached {topic.name}")
            asyncio.run(
                publish_once(
                    self.mosquitto.port, "sensors/anchor-probe/coordinates", b'{"x":0,"y":0}'
                )
            )
            time.sleep(2.0)

    def measure(self, bridge: str, rate: int, warmup: float, window: float) -> dict[str, Any]:
        name = f"anchor-{bridge}-{rate}-{uuid.uuid4().hex[:6]}"
        topic = Topic(self.kafka.address, name)
        sent_times = iotstream_sent if bridge == "iotstream" else telegraf_sent
        process = self.start_bridge(bridge, name)
        try:
            self.probe(topic, process, bridge)
            time.sleep(1.0)  # the probe's repeats, if any, are on the topic
            before = topic.count(sent_times)
            load = Load(name, DEVICES, rate / DEVICES, warmup + window)
            pids = {bridge: process.pid, "mosquitto": self.mosquitto.pid, "kafka": self.kafka.pid}
            growth = Growth(self.kafka.address, name, topic.partitions)
            with Generator(self.mosquitto.port, load) as generator, growth:
                generator.start()
                with ResourceSampler({**pids, **generator.pids}) as sampler:
                    start = time.time() + 0.3
                    generator.go(start)
                    _sleep_until(start + warmup)
                    sampler.window_start()
                    _sleep_until(start + warmup + window)
                    sampler.window_end()
                    sent, _ = generator.finish()
                    drain = growth.drained(start + sent["seconds"])
                    sampler.sample_now()
                    resources = sampler.report()
                    machine = sampler.machine()
            delivered = topic.count(sent_times, since=start + warmup) - before
        finally:
            stop_process(process)
            topic.close()
        return {
            "bridge": bridge,
            "targetRate": rate,
            "generator": sent,
            "delivered": delivered,
            "lost": sent["sent"] - delivered,
            "drainSeconds": drain,
            "latency": topic.latency.summary(),
            "resources": {name: resources[name] for name in pids},
            "generatorCpuPercent": round(
                sum(r["cpuPercent"] or 0.0 for n, r in resources.items() if n not in pids), 1
            ),
            "machine": machine,
        }


class Growth:
    """When the topic last grew: its end offsets read every ``POLL`` seconds by a thread of
    its own (with a consumer of its own) from ``__enter__`` on."""

    def __init__(self, bootstrap: str, name: str, partitions: int) -> None:
        self.topic = Topic(bootstrap, name, partitions=partitions)
        self.last = time.time()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self, seen: int) -> None:
        while not self._stop.wait(POLL):
            now = self.topic.end_offsets()
            if now != seen:
                seen, self.last = now, time.time()

    def __enter__(self) -> Self:
        # The offsets it starts from are read before the caller writes: the first read of
        # a new consumer waits for the cluster's metadata, longer than a write on a busy box.
        seen = self.topic.end_offsets()
        self.last = time.time()
        self._thread = threading.Thread(
            target=self._run, args=(seen,), name="anchor-growth", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.topic.close()

    def drained(self, last_write: float) -> float | None:
        """How long after ``last_write`` the topic last grew, once it has been quiet for
        ``QUIET``; ``None`` when it still grew ``DRAIN_TIMEOUT`` after it."""
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while time.time() - self.last < QUIET:
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL)
        return round(max(0.0, self.last - last_write), 3)


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| bridge | target msg/s | sent | on Kafka | lost | to Kafka p50/p99 | drained after | "
        "bridge CPU | bridge RSS peak | Mosquitto CPU | Kafka CPU | machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        own = r["resources"][r["bridge"]]
        drain = "never" if r["drainSeconds"] is None else f"{r['drainSeconds']:.2f} s"
        lines.append(
            f"| {r['bridge']} | {r['targetRate']:,} | {r['generator']['sent']:,} | "
            f"{r['delivered']:,} | {r['lost']:,} | "
            f"{r['latency']['p50Ms']}/{r['latency']['p99Ms']} ms | {drain} | "
            f"{own['cpuPercent']} % | "
            f"{own['rssPeakMb']} MB | {r['resources']['mosquitto']['cpuPercent']} % | "
            f"{r['resources']['kafka']['cpuPercent']} % | {r['machine']['busyPercent']} % |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.anchor", description=__doc__)
    parser.add_argument("--rates", type=int, nargs="+", default=list(RATES))
    parser.add_argument("--bridges", nargs="+", choices=BRIDGES, default=list(BRIDGES))
    parser.add_argument("--warmup", type=float, default=WARMUP)
    parser.add_argument("--window", type=float, default=WINDOW)
    parser.add_argument(
        "--warm",
        type=float,
        default=WARM,
        help="seconds of a first run of each bridge at 10k msg/s, not reported: Kafka's JIT "
        "compiler takes a while over each client's requests",
    )
    parser.add_argument("--out", type=Path, default=None, help="writes anchor.json and anchor.md")
    args = parser.parse_args(argv)
    try:
        if "telegraf" in args.bridges:
            ensure_telegraf()
        results: list[dict[str, Any]] = []
        with tempfile.TemporaryDirectory(prefix="iotstream-anchor-") as tmp:
            run = Run(Path(tmp))
            try:
                for bridge in args.bridges if args.warm > 0 else ():
                    run.measure(bridge, 10_000, 0.0, args.warm)
                for rate in args.rates:
                    for bridge in args.bridges:
                        results.append(run.measure(bridge, rate, args.warmup, args.window))
                        print(table(results[-1:]).splitlines()[-1], flush=True)
            finally:
                run.close()
    except (BenchError, HarnessError) as exc:
        print(f"bench.anchor: {exc}", file=sys.stderr)
        return 1
    report = {
        "command": "python -m bench.anchor " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": describe(),
        "source": source(),
        "devices": DEVICES,
        "telegraf": TELEGRAF_VERSION,
        "results": results,
    }
    print(table(results))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "anchor.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.out / "anchor.md").write_text(table(results) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
