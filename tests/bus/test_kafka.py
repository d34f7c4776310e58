"""The Kafka bus against the shared bus suite, and what only Kafka has: topics it creates,
the dead-letter topic, acknowledgements, and records someone else wrote."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence

import orjson
import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, ConfigResource

import harness
from iotstream.bus import Consumer as BusConsumer
from iotstream.bus import Position, create_bus
from iotstream.bus import kafka as kafka_module
from iotstream.bus.kafka import PRODUCER_CONFIG, KafkaBus
from iotstream.bus.kafka_codec import UNDECODABLE, decode_all, partition_of
from iotstream.config import load_settings
from iotstream.errors import BusError, ConsumerLost
from iotstream.models import Batch, RawMessage, Reading, Rejected

from .suite import T0, BusSuite, Recorded, drain, drain_positioned, readings, seqs

pytestmark = pytest.mark.kafka

PARTITIONS = 3


def unique_topic() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


def kafka_bus(address: str, topic: str, retention_ms: int | None = None) -> KafkaBus:
    # Groups are prefixed like the topic: the suite's group names repeat in every test.
    return KafkaBus(
        address,
        topic=topic,
        partitions=PARTITIONS,
        retention_ms=retention_ms,
        group_prefix=f"{topic}.",
    )


@pytest.fixture
async def bus(kafka: harness.Service) -> AsyncIterator[KafkaBus]:
    async with kafka_bus(kafka.address, unique_topic()) as started:
        yield started


def read_topic(address: str, topic: str, count: int, timeout: float = 10.0) -> list[Message]:
    """Up to ``count`` records of ``topic`` from its beginning, read outside any bus."""
    consumer = Consumer(
        {"bootstrap.servers": address, "group.id": f"reader-{topic}", "enable.auto.commit": False}
    )
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        got: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(count - len(got), 0.2) if m.error() is None)
        return got
    finally:
        consumer.close()


class TestKafkaBus(BusSuite):
    async def test_topics_are_created_with_the_requested_partitions(
        self, kafka: harness.Service
    ) -> None:
        topic = unique_topic()
        async with kafka_bus(kafka.address, topic, retention_ms=3_600_000) as started:
            admin = AdminClient({"bootstrap.servers": kafka.address})
            topics = admin.list_topics(timeout=10).topics
            assert len(topics[topic].partitions) == PARTITIONS
            assert len(topics[started.deadletter_topic].partitions) == PARTITIONS
            assert started.deadletter_topic == f"{topic}.deadletter"
            resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
            configs = admin.describe_configs([resource])[resource].result(timeout=10)
            assert configs["retention.ms"].value == "3600000"

    async def test_a_one_broker_cluster_gets_fewer_partitions_by_default(
        self, kafka: harness.Service
    ) -> None:
        topic = unique_topic()
        async with KafkaBus(kafka.address, topic=topic, group_prefix=topic) as started:
            topics = AdminClient({"bootstrap.servers": kafka.address}).list_topics(timeout=10)
            assert len(topics.brokers) == 1
            one_machine = kafka_module.default_partitions(1)
            assert len(topics.topics[topic].partitions) == one_machine
            deadletters = topics.topics[started.deadletter_topic]
            assert len(deadletters.partitions) == one_machine
        # A partition per core of the one machine, at most 8; the reference's 100 on several.
        assert [kafka_module.default_partitions(1, cores) for cores in (1, 2, 8, 64)] == [
            1,
            2,
            8,
            8,
        ]
        assert kafka_module.default_partitions(3) == kafka_module.REFERENCE_PARTITIONS == 100

    async def test_a_second_bus_keeps_the_existing_topics(
        self, kafka: harness.Service, caplog: pytest.LogCaptureFixture
    ) -> None:
        topic = unique_topic()
        async with kafka_bus(kafka.address, topic) as first:
            await first.publish(readings("a", range(3)))
            second = KafkaBus(kafka.address, topic=topic, partitions=5, group_prefix=topic)
            with caplog.at_level(logging.WARNING, logger=kafka_module.__name__):
                async with second:
                    consumer = await second.consumer("g")
                    got = await drain(consumer, 3)
                    await consumer.close()
        assert seqs(got, "a") == [0, 1, 2]
        assert "has 3 partitions, not the 5 configured" in caplog.text

    async def test_publish_returns_once_kafka_has_every_record(self, bus: KafkaBus) -> None:
        batch = Batch(readings=[r for d in range(20) for r in readings(f"d{d}", range(5)).readings])
        await bus.publish(batch)
        reader = Consumer({"bootstrap.servers": bus.bootstrap, "group.id": "watermarks"})
        try:
            stored = sum(
                high - low
                for low, high in (
                    reader.get_watermark_offsets(TopicPartition(bus.topic, p), timeout=10)
                    for p in range(PARTITIONS)
                )
            )
        finally:
            reader.close()
        # One record per partition: the 100 readings are packed.
        assert stored == PARTITIONS
        records = await asyncio.to_thread(read_topic, bus.bootstrap, bus.topic, stored)
        events = [event for message in records for event in decode_all(message.value())]
        assert sorted(events, key=repr) == sorted(batch.readings, key=repr)

    async def test_readings_are_packed_on_the_partition_of_their_device_id(
        self, bus: KafkaBus
    ) -> None:
        """Records keyed by device id through librdkafka's partitioner (as iotstream's
        command replies are, and other producers' records may be) and each device's packed
        readings share a partition."""
        devices = [f"robot-{n}" for n in range(60)] + ["é", "a" * 127, "x-y"]
        producer = Producer({"bootstrap.servers": bus.bootstrap, **PRODUCER_CONFIG})
        keyed: dict[str, int] = {}
        for device in devices:
            producer.produce(
                bus.topic,
                b"keyed",
                device.encode(),
                on_delivery=lambda error, message: keyed.__setitem__(
                    message.key().decode(), message.partition()
                ),
            )
        assert producer.flush(10) == 0
        assert len(set(keyed.values())) == PARTITIONS
        await bus.publish(
            Batch(readings=[r for d in devices for r in readings(d, range(3)).readings])
        )
        records = await asyncio.to_thread(
            read_topic, bus.bootstrap, bus.topic, len(devices) + PARTITIONS
        )
        packed = [m for m in records if m.value() != b"keyed"]
        assert len(packed) == PARTITIONS
        for message in packed:
            events = decode_all(message.value())
            assert len(events) > 1
            for event in events:
                assert isinstance(event, Reading)
                assert keyed[event.device_id] == message.partition()
                assert partition_of(event.device_id, PARTITIONS) == message.partition()

    async def test_records_are_keyed_and_rejects_go_to_the_deadletter_topic(
        self, bus: KafkaBus
    ) -> None:
        reading = Reading("robot-7", {"x": 1.0, "y": 2.0}, T0, T0)
        raw = RawMessage("test/hello", b"hi", T0)
        rejected = Rejected("sensors/r/coordinates", b"{", 1, "invalid_json", "not JSON", T0)
        await bus.publish(Batch(readings=[reading], raw=[raw], rejected=[rejected]))
        main = await asyncio.to_thread(read_topic, bus.bootstrap, bus.topic, 2)
        dead = await asyncio.to_thread(read_topic, bus.bootstrap, bus.deadletter_topic, 1)
        assert sorted(m.key() or b"" for m in main) == [b"robot-7", b"test/hello"]
        assert [m.key() for m in dead] == [b"sensors/r/coordinates"]

    async def test_a_record_someone_else_wrote_becomes_a_dead_letter(self, bus: KafkaBus) -> None:
        producer = Producer({"bootstrap.servers": bus.bootstrap})
        producer.produce(bus.topic, b"\x00 not an event", b"foreign")
        assert producer.flush(10) == 0
        await bus.publish(readings("a", range(3)))
        consumer = await bus.consumer("g")
        got = await drain(consumer, 4)
        await consumer.commit()
        await consumer.close()
        assert seqs(got, "a") == [0, 1, 2]
        [letter] = got.rejected
        assert letter.reason == UNDECODABLE
        assert letter.payload == b"\x00 not an event"
        assert letter.size == len(b"\x00 not an event")
        assert letter.topic.startswith(f"kafka:{bus.topic}-")
        assert "not JSON" in letter.detail
        assert abs(letter.received_at - time.time()) < 60
        assert bus.undecodable == 1
        assert "1 undecodable records" in bus.health().detail
        # Committed past it: the group does not meet the record again.
        await bus.publish(readings("a", range(3, 4)))
        again = await bus.consumer("g")
        later = await drain(again, 1)
        extra = await again.poll(100, timeout=0.5)
        await again.close()
        assert seqs(later, "a") == [3]
        assert not later.rejected
        assert len(extra) == 0

    async def test_poll_returns_as_soon_as_records_arrive(self, bus: KafkaBus) -> None:
        await bus.publish(readings("a", range(1)))
        consumer = await bus.consumer("g")
        assert len(await drain(consumer, 1)) == 1  # joined and assigned
        waiting = asyncio.create_task(consumer.poll(10_000, timeout=20.0))
        started = time.monotonic()
        await bus.publish(readings("a", range(1, 4)))
        batch = await waiting
        await consumer.close()
        assert seqs(batch, "a")  # what arrived first, without waiting for 10 000 records
        assert time.monotonic() - started < 5.0

    async def test_the_linger_and_the_fetch_wait_go_to_the_clients(
        self, kafka: harness.Service, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        made: list[dict[str, object]] = []

        def recording(client: type) -> type:
            class Recording(client):  # type: ignore[misc, valid-type]
                def __init__(self, config: dict[str, object]) -> None:
                    made.append(config)
                    super().__init__(config)

            return Recording

        monkeypatch.setattr(kafka_module, "Producer", recording(kafka_module.Producer))
        monkeypatch.setattr(kafka_module, "_KafkaConsumer", recording(kafka_module._KafkaConsumer))
        topic = unique_topic()
        bus = KafkaBus(
            kafka.address, topic=topic, partitions=1, group_prefix=f"{topic}.", linger_ms=0,
            fetch_wait_ms=1,
        )  # fmt: skip
        async with bus:
            consumer = await bus.consumer("g")
            patient = await bus.consumer("p", max_wait=0.25)
            await bus.publish(readings("a", range(3)))
            assert seqs(await drain(consumer, 3), "a") == [0, 1, 2]
            assert seqs(await drain(patient, 3), "a") == [0, 1, 2]
            await consumer.close()
            await patient.close()
        producers = [c for c in made if "group.id" not in c]
        consumers = [c for c in made if "group.id" in c]
        assert [c["linger.ms"] for c in producers] == [0]
        assert [c["fetch.wait.max.ms"] for c in consumers] == [1, 250]

    async def test_closing_right_after_a_cancelled_poll_is_safe(self, bus: KafkaBus) -> None:
        consumer = await bus.consumer("g")
        polling = asyncio.create_task(consumer.poll(100, timeout=0.5))
        await asyncio.sleep(0)  # let the poll start in its thread
        polling.cancel()
        await consumer.close()
        with pytest.raises(BusError):
            await consumer.poll(100, timeout=0.1)

    async def test_a_batch_larger_than_the_producer_queue_is_delivered(
        self, kafka: harness.Service, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Raw messages are a record each (readings would be packed into a few): ten times
        # what the queue holds, so the publish waits for room again and again.
        monkeypatch.setitem(kafka_module.PRODUCER_CONFIG, "queue.buffering.max.messages", 50)
        waits = 0
        real_sleep = asyncio.sleep

        async def counting_sleep(delay: float) -> None:
            nonlocal waits
            waits += delay == kafka_module.ROOM_WAIT
            await real_sleep(delay)

        monkeypatch.setattr(kafka_module.asyncio, "sleep", counting_sleep)
        sent = [RawMessage("test/queue", b"%d" % n, T0) for n in range(500)]
        async with kafka_bus(kafka.address, unique_topic()) as small:
            await small.publish(Batch(raw=sent))
            consumer = await small.consumer("g")
            got = await drain(consumer, 500)
            await consumer.close()
        assert waits > 0
        assert got.raw == sent

    async def test_a_stop_lets_a_publish_that_is_producing_finish(
        self, kafka: harness.Service, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setitem(kafka_module.PRODUCER_CONFIG, "queue.buffering.max.messages", 50)
        topic = unique_topic()
        sent = [RawMessage("test/stop", b"%d" % n, T0) for n in range(500)]
        small = kafka_bus(kafka.address, topic)
        await small.start()
        publishing = asyncio.create_task(small.publish(Batch(raw=sent)))
        await asyncio.sleep(0)  # it produces until the queue is full, then waits for room
        await small.stop()
        await asyncio.wait_for(publishing, 30)  # every record acknowledged, none purged
        async with kafka_bus(kafka.address, topic) as reader:
            consumer = await reader.consumer("g")
            got = await drain(consumer, 500)
            await consumer.close()
        assert got.raw == sent

    async def test_health_is_down_unless_started(self, kafka: harness.Service) -> None:
        bus = kafka_bus(kafka.address, unique_topic())
        assert not bus.health().ok
        async with bus:
            assert bus.health().ok
        assert not bus.health().ok
        with pytest.raises(BusError):
            await bus.publish(readings("a", range(1)))

    async def test_health_follows_the_producer_callbacks(self, bus: KafkaBus) -> None:
        # librdkafka's own signals, fed as it would; a real outage takes too long to detect.
        bus._on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        assert not bus.health().ok
        assert "1/1 brokers are down" in bus.health().detail
        bus._on_stats(orjson.dumps({"brokers": {"b/1": {"state": "TRY_CONNECT"}}}).decode())
        assert not bus.health().ok
        bus._on_stats(orjson.dumps({"brokers": {"b/1": {"state": "UP"}}}).decode())
        assert bus.health().ok
        bus._on_error(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
        assert not bus.health().ok
        assert "the Kafka producer failed: fenced" in bus.health().detail

    async def test_the_next_publish_makes_a_producer_that_failed_for_good_again(
        self, bus: KafkaBus
    ) -> None:
        """librdkafka takes no more records from a producer after a fatal error (an
        idempotent one whose sequence Kafka lost): the bus makes a new one instead of
        failing every publish until the process restarts."""
        await bus.publish(readings("a", range(3)))
        failed = bus._producer
        bus._on_error(KafkaError(KafkaError._FATAL, "fenced", fatal=True))
        await bus.publish(readings("a", range(3, 6)))
        assert bus._producer is not None and bus._producer is not failed
        assert bus.health().ok
        consumer = await bus.consumer("g")
        got = await drain(consumer, 6)
        await consumer.close()
        assert seqs(got, "a") == list(range(6))

    async def test_an_event_that_cannot_be_encoded_is_a_bus_error(self, bus: KafkaBus) -> None:
        with pytest.raises(BusError, match="cannot be encoded"):
            await bus.publish(Batch(readings=[Reading("a", {"x": object()}, T0, T0)]))

    async def test_start_fails_with_a_bus_error_when_kafka_is_unreachable(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(kafka_module, "ADMIN_TIMEOUT", 0.5)
        bus = kafka_bus(f"127.0.0.1:{harness.free_port()}", unique_topic())
        with pytest.raises(BusError, match="did not answer"):
            await bus.start()

    async def test_a_rebalance_revokes_sources_from_one_member_and_places_them_in_another(
        self, bus: KafkaBus
    ) -> None:
        for d in range(12):
            await bus.publish(readings(f"d{d}", range(10)))
        first_placement, second_placement = Recorded(), Recorded()
        first = await bus.consumer("g", first_placement)
        assert len(await drain_positioned(first, 120)) == 120  # all of it, not committed
        second = await bus.consumer("g", second_placement)
        got: list[tuple[Position, Reading]] = []

        async def keep_polling(consumer: BusConsumer, into: list[tuple[Position, Reading]]) -> None:
            deadline = time.monotonic() + 30
            while not second_placement.assigned_sources and time.monotonic() < deadline:
                into.extend(await drain_positioned(consumer, 1, timeout=0.3))
            into.extend(await drain_positioned(consumer, 1000, timeout=1.0))

        await asyncio.gather(keep_polling(first, []), keep_polling(second, got))
        await first.close()
        await second.close()
        moved = set(first_placement.revoked_sources)
        assert second_placement.assigned_sources
        assert set(second_placement.assigned_sources) <= moved
        # Nothing was committed: the second member reads its sources from the beginning.
        assert {p.source for p, _ in got} <= set(second_placement.assigned_sources)
        assert got, "the second member read nothing of the sources it got"

    async def test_the_members_of_a_group_share_each_topics_partitions(
        self, kafka: harness.Service
    ) -> None:
        """Two members of a group (two processors) each read readings: the partitions of
        each topic are spread over them, not the topics (with two partitions a topic, the
        cooperative sticky assignor gave one member both of the readings' and the other
        both of the dead letters')."""

        class Holding(Recorded):
            def __init__(self) -> None:
                super().__init__()
                self.held: set[str] = set()

            async def assigned(self, sources: Sequence[str]) -> Mapping[str, int]:
                self.held.update(sources)
                return await super().assigned(sources)

            async def revoked(self, sources: Sequence[str]) -> None:
                self.held.difference_update(sources)
                await super().revoked(sources)

        topic = unique_topic()
        async with KafkaBus(
            kafka.address, topic=topic, partitions=2, group_prefix=f"{topic}."
        ) as bus:
            sources = {f"{t}-{p}" for t in (topic, bus.deadletter_topic) for p in range(2)}
            placements = [Holding(), Holding()]
            first = await bus.consumer("g", placements[0])
            deadline = time.monotonic() + 30
            while placements[0].held != sources:
                assert time.monotonic() < deadline, placements[0].held
                await first.poll(100, timeout=0.2)
            second = await bus.consumer("g", placements[1])
            deadline = time.monotonic() + 30
            while placements[0].held | placements[1].held != sources or not all(
                p.held for p in placements
            ):
                assert time.monotonic() < deadline, [p.held for p in placements]
                await asyncio.gather(first.poll(100, timeout=0.2), second.poll(100, timeout=0.2))
            held = [set(p.held) for p in placements]
            await first.close()
            await second.close()
        assert not held[0] & held[1]
        for sources_held in held:
            assert {s for s in sources_held if s.startswith(f"{topic}-")}, held

    async def test_a_member_with_the_same_instance_id_takes_the_place_of_the_first(
        self, kafka: harness.Service
    ) -> None:
        """With an instance id (static membership) a new member takes the place of the one
        that had it, every partition at once, as a restarted process does while its killed
        predecessor's session has not expired yet; without, the new member would wait for
        the first to give partitions up (the first is not polled here, so it never would).
        Kafka fences the first for good: its poll says so rather than return nothing ever
        after, so that its owner can join again with a new consumer."""
        topic = unique_topic()
        bus = KafkaBus(
            kafka.address,
            topic=topic,
            partitions=PARTITIONS,
            group_prefix=f"{topic}.",
            instance_id="processor-1",
        )
        sources = {f"{t}-{p}" for t in (topic, f"{topic}.deadletter") for p in range(PARTITIONS)}
        async with bus:
            first_placement, second_placement = Recorded(), Recorded()
            first = await bus.consumer("g", first_placement)
            while set(first_placement.assigned_sources) != sources:
                await first.poll(100, timeout=0.2)
            second = await bus.consumer("g", second_placement)
            deadline = time.monotonic() + 30
            while set(second_placement.assigned_sources) != sources:
                assert time.monotonic() < deadline, second_placement.assigned_sources
                await second.poll(100, timeout=0.2)
            deadline = time.monotonic() + 30
            with pytest.raises(ConsumerLost, match="fenced"):
                while time.monotonic() < deadline:
                    await asyncio.gather(
                        first.poll(100, timeout=0.2), second.poll(100, timeout=0.2)
                    )
            await first.close()
            await second.close()


def test_the_settings_give_the_bus_its_linger_and_fetch_wait() -> None:
    settings = load_settings(
        None, kafka_bootstrap="127.0.0.1:9092", kafka_linger_ms=3, kafka_fetch_wait_ms=4
    )
    bus = create_bus(settings)
    assert isinstance(bus, KafkaBus)
    assert (bus.linger_ms, bus.fetch_wait_ms) == (3, 4)
    defaults = create_bus(load_settings(None, kafka_bootstrap="127.0.0.1:9092"))
    assert isinstance(defaults, KafkaBus)
    assert (defaults.linger_ms, defaults.fetch_wait_ms) == (10, 10)


def test_a_cluster_id_never_starts_with_a_dash() -> None:
    """Kafka's storage tool reads an id starting with '-' as an option: draw another."""
    from harness.engines import kafka_cluster_id

    draws = iter([b"\xf8" + bytes(15), bytes(16)])  # 0xf8... encodes to "-A..."
    assert kafka_cluster_id(lambda n: next(draws)) == "A" * 22
    ids = {kafka_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000 and not any(i.startswith("-") for i in ids)
