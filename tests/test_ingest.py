"""The ingest on the memory bus, fed through a real mosquitto."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from harness import free_port
from iotstream.broker import MosquittoBroker
from iotstream.bus import Consumer
from iotstream.config import MqttEndpoint
from iotstream.ingest import Ingest
from iotstream.models import Batch, RawMessage
from iotstream.parser import Parser

from .broker.client import MqttClient
from .conftest import require
from .faults import FlakyBus, wait_until

TOPICS = ["#"]  # what the server subscribes to by default
PROBE = "test/ready"
"""A retained message: it reaches an ingest as soon as its subscription is live."""

MakeIngest = Callable[..., Ingest]


def coordinates(seq: int) -> bytes:
    return orjson.dumps({"x": float(seq), "y": 2.0, "timestamp": 1_800_000_000 + seq, "seq": seq})


def seqs(batch: Batch, device: str = "r1") -> list[int]:
    return [r.fields["seq"] for r in batch.readings if r.device_id == device]


class BusReader:
    """Reads what the ingest put on the bus, leaving the readiness probes out."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.batches: list[Batch] = []

    @property
    def events(self) -> Batch:
        merged = Batch()
        for batch in self.batches:
            merged.extend(batch)
        return merged

    async def read(self, count: int, timeout: float = 20.0) -> Batch:
        """Poll until ``count`` more events arrived; returns everything read so far."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = len(self.events) + count
        while len(self.events) < target:
            if loop.time() > deadline:
                raise AssertionError(f"{len(self.events)} of {target} events reached the bus")
            self._keep(await self.consumer.poll(10_000, timeout=0.2))
        return self.events

    async def read_rest(self) -> Batch:
        """What is on the bus without waiting; for after the ingest stopped."""
        self._keep(await self.consumer.poll(10_000, timeout=0))
        return self.events

    async def wait_for_probe(self, timeout: float = 20.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            batch = await self.consumer.poll(10_000, timeout=0.2)
            if any(raw.topic == PROBE for raw in batch.raw):
                self._keep(batch)
                return
            if loop.time() > deadline:
                raise AssertionError("the ingest never received the retained probe")

    def _keep(self, batch: Batch) -> None:
        batch.raw[:] = [raw for raw in batch.raw if raw.topic != PROBE]
        if batch:
            self.batches.append(batch)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[MosquittoBroker]:
    binary = require("mosquitto")
    async with MosquittoBroker("127.0.0.1", free_port(), tmp_path / "mosquitto", binary) as broker:
        yield broker


@pytest.fixture
async def publisher(broker: MosquittoBroker) -> AsyncIterator[MqttClient]:
    async with MqttClient(broker.port) as client:
        client.publish(PROBE, "ready", qos=1, retain=True)
        await client.drain()
        yield client


@pytest.fixture
async def bus() -> AsyncIterator[FlakyBus]:
    async with FlakyBus() as bus:
        yield bus


@pytest.fixture
async def reader(bus: FlakyBus) -> AsyncIterator[BusReader]:
    async with await bus.consumer("test") as consumer:
        yield BusReader(consumer)


@pytest.fixture
def make_ingest(broker: MosquittoBroker, bus: FlakyBus) -> MakeIngest:
    def make(*, ack_after_publish: bool = False, client_id: str | None = None) -> Ingest:
        endpoint = MqttEndpoint("127.0.0.1", broker.port)
        return Ingest(
            endpoint,
            TOPICS,
            1,
            Parser(),
            bus,
            ack_after_publish=ack_after_publish,
            client_id=client_id,
        )

    return make


async def test_messages_arrive_on_the_bus_in_order(
    make_ingest: MakeIngest, publisher: MqttClient, reader: BusReader
) -> None:
    ingest = make_ingest()
    async with ingest:
        await reader.wait_for_probe()
        for seq in range(200):
            publisher.publish("sensors/r1/coordinates", coordinates(seq), qos=1)
            if seq % 50 == 0:
                publisher.publish("sensors/r2/coordX", f"{seq}.5", qos=1)
                publisher.publish("test/hello", f"hello {seq}", qos=1)
        await publisher.drain()
        events = await reader.read(208)
        assert ingest.health().ok
    events = await reader.read_rest()
    assert len(events) == 208  # nothing twice
    assert len(reader.batches) >= 1
    assert seqs(events) == list(range(200))
    first = events.readings[0]
    assert (first.device_id, first.timestamp) == ("r1", 1_800_000_000.0)
    assert first.fields == {"x": 0.0, "y": 2.0, "seq": 0}
    assert [(r.device_id, r.fields) for r in events.readings if r.device_id == "r2"] == [
        ("r2", {"x": float(seq) + 0.5}) for seq in range(0, 200, 50)
    ]
    assert [(m.topic, m.payload) for m in events.raw] == [
        ("test/hello", f"hello {seq}".encode()) for seq in range(0, 200, 50)
    ]
    assert all(isinstance(m, RawMessage) and m.received_at > 0 for m in events.raw)


async def test_bad_messages_become_rejected_events_logged_once_per_reason(
    make_ingest: MakeIngest,
    publisher: MqttClient,
    reader: BusReader,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="iotstream.ingest")
    async with make_ingest():
        await reader.wait_for_probe()
        for n in range(3):
            publisher.publish("sensors/r1/coordinates", f"{{oops {n}", qos=1)
        publisher.publish("sensors/r1/coordinates", '{"x": "left", "y": 1}', qos=1)
        publisher.publish("sensors/r1/coordinates", coordinates(7), qos=1)
        publisher.publish("sensors/r1/coordinates", '{"x": 1, "y": "up"}', qos=1)
        await publisher.drain()
        events = await reader.read(6)
    assert seqs(events) == [7]
    assert [(r.topic, r.payload, r.reason) for r in events.rejected] == [
        ("sensors/r1/coordinates", b"{oops 0", "invalid_json"),
        ("sensors/r1/coordinates", b"{oops 1", "invalid_json"),
        ("sensors/r1/coordinates", b"{oops 2", "invalid_json"),
        ("sensors/r1/coordinates", b'{"x": "left", "y": 1}', "invalid_coordinate"),
        ("sensors/r1/coordinates", b'{"x": 1, "y": "up"}', "invalid_coordinate"),
    ]
    assert [r.detail for r in events.rejected[3:]] == ["x is not a number", "y is not a number"]
    logged = [r.getMessage() for r in caplog.records if r.name == "iotstream.ingest"]
    assert len(logged) == 2, logged
    assert "invalid_json" in logged[0]
    assert "invalid_coordinate" in logged[1]


async def test_a_refused_batch_is_retried_until_the_bus_takes_it(
    make_ingest: MakeIngest, publisher: MqttClient, reader: BusReader, bus: FlakyBus
) -> None:
    ingest = make_ingest()
    async with ingest:
        await reader.wait_for_probe()
        bus.publish_fault.fail_next(3)
        for seq in range(50):
            publisher.publish("sensors/r1/coordinates", coordinates(seq), qos=1)
        await publisher.drain()
        await reader.read(50)
    events = await reader.read_rest()
    assert sorted(seqs(events)) == list(range(50))  # nothing lost, nothing twice
    assert bus.publish_fault.injected == 3
    assert ingest.bus_failures == 3


async def test_a_refused_batch_keeps_its_place_in_the_order(
    make_ingest: MakeIngest, publisher: MqttClient, reader: BusReader, bus: FlakyBus
) -> None:
    """The bus keeps order per device; a batch the bus refused once must still reach it
    before the batches that arrived after it."""
    async with make_ingest():
        await reader.wait_for_probe()
        bus.publish_fault.fail_next(1)
        publisher.publish("sensors/r1/coordinates", coordinates(0), qos=1)
        await wait_until(lambda: bus.publish_fault.injected == 1, "the bus refused a batch")
        publisher.publish("sensors/r1/coordinates", coordinates(1), qos=1)
        await publisher.drain()
        events = await reader.read(2)
    assert seqs(events) == [0, 1]


async def test_stop_puts_what_arrived_on_the_bus(
    make_ingest: MakeIngest, publisher: MqttClient, reader: BusReader, bus: FlakyBus
) -> None:
    ingest = make_ingest()
    async with ingest:  # which stops it again, harmlessly, on the way out
        await reader.wait_for_probe()
        received = ingest.received
        bus.publish_fault.fail_next()  # until healed: what arrives stays with the ingest
        for seq in range(20):
            publisher.publish("sensors/r1/coordinates", coordinates(seq), qos=1)
        await publisher.drain()
        await wait_until(lambda: ingest.received == received + 20, "every message arrived")
        assert len(await reader.read_rest()) == 0
        stopping = asyncio.create_task(ingest.stop())
        await wait_until(lambda: not ingest.connection.is_connected, "it disconnected")
        bus.publish_fault.heal()
        await asyncio.wait_for(stopping, 20)
    events = await reader.read_rest()
    assert sorted(seqs(events)) == list(range(20))


async def test_a_message_the_bus_refused_is_not_acknowledged_to_the_broker(
    make_ingest: MakeIngest, publisher: MqttClient, reader: BusReader, bus: FlakyBus
) -> None:
    """With ``ack_after_publish`` (the bridge), a message is acknowledged only once it is on
    the bus: a bridge that stops while the bus refuses it gets it again from the broker."""
    client_id = f"test-bridge-{uuid.uuid4().hex[:8]}"
    first = make_ingest(ack_after_publish=True, client_id=client_id)
    async with first:  # which stops it again, harmlessly, on the way out
        await reader.wait_for_probe()
        received = first.received
        bus.publish_fault.fail_next()
        publisher.publish("sensors/r1/coordinates", coordinates(1), qos=1)
        await publisher.drain()
        await wait_until(lambda: first.received == received + 1, "the message arrived")
        await wait_until(lambda: first.bus_failures >= 1, "the bus refused it")
        stopping = asyncio.create_task(first.stop())
        # Let it reach the bus only once the connection that would acknowledge it is gone.
        await wait_until(lambda: not first.connection.is_connected, "it disconnected")
        bus.publish_fault.heal()
        await asyncio.wait_for(stopping, 20)
    assert seqs(await reader.read_rest()) == [1]  # flushed by stop()
    async with make_ingest(ack_after_publish=True, client_id=client_id) as second:
        events = await reader.read(1)  # the broker delivers it again
        assert seqs(events) == [1, 1]
        assert second.received >= 1
