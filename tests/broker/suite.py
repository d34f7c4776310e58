"""The broker contract, written once. A backend's test module subclasses ``BrokerSuite``
and provides a ``make_broker`` fixture: a function that makes an unstarted broker of
that backend on ``127.0.0.1`` and the port it is given."""

from __future__ import annotations

import contextlib
import socket
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from harness import free_port
from iotstream.broker import Broker
from iotstream.errors import BrokerError

from .client import MqttClient

MakeBroker = Callable[[int], Broker]


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def unique_topic(name: str) -> str:
    return f"test/{uuid.uuid4().hex[:12]}/{name}"


class BrokerSuite:
    @pytest.fixture
    async def broker(self, make_broker: MakeBroker) -> AsyncIterator[Broker]:
        """A started broker on a free port, stopped after the test."""
        broker = make_broker(free_port())
        async with broker:
            yield broker

    async def test_start_returns_once_it_accepts_connections(self, make_broker: MakeBroker) -> None:
        port = free_port()
        broker = make_broker(port)
        assert not accepts_connections(port)
        # No retry: start() promised the listener is up. (An MQTT client, not a bare TCP
        # probe: amqtt never closes a connection that sends no CONNECT.)
        async with broker, MqttClient(port) as client:
            assert client.client.is_connected

    @pytest.mark.parametrize("qos", [0, 1])
    async def test_subscribers_receive_what_is_published_in_order(
        self, broker: Broker, qos: int
    ) -> None:
        topic = unique_topic("coordinates")
        async with MqttClient(broker.port) as subscriber, MqttClient(broker.port) as publisher:
            assert await subscriber.subscribe(topic, qos) == qos
            for n in range(20):
                publisher.publish(topic, f'{{"seq": {n}}}', qos=qos)
            await publisher.drain()
            got = await subscriber.receive(20)
        assert [m.payload for m in got] == [f'{{"seq": {n}}}'.encode() for n in range(20)]
        assert {(m.topic, m.qos, m.retain) for m in got} == {(topic, qos, False)}

    async def test_a_subscriber_gets_only_the_topics_it_asked_for(self, broker: Broker) -> None:
        prefix = unique_topic("sensors")
        async with MqttClient(broker.port) as subscriber, MqttClient(broker.port) as publisher:
            await subscriber.subscribe(f"{prefix}/+/coordinates", 1)
            publisher.publish(f"{prefix}/r1/coordX", "1.5", qos=1)
            publisher.publish(f"{prefix}/r1/coordinates", "first", qos=1)
            publisher.publish(f"{prefix}/r2/coordinates", "second", qos=1)
            await publisher.drain()
            got = await subscriber.receive(2)
            # A marker published after the others: had coordX been delivered, it would
            # have come before the marker.
            await subscriber.subscribe(f"{prefix}/marker", 1)
            publisher.publish(f"{prefix}/marker", "marker", qos=1)
            [after] = await subscriber.receive(1)
        assert [(m.topic, m.payload) for m in got] == [
            (f"{prefix}/r1/coordinates", b"first"),
            (f"{prefix}/r2/coordinates", b"second"),
        ]
        assert after.payload == b"marker"

    async def test_the_newest_retained_message_goes_to_later_subscribers(
        self, broker: Broker
    ) -> None:
        topic = unique_topic("status")
        async with MqttClient(broker.port) as publisher:
            publisher.publish(topic, "old", qos=1, retain=True)
            publisher.publish(topic, "new", qos=1, retain=True)
            await publisher.drain()
            async with MqttClient(broker.port) as late:
                await late.subscribe(topic, 1)
                [retained] = await late.receive(1)
                publisher.publish(topic, "live", qos=1)
                [live] = await late.receive(1)
        assert (retained.payload, retained.retain) == (b"new", True)
        # A message published while the subscriber listens is not flagged as retained.
        assert (live.payload, live.retain) == (b"live", False)

    async def test_an_empty_retained_message_clears_it(self, broker: Broker) -> None:
        topic = unique_topic("status")
        async with MqttClient(broker.port) as publisher:
            publisher.publish(topic, "kept", qos=1, retain=True)
            publisher.publish(topic, b"", qos=1, retain=True)
            await publisher.drain()
            async with MqttClient(broker.port) as late:
                await late.subscribe(topic, 1)
                # A retained message is sent on subscription, before anything published
                # after the SUBACK: the first message must be this one.
                publisher.publish(topic, "live", qos=1)
                [first] = await late.receive(1)
        assert first.payload == b"live"

    async def test_health_is_up_while_running_and_down_after_stop(
        self, make_broker: MakeBroker
    ) -> None:
        port = free_port()
        broker = make_broker(port)
        assert broker.health().as_dict()["status"] == "DOWN"
        async with broker:
            health = broker.health()
            assert health.as_dict()["status"] == "UP"
            assert str(port) in health.detail
        assert broker.health().as_dict()["status"] == "DOWN"

    async def test_stop_frees_the_port(self, make_broker: MakeBroker) -> None:
        port = free_port()
        async with make_broker(port), MqttClient(port) as client:
            client.publish(unique_topic("x"), "connected while the broker stops", qos=1)
            await client.drain()
        assert not accepts_connections(port)
        # The port is free for the next broker, even right after clients were connected.
        async with make_broker(port) as again, MqttClient(port) as client:
            assert again.health().ok
            assert client.client.is_connected

    async def test_a_port_already_taken_raises_broker_error(self, make_broker: MakeBroker) -> None:
        with socket.socket() as other_server:
            other_server.bind(("127.0.0.1", 0))
            other_server.listen()
            broker = make_broker(other_server.getsockname()[1])
            try:
                with pytest.raises(BrokerError):
                    await broker.start()
            finally:
                # Whatever start() left running must not outlive the test; whether stop()
                # after a failed start raises is the next test's business.
                with contextlib.suppress(Exception):
                    await broker.stop()
        assert not broker.health().ok

    async def test_stop_after_a_failed_start_is_harmless(self, make_broker: MakeBroker) -> None:
        """Cleanup code stops what it tried to start; that must not raise a second error."""
        with socket.socket() as other_server:
            other_server.bind(("127.0.0.1", 0))
            broker = make_broker(other_server.getsockname()[1])
            with pytest.raises(BrokerError):
                await broker.start()
            await broker.stop()
        assert not broker.health().ok
