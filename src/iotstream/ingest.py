"""Ingest: MQTT messages in, parsed batches onto the bus.

The MQTT connection (``subscriber``) collects what arrives; one flusher task takes
whatever has accumulated, parses it and publishes it as one batch. Under load, batches
grow by themselves while the flusher awaits the bus, so no timer is needed.

With ``ack_after_publish`` (the bridge), a QoS 1 message is acknowledged to the
broker only once the batch holding it is on the bus: a bridge killed mid-stream
leaves its unacknowledged messages with the broker, which delivers them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from . import metrics
from .bus import Bus
from .config import MqttEndpoint
from .errors import BusError
from .health import Health
from .lifecycle import Component, cancel_all
from .models import Batch
from .parser import Parser
from .subscriber import Subscriber

log = logging.getLogger(__name__)


MAX_BACKOFF = 5.0
MAX_IN_FLIGHT = 8
"""Batches that may await the bus's confirmation at once."""
STOP_TIMEOUT = 10.0


class Ingest(Component):
    def __init__(
        self,
        endpoint: MqttEndpoint,
        topics: list[str],
        qos: int,
        parser: Parser,
        bus: Bus,
        *,
        ack_after_publish: bool = False,
        client_id: str | None = None,
        share_group: str | None = None,
    ) -> None:
        self.parser = parser
        self.bus = bus
        metrics.zero(metrics.BUS_PUBLISHED, list(metrics.KIND_LABELS.values()))
        self.received = 0
        self.bus_failures = 0
        self._wakeup = asyncio.Event()
        if share_group:
            topics = [f"$share/{share_group}/{topic}" for topic in topics]
        self.connection = Subscriber(
            endpoint,
            "ingest",
            topics,
            qos,
            self._wakeup.set,
            client_id=client_id,
            clean_session=client_id is None,
            acknowledge_on_receipt=not ack_after_publish,
        )
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        # While the bus refuses batches, new ones wait, so none overtakes a refused one.
        self._bus_open = asyncio.Event()
        self._bus_open.set()
        self._refused = 0
        self._previous: asyncio.Future[None] | None = None
        self._publishing: set[asyncio.Task[None]] = set()
        self._flusher: asyncio.Task[None] | None = None
        self._logged_reasons: set[str] = set()

    async def _flush(self) -> None:
        """Parse what has accumulated and start publishing it as one batch."""
        # Several batches may await the bus's confirmation at once: waiting for each in
        # turn would cap throughput at one batch per round trip. A slot is taken before the
        # messages, so they keep accumulating while all slots are busy, and a stop that
        # cancels this wait leaves them pending for the last flush.
        await self._in_flight.acquire()
        messages, acks, connection = self.connection.take()
        if not messages:
            self._in_flight.release()
            return
        published = asyncio.get_running_loop().create_future()
        if acks:
            published.add_done_callback(lambda _: self.connection.acknowledge(acks, connection))
        self.received += len(messages)
        batch = self.parser.parse_batch(messages)
        metrics.received(len(messages), batch.rejected)
        for rejected in batch.rejected:
            if rejected.reason not in self._logged_reasons:
                # Once per reason: a flood of bad input must not flood the log.
                self._logged_reasons.add(rejected.reason)
                log.warning(
                    "rejected a message on %r: %s (%s); further '%s' rejections are "
                    "only counted, see GET /api/deadletters",
                    rejected.topic,
                    rejected.reason,
                    rejected.detail,
                    rejected.reason,
                )
        # Tasks start in creation order, so batches reach the bus in the order they arrived;
        # a refused batch holds back the ones after it until the bus took it.
        previous, self._previous = self._previous, published
        task = asyncio.create_task(self._publish(batch, published, previous), name="ingest-publish")
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def _publish(
        self,
        batch: Batch,
        published: asyncio.Future[None],
        previous: asyncio.Future[None] | None,
    ) -> None:
        """Put ``batch`` on the bus, retrying until it takes it; ``previous`` is the batch
        before it, which a refused batch waits for before it tries again (order per device)."""
        try:
            started = time.perf_counter()
            await self._bus_open.wait()
            try:
                await self.bus.publish(batch)
            except BusError as exc:
                self._refused += 1
                self._bus_open.clear()
                try:
                    await self._retry(batch, previous, exc)
                finally:
                    self._refused -= 1
                    if self._refused == 0:
                        self._bus_open.set()
            metrics.published(batch, time.perf_counter() - started)
            published.set_result(None)
        finally:
            self._in_flight.release()

    async def _retry(
        self, batch: Batch, previous: asyncio.Future[None] | None, error: BusError
    ) -> None:
        backoff = 0.1
        while True:
            # Nothing is acknowledged meanwhile: the broker keeps what it handed over.
            self.bus_failures += 1
            log.error("bus refused a batch of %d, retrying: %s", len(batch), error)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)
            if previous is not None:
                await asyncio.shield(previous)
            try:
                await self.bus.publish(batch)
                return
            except BusError as exc:
                error = exc

    async def _flush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await self._flush()

    async def start(self) -> None:
        self._flusher = asyncio.create_task(self._flush_forever(), name="ingest-flusher")
        await self.connection.start()

    async def stop(self) -> None:
        await self.connection.stop()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        await self._flush()  # what arrived before the disconnect
        if self._publishing:
            await asyncio.wait(self._publishing, timeout=STOP_TIMEOUT)
        await cancel_all(self._publishing)

    def health(self) -> Health:
        return self.connection.health()
