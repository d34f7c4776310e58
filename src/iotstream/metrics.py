"""Prometheus metrics: every series iotstream exposes is defined here, and only this module
imports ``prometheus_client``.

Each process counts what it did itself (per instance): a store-wide total would be counted
again by every instance. Prometheus' ``job`` and ``instance`` labels say which role and which
process a series comes from, so only ``iotstream_build_info`` carries the role.

The hot paths observe once per batch, never per message: a counter goes up by a batch's count
and a histogram gets one observation per batch. Series of state (connections, components,
lags, devices) are read when ``/metrics`` is scraped (``exposition``), and only a process
that has the part they describe shows them: a processor has no ``iotstream_mqtt_connected``.
"""

from __future__ import annotations

import asyncio
import logging
import platform
import time
from collections import Counter as Tally
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .errors import BusError
from .models import EVENT_KINDS, Batch, CommandReply, Event, RawMessage, Reading, Rejected

if TYPE_CHECKING:
    from .bus import Consumer
    from .health import Health

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text format; every name here is plain ASCII, so the classic version."""

# The `_created` series double the output and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]
REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

SIZE_BUCKETS = (1, 10, 100, 500, 1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000, 200_000)
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
SLOW_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

BUILD_INFO = Gauge(
    "iotstream_build_info",
    "Always 1: the version, the Python and the roles (comma-joined) of this process.",
    ["version", "python", "role"],
    registry=REGISTRY,
)
MQTT_RECEIVED = Counter(
    "iotstream_mqtt_messages_received_total",
    "MQTT messages the ingest of this process received.",
    registry=REGISTRY,
)
PARSE_REJECTS = Counter(
    "iotstream_parse_rejects_total",
    "Messages the parser rejected, by reason.",
    ["reason"],
    registry=REGISTRY,
)
BUS_PUBLISHED = Counter(
    "iotstream_bus_published_events_total",
    "Events this process published to the bus, by kind.",
    ["kind"],
    registry=REGISTRY,
)
BUS_PUBLISH_BATCHES = Counter(
    "iotstream_bus_publish_batches_total",
    "Batches this process published to the bus.",
    registry=REGISTRY,
)
BUS_PUBLISH_BATCH_SIZE = Histogram(
    "iotstream_bus_publish_batch_size_events",
    "Events per batch published to the bus.",
    buckets=SIZE_BUCKETS,
    registry=REGISTRY,
)
BUS_PUBLISH_DURATION = Histogram(
    "iotstream_bus_publish_duration_seconds",
    "Seconds to get a batch onto the bus (Kafka: until every record is acknowledged), "
    "retries included.",
    buckets=FAST_BUCKETS,
    registry=REGISTRY,
)
BUS_CONSUMED = Counter(
    "iotstream_bus_consumed_events_total",
    "Events this process took from the bus, by consumer group.",
    ["group"],
    registry=REGISTRY,
)
BUS_CONSUME_BATCHES = Counter(
    "iotstream_bus_consume_batches_total",
    "Batches this process took from the bus, by consumer group.",
    ["group"],
    registry=REGISTRY,
)
BUS_CONSUME_BATCH_SIZE = Histogram(
    "iotstream_bus_consume_batch_size_events",
    "Events per batch taken from the bus, by consumer group.",
    ["group"],
    buckets=SIZE_BUCKETS,
    registry=REGISTRY,
)
STORE_WRITE = Histogram(
    "iotstream_store_write_duration_seconds",
    "Seconds of one store apply of a batch (Redis: one script call).",
    buckets=FAST_BUCKETS,
    registry=REGISTRY,
)
WEBSOCKET_FRAMES = Counter(
    "iotstream_websocket_frames_sent_total",
    "WebSocket frames broadcast, one per client per broadcast.",
    registry=REGISTRY,
)
WEBSOCKET_RESETS = Counter(
    "iotstream_websocket_resets_total",
    "WebSocket clients that fell behind and lost their backlog (sent a fresh snapshot).",
    registry=REGISTRY,
)
COMMANDS = Counter(
    "iotstream_commands_total",
    "Command state transitions this process saw, by the state entered "
    "(expired: closed by its TTL).",
    ["state"],
    registry=REGISTRY,
)
LAKE_ROWS = Counter(
    "iotstream_lake_rows_written_total",
    "Rows the archiver committed to the lake, by table.",
    ["table"],
    registry=REGISTRY,
)
LAKE_COMMIT = Histogram(
    "iotstream_lake_commit_duration_seconds",
    "Seconds of one archiver flush to the lake (all its tables), retries included.",
    buckets=SLOW_BUCKETS,
    registry=REGISTRY,
)
HTTP_DURATION = Histogram(
    "iotstream_http_request_duration_seconds",
    "Seconds to answer an HTTP request, by method, route template and status.",
    ["method", "route", "status"],
    buckets=FAST_BUCKETS,
    registry=REGISTRY,
)

KIND_LABELS: dict[type[Event], str] = {
    Reading: "reading",
    RawMessage: "raw",
    Rejected: "rejected",
    CommandReply: "command_reply",
}
"""The ``kind`` label of each kind of event."""
assert set(KIND_LABELS) == set(EVENT_KINDS.values()), "every kind of event needs a label"


def zero(counter: Counter, labels: Sequence[str]) -> None:
    """Show ``counter`` at 0 for each of ``labels`` before its first event: Prometheus sees no
    increase in a series' first sample, so a series born at 1 hides that first event from
    ``rate``."""
    for label in labels:
        counter.labels(label)


def set_build_info(role: str) -> None:
    """``iotstream_build_info`` of a process running ``role`` (comma-joined role names)."""
    BUILD_INFO.labels(__version__, platform.python_version(), role).set(1)


# --- the pipeline, once per batch ---------------------------------------------------------


def received(messages: int, rejected: Sequence[Rejected]) -> None:
    """The ingest took ``messages`` MQTT messages, of which the parser refused ``rejected``."""
    MQTT_RECEIVED.inc(messages)
    if rejected:
        for reason, count in Tally(item.reason for item in rejected).items():
            PARSE_REJECTS.labels(reason).inc(count)


def published(batch: Batch, seconds: float) -> None:
    """``batch`` is on the bus, ``seconds`` after the ingest started to publish it."""
    for kind, label in KIND_LABELS.items():
        count = len(batch.of(kind))
        if count:
            BUS_PUBLISHED.labels(label).inc(count)
    BUS_PUBLISH_BATCHES.inc()
    BUS_PUBLISH_BATCH_SIZE.observe(len(batch))
    BUS_PUBLISH_DURATION.observe(seconds)


def lake_committed(rows: Batch, tables: Mapping[type[Event], str], seconds: float) -> None:
    """The archiver appended ``rows`` to the lake (each kind to its table) in ``seconds``."""
    for kind, table in tables.items():
        count = len(rows.of(kind))
        if count:
            LAKE_ROWS.labels(table).inc(count)
    LAKE_COMMIT.observe(seconds)


def request_done(method: str, route: str, status: int, seconds: float) -> None:
    HTTP_DURATION.labels(method, route, str(status)).observe(seconds)


def command_moved(command: Mapping[str, Any]) -> None:
    """A command moved (``Command.to_json`` after the move)."""
    COMMANDS.labels(_entered(command)).inc()


def _entered(command: Mapping[str, Any]) -> str:
    # A TTL that closes a sent or delivered command leaves its status as it was and adds no
    # transition; only its close time, later than its last transition, tells of the move.
    status: str = command["status"]
    transitions = command.get("transitions") or ()
    closed_at = command.get("closedAt")
    if closed_at is not None and transitions and closed_at > transitions[-1]["at"]:
        return "expired"
    return status


# --- consumers: what they took, and how far behind they are -------------------------------

LAG_INTERVAL = 1.0
"""Seconds a consumer lag asked of the bus is reused, so health probes and scrapes that come
close together ask it once."""
LAG_TIMEOUT = 3.0
"""Seconds a health or metrics request waits for the bus to tell a consumer lag; past it the
last known one is shown."""


@dataclass(frozen=True, slots=True)
class GroupLag:
    """How far one consumer group member of this process is behind."""

    group: str
    seconds: float
    """Pipeline lag: age of the oldest event it took and has not finished, 0 when idle."""
    partitions: Mapping[str, int] = field(default_factory=dict)
    """Consumer lag: events not committed yet, per partition it reads."""

    @property
    def events(self) -> int:
        return sum(self.partitions.values())


def _oldest(batch: Batch) -> float:
    # Each kind's events are in the order they arrived (per partition, for Kafka): the first
    # of each is enough, where a look at every event would cost per message.
    return min(events[0].received_at for events in map(batch.of, KIND_LABELS) if events)


class Consumption:
    """What one member of a consumer group (the processor, the archiver) took from the bus.

    The member calls ``took`` with each non-empty batch it polled and ``done`` once it has
    finished with all it took (committed). ``group`` is the ``group`` label: the member's
    role, whatever the Kafka group id is.
    """

    def __init__(self, group: str) -> None:
        self.group = group
        self.consumer: Consumer | None = None
        """The member's current consumer, asked for the consumer lag."""
        self._events = BUS_CONSUMED.labels(group)
        self._batches = BUS_CONSUME_BATCHES.labels(group)
        self._sizes = BUS_CONSUME_BATCH_SIZE.labels(group)
        self._oldest: float | None = None
        self._partitions: dict[str, int] = {}
        self._asked = -LAG_INTERVAL

    def took(self, batch: Batch) -> None:
        count = len(batch)
        if not count:
            return
        self._events.inc(count)
        self._batches.inc()
        self._sizes.observe(count)
        oldest = _oldest(batch)
        if self._oldest is None or oldest < self._oldest:
            self._oldest = oldest

    def done(self) -> None:
        self._oldest = None

    def pipeline_lag(self) -> float:
        oldest = self._oldest
        return 0.0 if oldest is None else max(time.time() - oldest, 0.0)

    async def lag(self) -> GroupLag:
        """The pipeline lag now and the consumer lag, asked of the bus at most every
        ``LAG_INTERVAL`` seconds; the last known one while the bus does not answer."""
        now = time.monotonic()
        consumer = self.consumer
        if consumer is not None and now - self._asked >= LAG_INTERVAL:
            self._asked = now
            try:
                self._partitions = await asyncio.wait_for(consumer.lag(), LAG_TIMEOUT)
            except (BusError, TimeoutError) as exc:
                log.debug("consumer lag of %s not known now: %s", self.group, exc)
        return GroupLag(self.group, self.pipeline_lag(), dict(self._partitions))


# --- state, read when scraped -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class State:
    """What a process is like at a scrape; ``None``: it has no such part."""

    components: Mapping[str, Health]
    groups: Sequence[GroupLag] = ()
    mqtt_connected: bool | None = None
    store_up: bool | None = None
    websocket_clients: int | None = None
    devices: int | None = None
    devices_silent: int | None = None


class _StateCollector(Collector):
    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        for name, value, help_text in (
            (
                "iotstream_mqtt_connected",
                state.mqtt_connected,
                "The ingest's MQTT connection is up.",
            ),
            ("iotstream_store_up", state.store_up, "The store answers."),
            (
                "iotstream_websocket_clients",
                state.websocket_clients,
                "Connected WebSocket clients of this api.",
            ),
            ("iotstream_devices", state.devices, "Devices known to the store."),
            (
                "iotstream_devices_silent",
                state.devices_silent,
                "Devices whose last reading is older than --silent-after.",
            ),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value=float(value))
        if state.groups:
            lag = GaugeMetricFamily(
                "iotstream_bus_consumer_lag_events",
                "Events a consumer group has not committed, per partition it reads here "
                "(Kafka: end offset - committed offset).",
                labels=["group", "partition"],
            )
            pipeline = GaugeMetricFamily(
                "iotstream_pipeline_lag_seconds",
                "Age of the oldest event a consumer took and has not finished; 0 when idle.",
                labels=["group"],
            )
            for group in state.groups:
                pipeline.add_metric([group.group], group.seconds)
                for partition, events in sorted(group.partitions.items()):
                    lag.add_metric([group.group, partition], events)
            yield lag
            yield pipeline
        up = GaugeMetricFamily(
            "iotstream_component_up", "Each component's health (1: up).", labels=["component"]
        )
        for name, health in state.components.items():
            up.add_metric([name], float(health.ok))
        yield up


def exposition(state: State) -> bytes:
    """The text ``GET /metrics`` answers: every series of this process."""
    now = CollectorRegistry(auto_describe=False)
    now.register(_StateCollector(state))
    return generate_latest(REGISTRY) + generate_latest(now)
