"""The ingest's MQTT subscriber against a real Mosquitto: every QoS exactly as sent, large
payloads split across reads, bounded memory when nobody takes what arrived, deferred
acknowledgements, reconnecting after the broker restarts, accounts and TLS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from harness import free_port
from iotstream.broker import Accounts, MosquittoBroker, TlsListener
from iotstream.broker.accounts import INGEST
from iotstream.config import MqttEndpoint
from iotstream.subscriber import Message, Subscriber

from .broker.client import MqttClient
from .conftest import require
from .faults import wait_until
from .security.certs import make_certificates

MakeSubscriber = Callable[..., Subscriber]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
async def broker(tmp_path: Path, port: int) -> AsyncIterator[MosquittoBroker]:
    async with MosquittoBroker(
        "127.0.0.1", port, tmp_path / "mosquitto", require("mosquitto")
    ) as b:
        yield b


@pytest.fixture
async def publisher(broker: MosquittoBroker) -> AsyncIterator[MqttClient]:
    async with MqttClient(broker.port) as client:
        yield client


@pytest.fixture
def make_subscriber(port: int) -> MakeSubscriber:
    def make(**options: object) -> Subscriber:
        options.setdefault("on_arrival", lambda: None)
        return Subscriber(MqttEndpoint("127.0.0.1", port), "test", ["#"], 2, **options)  # type: ignore[arg-type]

    return make


async def take_until(subscriber: Subscriber, count: int, timeout: float = 20.0) -> list[Message]:
    """Everything taken until ``count`` messages arrived (fails after ``timeout``)."""
    taken: list[Message] = []

    def arrived() -> bool:
        taken.extend(subscriber.take()[0])
        return len(taken) >= count

    await wait_until(arrived, f"{count} messages arrived", timeout)
    return taken


async def test_each_qos_arrives_once_with_topic_and_payload_as_sent(
    broker: MosquittoBroker, publisher: MqttClient, make_subscriber: MakeSubscriber
) -> None:
    async with make_subscriber() as subscriber:
        sent = []
        for seq in range(300):
            topic, payload = f"sensors/r{seq % 7}/coordinates", b"%d" % seq
            sent.append((topic, payload))
            publisher.publish(topic, payload, qos=seq % 3)
        big = bytes(range(256)) * 4096  # 1 MiB: arrives in many reads
        sent.append(("files/large", big))
        publisher.publish("files/large", big, qos=1)
        await publisher.drain()
        taken = await take_until(subscriber, len(sent))
        await asyncio.sleep(0.3)  # a QoS 2 message delivered twice would show up now
        taken += subscriber.take()[0]
    # Each QoS keeps its own order; across them the publisher's handshakes may reorder.
    assert sorted((topic, payload) for topic, payload, _ in taken) == sorted(sent)
    assert all(isinstance(payload, bytes) for _, payload, _ in taken)


async def test_memory_stays_bounded_while_nobody_takes(
    broker: MosquittoBroker, publisher: MqttClient, make_subscriber: MakeSubscriber
) -> None:
    """Past ``max_pending`` it stops reading; the broker holds the rest until ``take``."""
    async with make_subscriber(max_pending=50) as subscriber:
        for seq in range(2000):
            publisher.publish("sensors/r1/coordinates", b"%d" % seq, qos=1)
        await publisher.drain()
        await wait_until(lambda: len(subscriber._messages) >= 50, "the first messages arrived")
        await asyncio.sleep(0.5)
        held = len(subscriber._messages)
        taken = await take_until(subscriber, 2000)
    # One read's worth may come on top of the bound, never all of it.
    assert 50 <= held < 2000
    assert [payload for _, payload, _ in taken] == [b"%d" % seq for seq in range(2000)]


async def test_unacknowledged_messages_come_again_on_the_next_session(
    broker: MosquittoBroker, publisher: MqttClient, make_subscriber: MakeSubscriber
) -> None:
    """With ``acknowledge_on_receipt=False`` only ``acknowledge`` settles a message."""
    persistent = {"client_id": "test-deferred", "clean_session": False}
    async with make_subscriber(acknowledge_on_receipt=False, **persistent) as first:
        pass  # the persistent session and its subscription exist from now on
    publisher.publish("sensors/r1/coordinates", b"1", qos=1)
    publisher.publish("sensors/r1/coordinates", b"2", qos=1)
    await publisher.drain()
    async with make_subscriber(acknowledge_on_receipt=False, **persistent) as first:
        taken = await take_until(first, 2)
    assert [payload for _, payload, _ in taken] == [b"1", b"2"]
    async with make_subscriber(acknowledge_on_receipt=False, **persistent) as second:
        messages: list[Message] = []
        acks: list[int] = []
        generation = 0

        def took() -> bool:
            nonlocal generation
            more, more_acks, generation = second.take()
            messages.extend(more)
            acks.extend(more_acks)
            return len(messages) >= 2

        await wait_until(took, "the broker delivered them again")
        second.acknowledge(acks, generation)  # written before the DISCONNECT of leaving
    assert [payload for _, payload, _ in messages] == [b"1", b"2"]
    async with make_subscriber(acknowledge_on_receipt=False, **persistent) as third:
        await asyncio.sleep(0.5)
        assert third.take()[0] == []


async def test_messages_sent_again_before_the_subscription_is_confirmed_are_acknowledged(
    broker: MosquittoBroker, publisher: MqttClient, make_subscriber: MakeSubscriber
) -> None:
    """The broker sends a persistent session's unacknowledged messages again right after
    CONNACK, before it confirmed the subscription. Taken at once, as the ingest takes what
    arrives, their acknowledgements count for this connection: otherwise the broker keeps
    them in flight, and sends them yet again on the next connection."""
    persistent = {"client_id": "test-early", "clean_session": False}
    async with make_subscriber(acknowledge_on_receipt=False, **persistent):
        pass  # the persistent session and its subscription exist from now on
    publisher.publish("sensors/r1/coordinates", b"1", qos=1)
    publisher.publish("sensors/r1/coordinates", b"2", qos=1)
    await publisher.drain()
    async with make_subscriber(acknowledge_on_receipt=False, **persistent) as first:
        await take_until(first, 2)  # never acknowledged: they stay in flight

    again: list[Message] = []

    def take_and_acknowledge() -> None:
        messages, acks, generation = early.take()
        again.extend(messages)
        early.acknowledge(acks, generation)

    early = make_subscriber(
        acknowledge_on_receipt=False, on_arrival=take_and_acknowledge, **persistent
    )
    async with early:
        await wait_until(lambda: len(again) >= 2, "the broker delivered them again")
    assert [payload for _, payload, _ in again] == [b"1", b"2"]
    publisher.publish("sensors/r1/coordinates", b"3", qos=1)  # queued for the session
    await publisher.drain()
    async with make_subscriber(acknowledge_on_receipt=False, **persistent) as last:
        taken = await take_until(last, 1)
    assert [payload for _, payload, _ in taken] == [b"3"]


async def test_it_reconnects_after_the_broker_restarts(
    tmp_path: Path, port: int, make_subscriber: MakeSubscriber
) -> None:
    binary = require("mosquitto")
    subscriber = make_subscriber()
    async with MosquittoBroker("127.0.0.1", port, tmp_path / "one", binary):
        await subscriber.start()
        assert subscriber.health().ok
    await wait_until(lambda: not subscriber.is_connected, "it noticed the broker went away")
    assert not subscriber.health().ok
    try:
        async with MosquittoBroker("127.0.0.1", port, tmp_path / "two", binary) as broker:
            await wait_until(lambda: subscriber.is_connected, "it connected again", 10)
            async with MqttClient(broker.port) as publisher:
                publisher.publish("sensors/r1/coordinates", b"after", qos=1)
                await publisher.drain()
                taken = await take_until(subscriber, 1)
            await subscriber.stop()  # before this broker stops too
    finally:
        await subscriber.stop()
    assert subscriber.disconnects == 1
    assert [payload for _, payload, _ in taken] == [b"after"]


async def test_it_logs_in_over_tls_and_says_when_it_is_refused(tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "certs")
    workdir = tmp_path / "mosquitto"
    tls = TlsListener(free_port(), certificates.cert, certificates.key)
    broker = MosquittoBroker(
        "127.0.0.1", free_port(), workdir, require("mosquitto"), accounts=Accounts(workdir), tls=tls
    )
    async with broker:
        robot = Accounts(workdir).add_device("robot7")
        Accounts(workdir).reload()
        ingest = broker.client_endpoint(INGEST)
        secure = MqttEndpoint("127.0.0.1", tls.port, ingest.username, ingest.password, tls=True)
        context = certificates.client_context()
        subscriber = Subscriber(secure, "test", ["sensors/#"], 1, lambda: None, tls=context)
        async with subscriber:
            assert subscriber.is_connected
            async with MqttClient(
                tls.port, username=robot.username, password=robot.password, tls=context
            ) as device:
                device.publish("sensors/robot7/coordinates", b"over tls", qos=1)
                await device.drain()
                taken = await take_until(subscriber, 1)
        assert [payload for _, payload, _ in taken] == [b"over tls"]
        wrong = MqttEndpoint("127.0.0.1", tls.port, ingest.username, "not the password", tls=True)
        refused = Subscriber(wrong, "test", ["sensors/#"], 1, lambda: None, tls=context)
        async with refused:
            assert refused.refusal is not None  # start returns once the broker said no
            assert not refused.is_connected
            assert "CONNECT refused: not authorized" in refused.health().detail
