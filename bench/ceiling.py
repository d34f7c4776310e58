"""The ceiling: the bench's generator against a bare Mosquitto with one subscriber that only
counts.

Mosquitto gets the settings of the broker ``iotstream run`` manages (queues included), on a
free loopback port, and the subscriber is gmqtt, the MQTT client of the server's ingest, so
the ceiling is what the same machine moves from the same generator through the same broker
into one Python process that does nothing with the messages.
"""

from __future__ import annotations

import asyncio
import time
from multiprocessing.connection import Connection
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from harness import Service, free_port, start_mosquitto

from .errors import BenchError
from .generator import HOST
from .workers import CONTEXT, Worker, next_message, run_worker

PUBLISH_EVERY = 0.05
"""How often the subscriber publishes its count to the bench (seconds)."""


def mosquitto_config(port: int) -> str:
    return (
        f"listener {port} {HOST}\n"
        "allow_anonymous true\n"
        "persistence false\n"
        "max_queued_messages 1000000\n"
        "max_inflight_messages 1000\n"
        "log_dest stderr\n"
        "log_type error\n"
        "log_type warning\n"
    )


async def _count(pipe: Connection, port: int, counter: Any, patience: float) -> None:
    from gmqtt import Client
    from gmqtt.mqtt.constants import MQTTv311

    received = 0

    def on_message(client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        nonlocal received
        received += 1
        return 0

    subscribed = asyncio.Event()
    client = Client(f"bench-counter-{time.monotonic_ns()}")
    client.on_message = on_message
    client.on_subscribe = lambda *args: subscribed.set()
    await asyncio.wait_for(client.connect(HOST, port, keepalive=60, version=MQTTv311), 30)
    client.subscribe("sensors/#", qos=0)
    await asyncio.wait_for(subscribed.wait(), 30)
    pipe.send(("ready", {}))
    stop = asyncio.ensure_future(next_message(pipe, patience))
    while not stop.done():
        counter.value = received
        await asyncio.wait({stop}, timeout=PUBLISH_EVERY)
    counter.value = received
    await client.disconnect()
    pipe.send(("report", {"received": received}))


def _counter_main(pipe: Connection, port: int, counter: Any, patience: float) -> None:
    run_worker(pipe, _count(pipe, port, counter, patience))


class BareBroker:
    """A private Mosquitto and the counting subscriber, for the whole ceiling run."""

    def __init__(self, workdir: Path, patience: float) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.broker: Service | None = None
        self.counter: Any = None
        self.subscriber: Worker | None = None
        self.patience = patience

    @property
    def received(self) -> int:
        return int(self.counter.value)

    @property
    def pids(self) -> dict[str, int]:
        assert self.broker is not None and self.subscriber is not None
        return {"mosquitto": self.broker.pid, "subscriber": self.subscriber.pid}

    def __enter__(self) -> Self:
        try:
            self.broker = start_mosquitto(self.port, self.workdir, mosquitto_config(self.port))
            self.counter = CONTEXT.Value("q", 0, lock=False)
            self.subscriber = Worker(
                "subscriber", _counter_main, self.port, self.counter, self.patience
            )
            self.subscriber.start()
            self.subscriber.expect("ready", time.monotonic() + 30)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.subscriber is not None:
            try:
                self.subscriber.send("stop")
                self.subscriber.expect("report", time.monotonic() + 5)
            except (BenchError, OSError):
                pass
            self.subscriber.stop()
        if self.broker is not None:
            self.broker.stop()
