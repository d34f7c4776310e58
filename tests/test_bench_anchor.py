"""The bridge-alone bench (``bench.anchor``) reads what each bridge wrote on a real Kafka: the
messages in ``iotstream bridge``'s packed records and in Telegraf's JSON ones, their latency
from the generator's ``sent`` to Kafka's append time, and when the topic stopped growing.
(The bench itself builds Telegraf from the Go module proxy; it runs in ``make bench``'s time,
not here.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Producer

import harness
from bench.anchor import Growth, Topic, iotstream_sent, telegraf_sent
from iotstream.bus.kafka_codec import UNASSIGNED, encode_batch
from iotstream.models import Batch, DeviceId, Reading

pytestmark = [pytest.mark.kafka]

LONG_AGO_MS = 1_000
"""A producer timestamp far in the past: with the broker's append time it is not the one read."""


@pytest.fixture
def topic(kafka: harness.Service) -> Iterator[Topic]:
    topic = Topic(kafka.address, f"anchor-{uuid.uuid4().hex[:8]}")
    yield topic
    topic.close()


def produce(bootstrap: str, topic: Topic, records: list[tuple[bytes | None, bytes, int]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for key, value, partition in records:
        extra = {} if partition == UNASSIGNED else {"partition": partition}
        producer.produce(topic.name, value, key, timestamp=LONG_AGO_MS, **extra)
    assert producer.flush(30) == 0


def reading(device: str, sent: float | None) -> Reading:
    fields = {"x": 1.0, "y": 2.0} if sent is None else {"x": 1.0, "y": 2.0, "sent": sent}
    return Reading(DeviceId.parse(device), fields, time.time(), time.time())


def test_the_readings_in_iotstreams_records_and_their_latency(
    kafka: harness.Service, topic: Topic
) -> None:
    probe = reading("anchor-probe", None)
    first = encode_batch(Batch(readings=[probe]), topic.partitions).live
    produce(kafka.address, topic, first)
    assert topic.count(iotstream_sent) == 1
    assert topic.latency.count == 0

    sent = time.time() - 0.05
    readings = [reading(f"robot-{i}", sent) for i in range(40)]
    records = encode_batch(Batch(readings=readings), topic.partitions).live
    assert len(records) < len(readings)  # packed, a record per partition
    produce(kafka.address, topic, records)
    assert topic.count(iotstream_sent, since=sent) == 41
    assert topic.latency.count == 40
    # From ``sent`` to the broker's append, not to the producer's timestamp.
    p50 = topic.latency.summary()["p50Ms"]
    assert 50 <= p50 < 30_000
    assert topic.count(iotstream_sent) == 41  # nothing new


def test_telegrafs_json_records_are_a_message_each(kafka: harness.Service, topic: Topic) -> None:
    sent = time.time()
    metrics = [
        {
            "fields": {"x": 1.0, "y": 2.0, "sent": sent, "seq": n},
            "name": "mqtt_consumer",
            "tags": {"topic": f"sensors/robot-{n}/coordinates"},
            "timestamp": int(sent),
        }
        for n in range(25)
    ]
    produce(kafka.address, topic, [(None, orjson.dumps(m), UNASSIGNED) for m in metrics])
    assert topic.count(telegraf_sent, since=sent + 3600) == 25  # none sent since then
    assert topic.latency.count == 0


def test_the_topic_is_drained_when_it_stops_growing(kafka: harness.Service, topic: Topic) -> None:
    with Growth(kafka.address, topic.name, topic.partitions) as growth:
        last_write = time.time()
        time.sleep(0.3)
        probe = encode_batch(Batch(readings=[reading("anchor-probe", None)]), topic.partitions)
        produce(kafka.address, topic, probe.live)
        produced = time.time()
        drained = growth.drained(last_write)
    assert drained is not None
    assert 0.3 <= drained <= produced - last_write + 1.0
