"""The distributed bus: Apache Kafka through confluent-kafka (librdkafka).

Readings and raw messages go to ``topic``, rejected messages to ``deadletter_topic``; a
consumer reads both. ``kafka_codec`` beside this module encodes the records (its table says
which kind goes to which topic); events are keyed by device id, and readings packed by the
partition their device id is hashed to, so each device's events keep their order.

librdkafka does its network I/O on threads of its own. Its blocking calls run here in
worker threads, never on the event loop: one producer thread serves delivery reports and
resolves each ``publish``'s future through ``loop.call_soon_threadsafe``, and each
consumer makes its calls on a thread of its own. ``produce`` itself never blocks (it
refuses a record while librdkafka's queue is full), so a publish encodes and produces on
the event loop: handing each batch to a thread cost the bridge a fifth of its CPU.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

import orjson

from ..config import KAFKA_FETCH_WAIT_MS, KAFKA_LINGER_MS
from ..errors import BusError, ConsumerLost, missing_extra
from ..health import Health
from ..models import EVENT_KINDS, Batch, Event
from .base import Bus, Consumer, Placement, Position
from .kafka_codec import UNDECODABLE, KafkaRecord, decode_batch, encode_batch

try:
    from confluent_kafka import Consumer as _KafkaConsumer
    from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]
except ImportError as exc:  # pragma: no cover - only without the extra
    raise missing_extra("kafka", "confluent_kafka") from exc

log = logging.getLogger(__name__)

T = TypeVar("T")

ADMIN_TIMEOUT = 30.0
"""Seconds ``start`` waits for the cluster to answer and for new topics to get leaders."""
FLUSH_TIMEOUT = 30.0
"""Seconds ``stop`` waits for records Kafka has not acknowledged yet."""
_SERVE_INTERVAL = 0.1
ROOM_WAIT = 0.01
"""Seconds a publish waits before it offers a record again while librdkafka's queue is full."""
FETCH_RECORDS = 64
"""Records a poll takes at a time until it has the events it was asked for (a packed record
holds many readings)."""
LAG_TIMEOUT = 2.0
"""Seconds each question of a consumer lag (committed offsets, end offsets) may take."""

# Records wait at most linger.ms (``KAFKA_LINGER_MS``, or the bus's ``linger_ms``) to share a
# request with others, which is what makes throughput; compression pays because a partition's
# records repeat keys and device ids. Less linger is less latency for more of the broker's CPU:
# 3 ms instead of 10 (and a fetch wait of 3) took the newest reading a processor's poll got
# from 27 to 15 ms old, and the broker from 14 to 20 % of a core, at 40k msg/s on two cores
# (BENCHMARKS.md). lz4 rather than zstd: every batch is decompressed three times (the broker
# validates it, the processor and the archiver read it); at 10k msg/s the whole stack took 96 %
# of a core with lz4 and 104 % with zstd (librdkafka's threads 4 % and 10 %); without
# compression the broker took 18 % of a core against 15 at 48k msg/s. Idempotence keeps each
# device's order and drops the duplicates of librdkafka's retries. murmur2 is the Java client's
# partitioner, so other producers keyed by device id agree on the partition. Statistics are
# only read to notice that brokers are reachable again.
PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,
    "compression.type": "lz4",
    "partitioner": "murmur2_random",
    "statistics.interval.ms": 5000,
}

# Offsets are committed by hand, after the processor stored a batch (at-least-once). A fetch
# waits for a megabyte or fetch.wait.max.ms (``KAFKA_FETCH_WAIT_MS``, the bus's
# ``fetch_wait_ms``, or the consumer's ``max_wait``): the broker answers a hundred fetches a
# second instead of one per produced batch (at 1k msg/s that was most of its CPU), for at most
# that much latency; it also bounds how long a fetch in flight holds back partitions just
# assigned. With a partition per core (default_partitions) 10 ms rather than 20 cost the broker
# 2 % of a core at 1k msg/s and took the median at 55k msg/s from 101-105 ms to 90.
CONSUMER_CONFIG: dict[str, Any] = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    # Each topic's partitions are spread over the members on their own (the range
    # assignor): the cooperative sticky one balanced the count over both topics, and gave a
    # second processor every partition of the dead letters and none of the readings. A
    # rebalance revokes every partition and assigns them again (the eager protocol).
    "partition.assignment.strategy": "range",
    "fetch.min.bytes": 1 << 20,
    # A processor killed with -9 never says goodbye: its partitions wait for the session
    # to expire before a survivor takes them (45 s by default).
    "session.timeout.ms": 10_000,
    "heartbeat.interval.ms": 2_000,
}


REFERENCE_PARTITIONS = 100
"""The reference system's partition count, for a cluster of several brokers."""
SINGLE_BROKER_PARTITIONS = 8
"""At most this many for a cluster of one broker (one machine): with 100, every produce and
fetch request touches a hundred partitions, which made the broker burn a core at 1k msg/s."""


def default_partitions(brokers: int, cores: int | None = None) -> int:
    """The partitions of topics iotstream creates on a cluster of ``brokers`` brokers.

    A cluster of one broker is one machine: it gets a partition per core of the machine
    (``cores``, default this one's), at most ``SINGLE_BROKER_PARTITIONS``. Processors beyond
    its cores would not run at once, and the broker's work per fetch and produce grows with
    the partitions: on two cores at 60k msg/s it took 24 % of a core with 8 and 14 % with 2."""
    if brokers > 1:
        return REFERENCE_PARTITIONS
    cores = cores or os.cpu_count() or 1
    return max(1, min(SINGLE_BROKER_PARTITIONS, cores))


def _error_text(exc: KafkaException) -> str:
    error = exc.args[0] if exc.args else None
    return error.str() if isinstance(error, KafkaError) else str(exc)


def _error_code(exc: KafkaException) -> int | None:
    error = exc.args[0] if exc.args else None
    return error.code() if isinstance(error, KafkaError) else None


class _Acks:
    """Counts one publish's delivery reports; called on the producer thread only."""

    __slots__ = ("count", "error", "failed", "future", "loop", "pending")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.count = self.pending = count
        self.failed = 0
        self.error: KafkaError | None = None

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.failed += 1
            self.error = self.error or error
        self.pending -= 1
        if self.pending == 0:
            try:
                self.loop.call_soon_threadsafe(self._resolve)
            except RuntimeError:  # the loop is closed: nobody waits for this publish
                return

    def _resolve(self) -> None:
        if not self.future.done():
            self.future.set_result(None)


class KafkaBus(Bus):
    # Each commit is a write to the offsets topic: one per batch was about fifty a second at
    # 1k msg/s, a fifth of the broker's requests.
    commit_interval = 0.5

    def __init__(
        self,
        bootstrap: str,
        *,
        topic: str = "mqtt-messages",
        deadletter_topic: str | None = None,
        partitions: int | None = None,
        replication_factor: int = 1,
        retention_ms: int | None = None,
        client_id: str = "iotstream",
        group_prefix: str = "",
        instance_id: str | None = None,
        linger_ms: int = KAFKA_LINGER_MS,
        fetch_wait_ms: int = KAFKA_FETCH_WAIT_MS,
    ) -> None:
        """Topics are created with ``partitions`` (default ``default_partitions``),
        ``replication_factor`` and ``retention_ms`` when missing. ``group_prefix`` goes
        before every consumer group id, so that deployments (or tests) sharing a cluster do
        not share groups. ``instance_id``: this process's static membership in its groups
        (``group.instance.id``): a process restarted with the same id gets its partitions
        back at once, not after the session timeout; a second one with it fences the first.
        ``linger_ms`` and ``fetch_wait_ms``: the producer's linger.ms and the consumers'
        fetch.wait.max.ms (unless a consumer is made with a ``max_wait``)."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.deadletter_topic = deadletter_topic or f"{topic}.deadletter"
        self.partitions = partitions
        self.replication_factor = replication_factor
        self.retention_ms = retention_ms
        self.client_id = client_id
        self.group_prefix = group_prefix
        self.instance_id = instance_id
        self.linger_ms = linger_ms
        self.fetch_wait_ms = fetch_wait_ms
        self.undecodable = 0
        """Records consumers of this bus turned into ``undecodable_record`` dead letters."""
        self._producer: Producer | None = None
        """The producer publishes use; ``None`` unless started, and from a stop on."""
        self._serving: Producer | None = None
        """The producer the thread serves (``_server``): the last one made."""
        self._producing: asyncio.Lock | None = None
        """Held by the publish producing its records: batches reach Kafka in call order."""
        self._server: threading.Thread | None = None
        self._stopping = threading.Event()
        self._unreachable: str | None = None
        self._fatal: str | None = None
        self._last_error: str | None = None
        self._topic_partitions: int | None = None
        """The main topic's partitions, over which readings are packed (``kafka_codec``)."""

    # --- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._topic_partitions = await asyncio.to_thread(self._create_topics)
        self._producing = asyncio.Lock()
        self._producer = self._open()

    def _open(self) -> Producer:
        """Makes a producer, and the thread that serves its delivery reports."""
        config = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.client_id,
            **PRODUCER_CONFIG,
            "linger.ms": self.linger_ms,
            "error_cb": self._on_error,
            "stats_cb": self._on_stats,
            "logger": log,
        }
        try:
            producer = Producer(config)
        except KafkaException as exc:
            raise BusError(f"cannot create a Kafka producer: {_error_text(exc)}") from exc
        self._serving = producer
        self._stopping = threading.Event()
        self._server = threading.Thread(
            target=self._serve,
            args=(producer, self._stopping),
            name=f"kafka-producer-{self.topic}",
            daemon=True,
        )
        self._server.start()
        return producer

    async def _renew(self, failed: Producer) -> Producer:
        """A new producer in place of one that failed for good. After a fatal error (an
        idempotent producer whose sequence Kafka can no longer follow) librdkafka takes no
        more records; it wants the producer made again."""
        log.warning("making a new Kafka producer in place of the failed one: %s", self._fatal)
        self._stopping.set()
        if self._server is not None:
            await asyncio.to_thread(self._server.join)
        # Records still waiting fail now: the publishes waiting for them raise.
        await asyncio.to_thread(self._discard, failed)
        renewed = self._open()
        self._fatal = None
        if self._producer is not None:  # else a stop began meanwhile: later publishes fail
            self._producer = renewed
        return renewed

    @staticmethod
    def _discard(producer: Producer) -> None:
        producer.purge()
        producer.flush(0)

    async def stop(self) -> None:
        if self._producer is None:
            return
        self._producer = None
        if self._producing is not None:
            # Publishes already producing finish first, the producer thread freeing room in
            # the queue for them; later ones find the bus stopped.
            await self._producing.acquire()
        producer = self._serving  # the one they produced on, renewed or not
        assert producer is not None  # made by start
        self._stopping.set()
        if self._server is not None:
            await asyncio.to_thread(self._server.join)
        # With the producer thread gone, flush is the only one serving delivery reports.
        left = await asyncio.to_thread(producer.flush, FLUSH_TIMEOUT)
        if left:
            log.error("Kafka did not acknowledge %d records before the bus stopped", left)
            self._discard(producer)  # publishes still waiting fail now instead of never

    def _create_topics(self) -> int:
        """Creates the missing topics; the main topic's partitions."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "client.id": self.client_id})
        names = [self.topic, self.deadletter_topic]
        try:
            metadata = admin.list_topics(timeout=ADMIN_TIMEOUT)
        except KafkaException as exc:
            raise BusError(f"Kafka at {self.bootstrap} did not answer: {_error_text(exc)}") from exc
        existing = metadata.topics
        partitions = self.partitions or default_partitions(len(metadata.brokers))
        for name in names:
            if (
                name in existing
                and self.partitions is not None
                and len(existing[name].partitions) != self.partitions
            ):
                log.warning(
                    "Kafka topic %s has %d partitions, not the %d configured; left as it is",
                    name,
                    len(existing[name].partitions),
                    self.partitions,
                )
        config = {} if self.retention_ms is None else {"retention.ms": str(self.retention_ms)}
        missing = [
            NewTopic(name, partitions, self.replication_factor, config=config)
            for name in names
            if name not in existing
        ]
        if not missing:
            return len(existing[self.topic].partitions)
        for name, future in admin.create_topics(missing, operation_timeout=ADMIN_TIMEOUT).items():
            try:
                future.result()
            except KafkaException as exc:
                # Another instance starting at the same moment may have created it first.
                if _error_code(exc) != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BusError(f"cannot create Kafka topic {name}: {_error_text(exc)}") from exc
            else:
                log.info("created Kafka topic %s with %d partitions", name, partitions)
        return self._await_leaders(admin, [topic.topic for topic in missing])

    def _await_leaders(self, admin: AdminClient, names: list[str]) -> int:
        """Waits until the ``names`` topics have leaders; the main topic's partitions."""
        # A consumer that subscribes before its broker's metadata lists a new topic is not
        # assigned that topic's partitions until its next metadata refresh, minutes later.
        deadline = time.monotonic() + ADMIN_TIMEOUT
        while True:
            try:
                topics = admin.list_topics(timeout=ADMIN_TIMEOUT).topics
            except KafkaException as exc:
                raise BusError(f"Kafka at {self.bootstrap}: {_error_text(exc)}") from exc
            if all(
                name in topics
                and topics[name].error is None
                and all(p.leader >= 0 for p in topics[name].partitions.values())
                for name in names
            ):
                return len(topics[self.topic].partitions)
            if time.monotonic() > deadline:
                raise BusError(f"Kafka topics {names} have no leaders after {ADMIN_TIMEOUT} s")
            time.sleep(_SERVE_INTERVAL)

    # --- producing ------------------------------------------------------------------------

    @staticmethod
    def _serve(producer: Producer, stopping: threading.Event) -> None:
        while not stopping.is_set():
            producer.poll(_SERVE_INTERVAL)

    def _on_error(self, error: KafkaError) -> None:
        text = error.str()
        if error.fatal():
            self._fatal = text
            log.error("the Kafka producer failed for good: %s", text)
        elif error.code() == KafkaError._ALL_BROKERS_DOWN:
            if self._unreachable is None:
                log.warning("no Kafka broker reachable: %s", text)
            self._unreachable = text
        elif text != self._last_error:
            log.warning("Kafka producer: %s", text)
        self._last_error = text

    def _on_stats(self, stats: str) -> None:
        # librdkafka reports brokers going down as errors, but not their return.
        if self._unreachable is None:
            return
        brokers = orjson.loads(stats).get("brokers", {}).values()
        if any(broker.get("state") == "UP" for broker in brokers):
            log.info("Kafka is reachable again")
            self._unreachable = None

    async def _produce(
        self, producer: Producer, topic: str, records: list[KafkaRecord], acks: _Acks
    ) -> None:
        for key, value, partition in records:
            while True:
                try:
                    producer.produce(topic, value, key, partition, on_delivery=acks)
                    break
                except BufferError:
                    # The queue is full until delivery reports free room in it.
                    await asyncio.sleep(ROOM_WAIT)

    async def publish(self, batch: Batch) -> None:
        """Returns once Kafka acknowledged every record; raises ``BusError`` if any failed."""
        if not batch:
            return
        producer, producing = self._producer, self._producing
        if producer is None or producing is None:
            raise BusError("the Kafka bus is not started")
        try:
            records = encode_batch(batch, self._topic_partitions)
        except orjson.JSONEncodeError as exc:
            raise BusError(f"an event cannot be encoded: {exc}") from exc
        acks = _Acks(asyncio.get_running_loop(), len(records.live) + len(records.deadletter))
        try:
            # A publish waiting for room in the queue holds back the ones called after it.
            async with producing:
                # The last producer made: another publish may have renewed it meanwhile. A
                # stop waits for the publishes called before it, and stops that one.
                producer = self._serving or producer
                if self._fatal is not None and self._producer is not None:
                    producer = await self._renew(producer)
                await self._produce(producer, self.topic, records.live, acks)
                await self._produce(producer, self.deadletter_topic, records.deadletter, acks)
        except KafkaException as exc:
            raise BusError(f"Kafka refused a record: {_error_text(exc)}") from exc
        await acks.future
        if acks.error is not None:
            raise BusError(
                f"Kafka did not take {acks.failed} of {acks.count} records of {len(batch)} "
                f"events: {acks.error.str()}"
            )

    # --- consuming and health -------------------------------------------------------------

    async def consumer(
        self, group: str, placement: Placement | None = None, *, max_wait: float | None = None
    ) -> Consumer:
        """``max_wait``: the consumer's fetch.wait.max.ms (the bus's ``fetch_wait_ms`` when
        ``None``)."""
        if self._producer is None:
            raise BusError("the Kafka bus is not started")
        wait_ms = None if max_wait is None else max(1, round(max_wait * 1000))
        return KafkaConsumer(self, group, placement, wait_ms)

    def health(self) -> Health:
        producer = self._producer
        if producer is None:
            return Health(False, "not started")
        if self._fatal is not None:
            return Health(False, f"the Kafka producer failed: {self._fatal}")
        if self._unreachable is not None:
            return Health(False, f"no Kafka broker reachable: {self._unreachable}")
        detail = (
            f"Kafka {self.bootstrap}, topics {self.topic} and {self.deadletter_topic}, "
            f"{len(producer)} records awaiting acknowledgement"
        )
        if self.undecodable:
            detail += f", {self.undecodable} undecodable records seen"
        return Health(True, detail)


class KafkaConsumer(Consumer):
    """One member of a Kafka consumer group.

    librdkafka stores the offset of every record ``poll`` returns; ``commit`` commits the
    stored offsets, that is everything polled so far. With a ``Placement``, partitions are
    assigned at the offsets it gives (asked from the consumer's thread, answered on the
    event loop), and records fetched from a partition revoked meanwhile are left out.

    After a fatal error (Kafka fenced this member: another one joined with its instance id)
    librdkafka takes nothing more; ``poll`` then raises ``ConsumerLost`` instead of returning
    nothing ever after.
    """

    def __init__(
        self,
        bus: KafkaBus,
        group: str,
        placement: Placement | None = None,
        wait_ms: int | None = None,
    ) -> None:
        self._bus = bus
        self._closed = False
        self._last_error: str | None = None
        self._placement = placement
        self._loop = asyncio.get_running_loop()
        self._positions: dict[type[Event], list[Position]] = {}
        self._revoked: set[tuple[str, int]] = set()
        self._misplaced: str | None = None
        self._lost: str | None = None
        """Why this consumer can take nothing more (librdkafka's fatal error)."""
        # All calls into this consumer run on one thread, in order: a poll whose caller was
        # cancelled still runs to its end before close, which would crash under it.
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-consumer-{group}")
        config = {
            "bootstrap.servers": bus.bootstrap,
            "client.id": bus.client_id,
            "group.id": bus.group_prefix + group,
            **CONSUMER_CONFIG,
            "fetch.wait.max.ms": bus.fetch_wait_ms if wait_ms is None else wait_ms,
            "error_cb": self._on_error,
            "on_commit": self._on_commit,
            "logger": log,
        }
        if bus.instance_id is not None:
            config["group.instance.id"] = bus.instance_id
        topics = [bus.topic, bus.deadletter_topic]
        try:
            self._consumer = _KafkaConsumer(config)
            if placement is None:
                self._consumer.subscribe(topics)
            else:
                self._consumer.subscribe(
                    topics, on_assign=self._on_assign, on_revoke=self._on_revoke
                )
        except KafkaException as exc:
            self._thread.shutdown(wait=False)
            raise BusError(f"cannot join consumer group {group}: {_error_text(exc)}") from exc

    def _on_error(self, error: KafkaError) -> None:
        text = error.str()
        if error.fatal():
            if self._lost is None:
                log.error("the Kafka consumer failed for good: %s", text)
            self._lost = text
        elif text != self._last_error:
            log.warning("Kafka consumer: %s", text)
        self._last_error = text

    def _usable(self) -> None:
        """Raises ``ConsumerLost`` unless this consumer can go on."""
        if self._lost is not None:
            raise ConsumerLost(f"the Kafka consumer failed: {self._lost}")
        if self._misplaced is not None:
            raise ConsumerLost(f"partitions were assigned without a placement: {self._misplaced}")

    # --- placement (on the consumer's thread, inside a poll) ------------------------------

    def _on_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the event loop and wait for it; the loop is free meanwhile, since
        it awaits this thread's poll."""
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        while True:
            try:
                return future.result(_SERVE_INTERVAL * 10)
            except FutureTimeout:
                if self._loop.is_closed() or not self._loop.is_running():
                    future.cancel()
                    raise BusError("the event loop stopped during a rebalance") from None

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        assert self._placement is not None
        sources = {f"{p.topic}-{p.partition}": p for p in partitions}
        for p in partitions:
            self._revoked.discard((p.topic, p.partition))
        try:
            starts = self._on_loop(self._placement.assigned(list(sources)))
        except BaseException as exc:  # librdkafka must get its assignment whatever happens
            # Assigned at the group's commit, these partitions would be read from a place
            # the caller does not know: the consumer refuses to poll until it is replaced.
            self._misplaced = f"{type(exc).__name__}: {exc}"
            log.error("cannot place partitions %s: %s", sorted(sources), self._misplaced)
            starts = {}
        for source, partition in sources.items():
            if source in starts:
                partition.offset = starts[source]
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        assert self._placement is not None
        self._revoked.update((p.topic, p.partition) for p in partitions)
        try:
            self._on_loop(self._placement.revoked([f"{p.topic}-{p.partition}" for p in partitions]))
        except BaseException as exc:  # and its unassignment
            log.error("placement failed on revoked partitions: %s", exc)

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise ConsumerLost("the Kafka consumer is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)
        except KafkaException as exc:
            raise BusError(f"Kafka consumer: {_error_text(exc)}") from exc

    def _fetch(self, max_events: int, timeout: float) -> Batch:
        self._usable()
        self._revoked.clear()
        batch = Batch()
        self._positions = {}
        # consume(n, timeout) waits until it has n records or the timeout passed, so it is
        # only asked for what has arrived; poll returns as soon as one record is there. A
        # record may hold many readings: records are taken a few at a time until the batch
        # has ``max_events``.
        while len(batch) < max_events:
            wanted = min(max_events - len(batch), FETCH_RECORDS)
            messages = self._consumer.consume(wanted, 0)
            if not messages:
                if batch:
                    break
                first = self._consumer.poll(timeout)
                if first is None:
                    self._usable()  # a fatal error comes as a callback, not a record
                    break
                messages = [first]
                if wanted > 1:
                    messages += self._consumer.consume(wanted - 1, 0)
            self._decode(messages, batch)
            if len(messages) < wanted:
                break  # that is all that has arrived
        return batch

    def _decode(self, messages: list[Message], batch: Batch) -> None:
        self._usable()
        revoked = self._revoked
        records: list[Message] = []
        for message in messages:
            error = message.error()
            if error is None:
                if not revoked or (message.topic(), message.partition()) not in revoked:
                    records.append(message)
            elif error.fatal() or error.code() == KafkaError._FATAL:
                self._lost = error.str()
                self._usable()
            else:
                self._on_error(error)
        positions = None if self._placement is None else self._positions
        decode_batch(records, positions, batch)

    async def poll(self, max_events: int = 10_000, timeout: float = 1.0) -> Batch:
        batch = await self._call(self._fetch, max_events, timeout)
        undecodable = sum(1 for item in batch.rejected if item.reason == UNDECODABLE)
        if undecodable:
            if not self._bus.undecodable:
                log.warning(
                    "%s or %s holds records that are not iotstream events; "
                    "they become dead letters with reason %s",
                    self._bus.topic,
                    self._bus.deadletter_topic,
                    UNDECODABLE,
                )
            self._bus.undecodable += undecodable
        return batch

    def positions(self) -> list[Position]:
        if self._placement is None:
            raise BusError("positions() needs a consumer made with a placement")
        return [p for kind in EVENT_KINDS.values() for p in self._positions.get(kind, ())]

    def _commit(self) -> None:
        # Asynchronous: a poll loop does not wait a round trip per batch for it. A commit
        # that fails is logged (``_on_commit``); what it would have covered is delivered
        # again, which consumers of this bus tolerate (at-least-once).
        try:
            self._consumer.commit(asynchronous=True)
        except KafkaException as exc:
            if _error_code(exc) == KafkaError._NO_OFFSET:
                return  # nothing polled since the last commit
            raise

    def _on_commit(self, error: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = [p for p in partitions if p.error is not None]
        if error is not None or failed:
            why = error.str() if error is not None else str(failed[0].error)
            log.warning("Kafka commit failed (what it covered will be read again): %s", why)

    async def commit(self) -> None:
        await self._call(self._commit)

    def _lag(self) -> dict[str, int]:
        assigned = self._consumer.assignment()
        if not assigned:
            return {}
        lag: dict[str, int] = {}
        for partition in self._consumer.committed(assigned, timeout=LAG_TIMEOUT):
            ends = self._consumer.get_watermark_offsets(partition, timeout=LAG_TIMEOUT)
            if ends is not None:
                low, high = ends
                start = partition.offset if partition.offset >= 0 else low  # none committed
                lag[f"{partition.topic}-{partition.partition}"] = max(high - start, 0)
        return lag

    async def lag(self) -> dict[str, int]:
        """Per assigned partition (``<topic>-<partition>``), asked of the brokers."""
        return await self._call(self._lag)

    async def close(self) -> None:
        if self._closed:
            return
        try:
            await self._call(self._consumer.close)
        finally:
            self._closed = True
            self._thread.shutdown(wait=False)
