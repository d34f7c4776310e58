"""The managed mosquitto child process against the broker suite, and its supervision.

That the child dies with a killed server (PR_SET_PDEATHSIG) is checked end to end by
``tests/test_e2e.py::test_the_broker_does_not_outlive_a_killed_server``."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest

from harness import free_port
from iotstream.broker import MosquittoBroker
from iotstream.config import MqttEndpoint
from iotstream.mqtt import MqttConnection

from ..conftest import require
from ..faults import wait_until
from .client import MqttClient
from .suite import BrokerSuite, MakeBroker


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TestMosquittoBroker(BrokerSuite):
    @pytest.fixture
    def make_broker(self, tmp_path: Path) -> MakeBroker:
        binary = require("mosquitto")
        return lambda port: MosquittoBroker("127.0.0.1", port, tmp_path / "mosquitto", binary)

    async def test_a_killed_mosquitto_is_restarted_and_clients_reconnect(
        self, make_broker: MakeBroker
    ) -> None:
        port = free_port()
        topic = f"test/{uuid.uuid4().hex[:12]}/commands"
        received: asyncio.Queue[bytes] = asyncio.Queue()

        def on_message(client: object, topic: str, payload: bytes, qos: int, props: object) -> int:
            received.put_nowait(payload)
            return 0

        broker = make_broker(port)
        assert isinstance(broker, MosquittoBroker)
        async with broker:
            first_pid = broker.pid
            assert first_pid is not None
            listener = MqttConnection(
                MqttEndpoint("127.0.0.1", port),
                "listener",
                subscriptions=[topic],
                qos=1,
                on_message=on_message,
            )
            async with listener:
                assert listener.health().ok
                os.kill(first_pid, signal.SIGKILL)
                await wait_until(lambda: not broker.health().ok, "health shows mosquitto down")
                assert "not running" in broker.health().detail
                await wait_until(lambda: broker.restarts == 1, "mosquitto was restarted")
                assert broker.health().ok
                assert broker.pid not in (None, first_pid)
                assert f"pid {broker.pid}" in broker.health().detail
                assert "restarts: 1" in broker.health().detail
                # The package's own client comes back by itself and subscribes again.
                await wait_until(
                    lambda: listener.disconnects == 1 and listener.health().ok,
                    "the client reconnected",
                )
                async with MqttClient(port) as publisher:
                    # Its SUBSCRIBE may still be on the way: publish until one arrives.
                    loop = asyncio.get_running_loop()
                    deadline = loop.time() + 20
                    while received.empty():
                        assert loop.time() < deadline, "the reconnected client never resubscribed"
                        publisher.publish(topic, "after restart", qos=1)
                        await publisher.drain()
                        await asyncio.sleep(0.05)
                    assert await received.get() == b"after restart"
            second_pid = broker.pid
        assert broker.pid is None
        assert second_pid is not None and not running(second_pid)
        assert not running(first_pid)

    async def test_a_persistent_session_gets_what_was_published_while_it_was_away(
        self, make_broker: MakeBroker
    ) -> None:
        # What a bridge with ack_after_publish relies on. amqtt keeps nothing for an
        # anonymous client's offline session, so this holds for mosquitto only.
        topic = f"test/{uuid.uuid4().hex[:12]}/commands"
        client_id = f"test-persistent-{uuid.uuid4().hex[:8]}"
        async with make_broker(free_port()) as broker:
            async with MqttClient(broker.port, client_id, clean_session=False) as device:
                await device.subscribe(topic, 1)
            async with MqttClient(broker.port) as publisher:
                publisher.publish(topic, "while away", qos=1)
                await publisher.drain()
            async with MqttClient(broker.port, client_id, clean_session=False) as device:
                [queued] = await device.receive(1)
        assert (queued.topic, queued.payload, queued.qos) == (topic, b"while away", 1)

    async def test_stop_ends_the_child_process(self, make_broker: MakeBroker) -> None:
        broker = make_broker(free_port())
        assert isinstance(broker, MosquittoBroker)
        async with broker:
            pid = broker.pid
            assert pid is not None and running(pid)
        assert broker.pid is None
        assert not running(pid)
