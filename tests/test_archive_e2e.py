"""The archive end to end: a sequence-numbered stream reaches the lake's ``readings`` table
exactly once, through ``iotstream run``, and through bridge -> Kafka -> ``iotstream archiver``
with the archiver killed with SIGKILL mid-stream and started again. The table is read with
``deltalake`` and pyarrow, not through iotstream."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from deltalake import DeltaTable

import harness
from harness import stop_process

from .conftest import require, start_server
from .test_distributed import Stack, publish_stream


def sequences(table: Path) -> Counter[tuple[str, int]]:
    """How many times each (device id, seq) is in the readings table at ``table``."""
    if not (table / "_delta_log").exists():
        return Counter()
    rows = DeltaTable(str(table)).to_pyarrow_table(columns=["device_id", "fields"]).to_pylist()
    return Counter((row["device_id"], orjson.loads(row["fields"])["seq"]) for row in rows)


def wait_for_rows(table: Path, count: int, timeout: float, why: str) -> Counter[tuple[str, int]]:
    deadline = time.monotonic() + timeout
    while True:
        held = sequences(table)
        if sum(held.values()) >= count or time.monotonic() > deadline:
            assert sum(held.values()) >= count, f"{sum(held.values())} of {count} rows\n{why}"
            return held
        time.sleep(0.2)


@pytest.mark.e2e
def test_a_stream_through_iotstream_run_is_in_the_lake_exactly_once(tmp_path: Path) -> None:
    require("mosquitto")
    server = start_server(tmp_path, "--ws-interval", "0.05")
    devices, count = 10, 200
    try:
        for d in range(devices):
            lines = [
                orjson.dumps({"x": float(s), "y": 0.0, "seq": s}).decode() for s in range(count)
            ]
            server.publish_lines(f"sensors/lake{d}/coordinates", lines)
        table = server.data_dir / "lake" / "readings"
        # Queryable while the server runs: the archiver commits about once a second.
        wait_for_rows(table, devices * count, 30, server.log.read_text())
    finally:
        stop_process(server.process)
    assert server.process.returncode == 0, server.log.read_text()
    held = sequences(server.data_dir / "lake" / "readings")
    want = Counter((f"lake{d}", s) for d in range(devices) for s in range(count))
    assert held == want


@pytest.mark.kafka
async def test_kill_9_of_the_archiver_mid_stream_neither_loses_nor_duplicates(
    tmp_path: Path, kafka: harness.Service
) -> None:
    require("mosquitto")
    devices, count = 50, 100
    with harness.start_mosquitto(harness.free_port(), tmp_path / "mosquitto") as broker:
        stack = Stack(tmp_path, broker.port, kafka.address, redis="")
        try:
            stack.start_bridge()
            stack.start("archiver", "archiver")
            for name in ("bridge", "archiver"):
                stack.wait_healthy(name)
            publisher = asyncio.create_task(
                publish_stream(stack.mqtt_port, devices, count, rate=25)
            )
            table = tmp_path / "lake" / "readings"
            # Killed once it has committed to the lake at least once, mid-stream.
            deadline = time.monotonic() + 30
            while sum(sequences(table).values()) == 0:
                assert time.monotonic() < deadline, stack.log("archiver")
                await asyncio.sleep(0.1)
            assert not publisher.done()
            stack.kill("archiver")
            await asyncio.sleep(1.0)
            stack.start("archiver", "archiver")
            await publisher
            held = await asyncio.to_thread(
                wait_for_rows, table, devices * count, 60, stack.log("archiver")
            )
            # One more flush interval or two: nothing more may arrive.
            await asyncio.sleep(3)
            held = sequences(table)
        finally:
            stack.stop_all()
        for name, process in stack.processes.items():
            assert process.returncode in (0, -9), f"{name}:\n{stack.log(name)}"
    want = Counter((f"dev{d}", s) for d in range(devices) for s in range(count))
    duplicated = {key: n for key, n in held.items() if n > 1}
    missing = set(want) - set(held)
    assert not duplicated and not missing, (
        f"{len(duplicated)} duplicated, {len(missing)} missing\n{stack.log('archiver')[-3000:]}"
    )
    assert held == want
    assert "archiver starts at" in stack.log("archiver")
