"""``iotstream spark stream`` on a real Kafka: the bus's records in, ``device_minutes`` out,
each minute exactly once although the job is SIGKILLed mid-stream and restarted, even when
the kill falls between the Delta commit of a micro-batch and its checkpoint's commit."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer
from deltalake import DeltaTable
from deltalake.exceptions import TableNotFoundError

import harness
from harness.processes import kill_process_group, stop_process_group
from iotstream.bus.kafka import KafkaBus
from iotstream.models import Batch, DeviceId, Event, RawMessage, Reading
from iotstream.spark.stream import DEVICE_MINUTES

pytestmark = [pytest.mark.spark, pytest.mark.kafka]

T0 = 1_700_000_040.0
"""The start of a UTC minute."""
MINUTES = 6
WATERMARK = 10.0
WAIT = 150.0
"""Seconds to wait for the job to write what a step expects (a bound, not a timing)."""


def minute_of(ts: float) -> int:
    return int(ts // 60 * 60)


def readings_of_minute(m: int) -> list[Event]:
    """Two robots in minute ``m``: one at 1 m/s on a straight line, one in uneven steps that
    also reports a battery level without coordinates; and a message that is no reading."""
    start = T0 + 60 * m
    events: list[Event] = []
    for i in range(10):
        ts = start + 6 * i + 1
        s = ts - T0
        events.append(Reading(DeviceId.parse("robot-a"), {"x": 0.8 * s, "y": 0.6 * s}, ts, ts))
    for i in range(5):
        ts = start + 12 * i + 3
        fields = {"x": 10.0 + i * i, "y": -5.0 + m, "heading": 90}
        events.append(Reading(DeviceId.parse("robot-b"), fields, ts, ts + 0.25))
    events.append(Reading(DeviceId.parse("robot-b"), {"battery": 90 - m}, start + 30, start + 30))
    events.append(RawMessage("factory/door", b"open", start + 7))
    return sorted(events, key=lambda e: e.timestamp if isinstance(e, Reading) else e.received_at)


def expected_minutes(events: list[Event]) -> dict[tuple[str, int], dict[str, Any]]:
    """``device_minutes`` rows worked out in plain Python, by (device, minute)."""
    groups: dict[tuple[str, int], list[Reading]] = defaultdict(list)
    for event in events:
        if isinstance(event, Reading):
            groups[(event.device_id, minute_of(event.timestamp))].append(event)
    rows = {}
    for key, readings in groups.items():
        points = sorted(
            (r.timestamp, r.fields["x"], r.fields["y"]) for r in readings if "x" in r.fields
        )
        steps = [
            (math.hypot(b[1] - a[1], b[2] - a[2]), b[0] - a[0])
            for a, b in itertools.pairwise(points)
        ]
        distance = sum(d for d, _ in steps)
        span = points[-1][0] - points[0][0]
        rows[key] = {
            "readings": len(readings),
            "positions": len(points),
            "distance": distance,
            "avg_speed": distance / span,
            "max_speed": max(d / s for d, s in steps),
            "min_x": min(p[1] for p in points),
            "max_x": max(p[1] for p in points),
            "min_y": min(p[2] for p in points),
            "max_y": max(p[2] for p in points),
        }
    return rows


@dataclass
class StreamJob:
    """``iotstream spark stream`` as a subprocess in a process group of its own (Python and
    the JVM it starts), so a SIGKILL takes both down as a crash would."""

    tmp: Path
    kafka: str
    topic: str
    jars: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    lake: Path = field(init=False)

    def __post_init__(self) -> None:
        self.lake = self.tmp / "lake"

    @property
    def log(self) -> Path:
        return self.tmp / "stream.log"

    def start(self) -> None:
        self.starts += 1
        argv = [
            sys.executable, "-m", "iotstream", "spark", "stream",
            "--kafka-bootstrap", self.kafka,
            "--kafka-topic", self.topic,
            "--lake-url", str(self.lake),
            "--watermark", str(WATERMARK),
            "--trigger", "1",
            # Several micro-batches per part, so that a kill lands between or inside them.
            "--max-records", "20",
        ]  # fmt: skip
        env = {**os.environ, "IOTSTREAM_SPARK_JARS": str(self.jars)}
        with self.log.open("ab") as log:
            log.write(f"--- start {self.starts}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.tmp,
                start_new_session=True,
            )

    def crash(self) -> None:
        assert self.process is not None
        kill_process_group(self.process.pid)
        self.process.wait()
        assert self.process.returncode == -signal.SIGKILL

    def stop(self) -> int:
        """SIGTERM to the job, which stops its query and its JVM; its exit code."""
        assert self.process is not None
        harness.stop_process(self.process, timeout=60)
        # Anything left in its group (a JVM that did not exit) goes too.
        stop_process_group(self.process.pid, 5)
        return self.process.returncode

    @property
    def checkpoint(self) -> Path:
        return self.lake / "_checkpoints" / DEVICE_MINUTES

    def forget_last_commit(self) -> int:
        """Make the checkpoint look as if the job crashed after the Delta sink committed the
        last micro-batch but before the checkpoint recorded it: the restarted job runs that
        batch again, and the sink must not write it twice. The batch's id."""
        query_id = orjson.loads((self.checkpoint / "metadata").read_bytes())["id"]
        batch = DeltaTable(str(self.table)).transaction_version(query_id)
        assert batch is not None, "the sink records each batch as a Delta transaction"
        offsets = (self.checkpoint / "offsets").iterdir()
        planned = max(int(path.name) for path in offsets if path.name.isdigit())
        assert batch == planned, "the last planned batch is in the table"
        assert self.added_files(query_id, batch) > 0, "the batch wrote minutes"
        for name in (str(batch), f".{batch}.crc"):  # the file and Hadoop's checksum of it
            (self.checkpoint / "commits" / name).unlink(missing_ok=True)
        return batch

    def added_files(self, query_id: str, batch: int) -> int:
        """Files the Delta commit of micro-batch ``batch`` of query ``query_id`` added."""
        for commit in sorted((self.table / "_delta_log").glob("*.json")):
            actions = [orjson.loads(line) for line in commit.read_bytes().splitlines()]
            txn = {"appId": query_id, "version": batch}
            if any(action.get("txn", {}).items() >= txn.items() for action in actions):
                return sum("add" in action for action in actions)
        return 0

    def committed(self, batch: int) -> bool:
        return (self.checkpoint / "commits" / str(batch)).is_file()

    @property
    def table(self) -> Path:
        return self.lake / DEVICE_MINUTES

    def rows(self) -> list[dict[str, Any]]:
        try:
            table = DeltaTable(str(self.table))
        except TableNotFoundError:
            return []
        return table.to_pyarrow_table().to_pylist()

    def wait_for(self, done: Any, what: str) -> list[dict[str, Any]]:
        """The table's rows once ``done(rows)``; fails if the job exits first."""
        assert self.process is not None
        deadline = time.monotonic() + WAIT
        while True:
            rows = self.rows()
            if done(rows):
                return rows
            if self.process.poll() is not None:
                raise AssertionError(f"the job exited ({self.process.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"never {what}; {len(rows)} rows:\n{self.tail()}")
            time.sleep(0.5)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def job(tmp_path: Path, kafka: harness.Service, spark_jars: Path) -> Iterator[StreamJob]:
    stream = StreamJob(tmp_path, kafka.address, f"spark-{uuid.uuid4().hex[:8]}", spark_jars)
    try:
        yield stream
    finally:
        if stream.process is not None:
            harness.stop_process(stream.process, timeout=60)
            stop_process_group(stream.process.pid, 5)


def publish(address: str, topic: str, events: list[Event]) -> None:
    """``events`` as the bus writes them (two partitions, keyed by device)."""

    async def run() -> None:
        async with KafkaBus(address, topic=topic, partitions=2) as bus:
            await bus.publish(Batch.from_events(events))

    asyncio.run(run())


def publish_garbage(address: str, topic: str) -> None:
    producer = Producer({"bootstrap.servers": address})
    producer.produce(topic, b"not a record", key=b"someone-else")
    assert producer.flush(30) == 0


def test_every_minute_once_across_a_crash(job: StreamJob) -> None:
    events = [event for m in range(MINUTES) for event in readings_of_minute(m)]
    expected = expected_minutes(events)
    assert len(expected) == 2 * MINUTES
    # After the last minute, a reading that moves the watermark past its end.
    flush_ts = T0 + 60 * MINUTES + WATERMARK + 5
    flush = Reading(DeviceId.parse("robot-z"), {"x": 0.0, "y": 0.0}, flush_ts, flush_ts)
    first, second, third = (
        events[: len(events) // 3],
        events[len(events) // 3 : 2 * len(events) // 3],
        events[2 * len(events) // 3 :],
    )

    publish(job.kafka, job.topic, first)
    publish_garbage(job.kafka, job.topic)
    publish(job.kafka, job.topic, second)
    job.start()
    before_crash = job.wait_for(bool, "wrote a minute before the crash")
    job.crash()
    assert len(before_crash) < len(expected)

    job.start()
    publish(job.kafka, job.topic, [*third, flush])
    keys = set(expected)
    job.wait_for(
        lambda rows: keys <= {(r["device_id"], _epoch(r["minute"])) for r in rows},
        "wrote every minute",
    )
    job.crash()
    batch = job.forget_last_commit()

    job.start()
    job.wait_for(lambda rows: job.committed(batch), f"ran micro-batch {batch} again")
    assert job.stop() == 0, job.tail()

    rows = job.rows()  # all of them, now that the job has stopped
    got = sorted((r["device_id"], _epoch(r["minute"])) for r in rows)
    assert got == sorted(keys), "a minute is missing or written twice"
    for row in rows:
        want = expected[(row["device_id"], _epoch(row["minute"]))]
        for name, value in want.items():
            assert row[name] == pytest.approx(value), (row, name)
        assert str(row["date"]) == time.strftime("%Y-%m-%d", time.gmtime(_epoch(row["minute"])))
    protocol = DeltaTable(str(job.table)).protocol()
    assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)


def _epoch(moment: Any) -> int:
    return int(moment.timestamp())
