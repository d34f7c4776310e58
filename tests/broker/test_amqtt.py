"""The in-process amqtt broker against the broker suite."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Iterator

import pytest

from harness import free_port
from iotstream.broker import AmqttBroker

from .suite import BrokerSuite, MakeBroker


class TestAmqttBroker(BrokerSuite):
    @pytest.fixture
    def make_broker(self) -> Iterator[MakeBroker]:
        yield lambda port: AmqttBroker("127.0.0.1", port)

    async def test_start_and_stop_leave_no_socket_open(self, make_broker: MakeBroker) -> None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            async with make_broker(free_port()) as broker:
                assert broker.health().ok
            gc.collect()
        leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
        assert leaks == []
