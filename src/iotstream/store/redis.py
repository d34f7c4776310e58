"""The distributed store: latest state, counters and change fan-out in Redis (6.2 or later).

Several processors may ``apply`` at once and several API instances read and
subscribe; every instance with the same ``prefix`` sees the same store.

Key layout (``{prefix}`` defaults to ``iotstream``)::

    {prefix}:state          hash    device id -> latest state, a JSON object
    {prefix}:lastseen       zset    device id, scored by its newest receive time (for expire)
    {prefix}:recent:{device} string fingerprints of the device's last ``dedupe_window``
                                    readings, 16 bytes each, in a ring: the reading counted
                                    when the device's count was n has slot n mod the window
    {prefix}:count:device   hash    device id -> readings counted
    {prefix}:count:topic    hash    raw topic -> messages counted
    {prefix}:count:reason   hash    rejection reason -> messages counted
    {prefix}:totals         hash    readings / raw / rejected -> messages counted
    {prefix}:deadletters    list    newest first, at most ``deadletter_limit``; each item is a
                                    JSON header line (topic, reason, detail, size, receivedAt),
                                    a line feed, then the payload bytes exactly as received
    {prefix}:changes        channel pub/sub of {"updated": [states...], "removed": [ids...]},
                                    or {"commands": [command]} for a command's move
    {prefix}:cmd:{id}       string  a command, ``Command.to_json`` as JSON; expires
                                    ``command_retention`` seconds after it closed
    {prefix}:cmd:device:{device}  zset  the device's command ids, scored by creation time
    {prefix}:cmd:queued:{device}  zset  those still queued, scored by creation time
    {prefix}:cmd:open       zset    open command ids, scored by expiry time
    {prefix}:cmd:waiting    set     devices with queued commands
    {prefix}:cmd:idem:{key} string  the id of the command an idempotency key made

Writes: ``apply`` is one EVALSHA per batch, with the whole batch as arguments (a second
one for the devices the first hands back, see *Duplicates*), so a batch is deduplicated,
merged, counted and announced on ``{prefix}:changes`` atomically, and concurrent writers
and replays cannot interleave inside it: a write whose reply is lost has still been
announced, and its replay announces nothing twice. ``expire`` removes and announces in
one script too. The scripts are ``redis_apply.lua`` and ``redis_expire.lua`` beside this
module. Redis's Lua ``cjson`` keeps
14 significant digits and turns ``1.0`` into ``1`` and ``[]`` into ``{}``, so
Lua never decodes a value: Python encodes each field as a ``"key":value`` JSON
member with orjson, and the script only compares timestamps (``tonumber`` of
the exact text) and joins members. A stored state is written only by that
script, one member per line (``{"deviceId":"r1",\n"x":1.0,\n...}``); orjson
never emits a raw line feed, so the script splits a stored state back into
members without a JSON parser, and every value reaches readers byte for byte
as orjson wrote it. One hash of whole JSON states keeps reads to one HGET or
HVALS and one ``orjson.loads`` per device.

Duplicates: a reading's fingerprint is an XXH3-128 of its device time and
its fields as JSON with sorted keys, computed in Python so Redis spends no CPU on it
(BLAKE2b-128 before: a third of the time, 0.4 µs a reading; a window written before that
does not recognise a replay of its readings, whose counts then go up once more);
readings compare by their JSON, so ``1`` and ``1.0`` differ here, unlike in
the memory store. A device's readings in a batch usually are all newer than its
state, and then none can repeat one the window holds: the client sends them merged
(the fields of the readings that apply, each with its last value) with their
fingerprints, and the script appends those to the window and merges once per device
instead of once per reading. A device whose batch is not all newer is sent back by
the script and goes again reading by reading. Last-seen only moves forward (``ZADD GT``),
so a replay beyond the window cannot make a live device look silent, and a device whose
state comes out byte-identical is not reported as changed.

Devices it has seen: the script tells the client each device's state, count and window
after it merged them, and the client keeps them (``KNOWN_LIMIT`` devices at most). The
next batch of such a device is merged by the client itself, exactly as the script would,
and sent as its outcome: the new state, the fingerprints for the window's ring and the
count to add. The script takes it with a few plain writes, no parsing, if the device still
has a state and the count the client merged against: every reading that moves a state is
counted, and only an expiry removes one. Otherwise (another writer, an expiry, a Redis
that lost its data) the device is handed back and goes again reading by reading. With
one processor per partition, as Kafka's groups assign them, that is the first batch of
each device only; it took the script from 15 to 5 ms per batch of a thousand devices.
A merge of readings all newer than the state only appends to the window: the client sends
the fingerprints and forgets the window (copying it was a third of such a merge). A later
batch that needs it (a reading not newer than the state) goes reading by reading, and the
script tells the window again.

Commands: each write is ``redis_command.lua``, a compare-and-set of the command's JSON that
keeps its indexes and announces the move. A batch of moves (``move_commands``) reads its
commands with one MGET and sends its scripts in one pipeline; a move another writer overtook
is read and tried again alone.

Subscribers: each ``subscribe()`` holds its own pub/sub connection and
survives a Redis restart. Pub/sub drops what is published while a subscriber
is disconnected, so after it resubscribes it first yields every device's
current state; removals in that gap are not replayed.

For Redis Cluster, put the prefix in braces (``{iotstream}``): the scripts
touch several keys, which must share a hash slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Collection, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from ..errors import ConfigError, IdempotencyConflict, StoreError, missing_extra
from ..health import Health
from ..lifecycle import cancel_all, spawn
from ..models import QUEUED, Batch, Changes, Command, DeviceState, Reading, Rejected
from .base import COMMAND_RETENTION, CommandMove, Counters, Freshness, Store

try:
    import hiredis
    import xxhash
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import DataError, NoScriptError, RedisError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra("redis", "redis") from exc

log = logging.getLogger(__name__)

PING_INTERVAL = 1.0
RESUBSCRIBE_DELAY = 0.5
SUBSCRIBE_TIMEOUT = 5.0
CONNECT_TIMEOUT = 5.0
# Whatever the client library raises; all of it becomes StoreError at this seam.
_FAILURES = (RedisError, OSError)

KEY_NAMES = (
    "state",
    "lastseen",
    "count:device",
    "count:topic",
    "count:reason",
    "totals",
    "deadletters",
)

# The scripts live beside this module, each with its KEYS and ARGV described at its top.
_SCRIPTS = resources.files(__package__)
APPLY = _SCRIPTS.joinpath("redis_apply.lua").read_text()
EXPIRE = _SCRIPTS.joinpath("redis_expire.lua").read_text()
COMMAND = _SCRIPTS.joinpath("redis_command.lua").read_text()
COMMAND_RETRIES = 20
"""Compare-and-set attempts of one command move before the store gives up."""


def _packed_by_hiredis(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` encoding commands with hiredis's C packer: redis-py's asyncio
    connections encode argument by argument in Python, 4 ms for the apply arguments of a
    thousand devices (hiredis: 1 ms), about as long as the script takes."""

    class Connection(connection_class):  # type: ignore[misc]
        def pack_command(self, *args: Any) -> list[bytes]:
            name = args[0]
            if isinstance(name, str) or b" " in name:  # "SCRIPT LOAD" is two arguments
                words = name.encode().split() if isinstance(name, str) else name.split()
                args = (*words, *args[1:])
            try:
                return [hiredis.pack_command(args)]
            except TypeError as exc:
                raise DataError(str(exc)) from exc

    Connection.__name__ = Connection.__qualname__ = f"Hiredis{connection_class.__name__}"
    return Connection


def _fingerprint(reading: Reading) -> bytes:
    """What makes two readings of a device equal: device time and fields, keys in any order."""
    text = orjson.dumps((reading.timestamp, reading.fields), option=orjson.OPT_SORT_KEYS)
    return xxhash.xxh3_128_digest(text)


_PREFIXES: dict[str, bytes] = {}
"""Field names as the start of a JSON member (``"x":``): a fleet has few of them."""
PREFIXES_LIMIT = 10_000


def _member(key: str, value: Any) -> bytes:
    """A field as a ``"key":value`` JSON member."""
    prefix = _PREFIXES.get(key)
    if prefix is None:
        if len(_PREFIXES) >= PREFIXES_LIMIT:
            _PREFIXES.clear()
        prefix = _PREFIXES[key] = orjson.dumps(key) + b":"
    return prefix + orjson.dumps(value)


def _members(fields: dict[str, Any]) -> list[bytes]:
    return [_member(key, value) for key, value in fields.items()]


KNOWN_LIMIT = 50_000
"""Devices whose state a store remembers to merge their next readings against; past it, it
forgets them all and learns them again from the script."""
_TIMESTAMP_MEMBER = len(b'"timestamp":')


_EMPTY_SLOT = bytes(16)
_NO_WRITES = (0, b"", b"")


def _ring_writes(count: int, appended: list[bytes], size: int) -> tuple[int, bytes, bytes]:
    """The writes that put ``appended`` fingerprints into a stored window from slot ``count``
    mod ``size``: bytes at an offset (Redis pads a shorter window with zeros), then bytes
    at 0."""
    n = len(appended)
    if not size or not n:
        return _NO_WRITES
    if n == 1:  # the most common
        return 16 * (count % size), appended[0], b""
    if n >= size:
        ring = bytearray(16 * size)
        for j in range(n - size, n):
            slot = (count + j) % size
            ring[16 * slot : 16 * slot + 16] = appended[j]
        return 0, bytes(ring), b""
    start = count % size
    return 16 * start, b"".join(appended[: size - start]), b"".join(appended[size - start :])


def _ring(
    window: bytes, count: int, appended: list[bytes], size: int
) -> tuple[bytes, tuple[int, bytes, bytes]]:
    """A window after ``appended`` fingerprints went into it, and the writes that make it of
    the stored one (``_ring_writes``)."""
    writes = at, head, tail = _ring_writes(count, appended, size)
    ring = bytearray(window)
    if len(ring) < at:
        ring.extend(bytes(at - len(ring)))
    ring[at : at + len(head)] = head
    ring[: len(tail)] = tail
    return bytes(ring), writes


class _WindowUnknown(Exception):
    """A merge needs to look into a device's window, which this client does not hold: a
    merge of readings all newer than the state only appends to it, and leaves it to the
    store rather than copying it (a third of such a merge's time)."""


@dataclass(slots=True)
class _Known:
    """A device as this client last wrote or was told it: the state's text and members (by
    key), its count and window (``None`` once a merge appended to it), and its timestamp; for
    a merge not yet written, the newest receive time it counted, whether the text changed,
    and the writes into the window."""

    text: bytes
    count: int
    window: bytes | None
    members: dict[str, bytes]
    newest: float
    seen: float = 0.0
    changed: bool = False
    window_writes: tuple[int, bytes, bytes] = _NO_WRITES

    @classmethod
    def read(cls, text: bytes, count: int, window: bytes) -> _Known:
        members: dict[str, bytes] = {}
        for member in text[1:-1].split(b",\n"):
            (key,) = orjson.loads(b"{" + member + b"}")
            members[key] = member
        newest = float(orjson.loads(members["timestamp"][_TIMESTAMP_MEMBER:]))
        return cls(text, count, window, members, newest)

    def merge(
        self, readings: list[Reading], fingerprints: list[bytes], window_size: int
    ) -> _Known | None:
        """The device after ``readings``, in order, exactly as the script's reading-by-reading
        form leaves it; ``None`` when every one repeats one the window holds. Raises
        ``_WindowUnknown`` when that takes the window and this client does not hold it."""
        newest = self.newest
        merged: dict[str, Any] = {}
        applied: Reading | None = None
        seen = -math.inf
        if len(readings) == 1 and readings[0].timestamp > newest:
            # The most common batch of a device, and newer than its state (see below).
            applied = readings[0]
            newest, merged, seen = applied.timestamp, applied.fields, applied.received_at
            counted, appended, window = 1, fingerprints, None
        elif len(set(fingerprints)) == len(fingerprints) and all(
            reading.timestamp > newest for reading in readings
        ):
            # Newer than the state, so newer than all the window holds: none is a repeat.
            for reading in readings:
                if reading.timestamp >= newest:
                    newest, applied = reading.timestamp, reading
                    merged.update(reading.fields)
                if reading.received_at > seen:
                    seen = reading.received_at
            counted, appended, window = len(readings), fingerprints, None
        else:
            window = self.window
            if window is None:
                if window_size:
                    raise _WindowUnknown
                window = b""
            slots = [window[at : at + 16] for at in range(0, len(window), 16)]
            counted, appended = 0, []
            for n, reading in enumerate(readings):
                if window_size:
                    fingerprint = fingerprints[n]
                    if fingerprint in slots:
                        continue
                    slot = (self.count + counted) % window_size
                    if slot >= len(slots):
                        slots += [_EMPTY_SLOT] * (slot + 1 - len(slots))
                    slots[slot] = fingerprint
                    appended.append(fingerprint)
                counted += 1
                if reading.received_at > seen:
                    seen = reading.received_at
                if reading.timestamp >= newest:
                    newest, applied = reading.timestamp, reading
                    merged.update(reading.fields)
            if not counted:
                return None
        if window is None:  # the merges that only append: the window stays with the store
            writes = _ring_writes(self.count, appended, window_size)
        else:
            window, writes = _ring(window, self.count, appended, window_size)
        count = self.count + counted
        if applied is None:
            return _Known(self.text, count, window, self.members, newest, seen, False, writes)
        members = self.members.copy()
        dumps = orjson.dumps
        for key, value in merged.items():
            members[key] = _member(key, value)
        members["timestamp"] = b'"timestamp":' + dumps(applied.timestamp)
        members["receivedAt"] = b'"receivedAt":' + dumps(applied.received_at)
        text = b"{" + b",\n".join(members.values()) + b"}"
        return _Known(text, count, window, members, newest, seen, text != self.text, writes)


def _deadletter(item: Rejected) -> bytes:
    header = orjson.dumps(
        {
            "topic": item.topic,
            "reason": item.reason,
            "detail": item.detail,
            "size": item.size,
            "receivedAt": item.received_at,
        }
    )
    return header + b"\n" + item.payload


def _rejected(stored: bytes) -> Rejected:
    header, payload = stored.split(b"\n", 1)
    h = orjson.loads(header)
    return Rejected(h["topic"], payload, h["size"], h["reason"], h["detail"], h["receivedAt"])


def _counts(raw: dict[bytes, bytes]) -> dict[str, int]:
    return {key.decode(): int(value) for key, value in raw.items()}


class RedisStore(Store):
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "iotstream",
        deadletter_limit: int = 1000,
        dedupe_window: int = 0,
        command_retention: float = COMMAND_RETENTION,
    ) -> None:
        try:
            # One immediate retry replaces a pooled connection that a server restart broke;
            # beyond that, fail fast and let the caller (the bus) redeliver.
            self._redis = Redis.from_url(
                url, retry=Retry(NoBackoff(), 1), socket_connect_timeout=CONNECT_TIMEOUT
            )
        except ValueError as exc:
            raise ConfigError(f"invalid Redis URL: {exc}") from exc
        pool = self._redis.connection_pool
        pool.connection_class = _packed_by_hiredis(pool.connection_class)
        kwargs = pool.connection_kwargs
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self._location = f"redis {where}/{kwargs.get('db', 0)} prefix {prefix!r}"
        self._deadletter_limit = deadletter_limit
        self._dedupe_window = dedupe_window
        key = {name: f"{prefix}:{name}" for name in KEY_NAMES}
        self._keys = list(key.values())
        self._state, self._lastseen = key["state"], key["lastseen"]
        self._recent, self._deadletters = f"{prefix}:recent:", key["deadletters"]
        self._totals = key["totals"]
        self._counter_keys = [key[name] for name in ("count:device", "count:topic", "count:reason")]
        self._counter_keys.append(key["totals"])
        self._channel = f"{prefix}:changes"
        self._apply = self._redis.register_script(APPLY)
        self._expire = self._redis.register_script(EXPIRE)
        self._write_command = self._redis.register_script(COMMAND)
        self._cmd = f"{prefix}:cmd"
        self._open = f"{prefix}:cmd:open"
        self._retention_ms = max(1, int(command_retention * 1000))
        self._running = False
        self._error: str | None = None
        self._devices = 0
        self._known: dict[str, _Known] = {}
        self._pinger: asyncio.Task[None] | None = None

    # -- lifecycle and health ---------------------------------------------

    async def start(self) -> None:
        await self._check()
        if self._error is not None:
            raise StoreError(f"{self._location}: {self._error}")
        self._running = True
        self._pinger = spawn(self._ping(), "redis-store-ping")

    async def stop(self) -> None:
        self._running = False
        if self._pinger is not None:
            await cancel_all([self._pinger])
        await self._redis.aclose()

    def health(self) -> Health:
        if not self._running:
            return Health(False, f"{self._location}: not running")
        if self._error is not None:
            return Health(False, f"{self._location}: {self._error}")
        return Health(True, f"{self._location}, {self._devices} devices")

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            await self._check()

    async def _check(self) -> None:
        with contextlib.suppress(StoreError):
            self._devices = await self._command("HLEN", self._state)

    def _failed(self, what: str, exc: Exception) -> StoreError:
        self._error = f"{what} failed: {exc}"
        return StoreError(f"{self._location}: {what} failed: {exc}")

    async def _run(self, what: str, call: Awaitable[Any]) -> Any:
        """Await a Redis call; health follows its outcome, and its error becomes a StoreError."""
        try:
            result = await call
        except _FAILURES as exc:
            raise self._failed(what, exc) from exc
        self._error = None
        return result

    async def _command(self, *args: Any) -> Any:
        # redis-py types its commands as "Awaitable[T] | T", which mypy cannot await.
        call = self._redis.execute_command(*args)  # type: ignore[no-untyped-call]
        return await self._run(args[0], call)

    # -- writes -----------------------------------------------------------

    async def apply(self, batch: Batch, *, report: bool = True) -> Changes:
        if not batch:
            return Changes()
        by_device: dict[str, list[Reading]] = {}
        for reading in batch.readings:
            readings = by_device.get(reading.device_id)
            if readings is None:
                readings = by_device[reading.device_id] = []
            readings.append(reading)
        fingerprints: dict[str, list[bytes]] = {}
        writes: dict[str, _Known] = {}
        args = self._apply_args(batch, by_device, fingerprints, writes)
        texts, deferred = await self._apply_call(args, writes)
        if deferred:
            # Devices whose batch was not all newer than their state, or whose state another
            # writer moved since this client read it: reading by reading.
            args = self._head(len(deferred), 0, 0, 0, 0, 0)
            for raw_id in deferred:
                device_id = raw_id.decode()
                self._known.pop(device_id, None)
                args += self._readings_form(
                    device_id, by_device[device_id], fingerprints[device_id]
                )
            texts += (await self._apply_call(args, {}))[0]
        if batch.replies:
            await self._apply_replies(batch.replies)
        if not report:
            return Changes()
        return Changes(updated=[orjson.loads(text) for text in texts])

    async def _apply_call(
        self, args: list[Any], writes: dict[str, _Known]
    ) -> tuple[list[bytes], list[bytes]]:
        """Runs the script; the states it changed (``writes``' first, in their order) and the
        deferred devices. What the script and ``writes`` say of each device is kept for the
        next batch's merge."""
        changed, deferred, known = await self._run("apply", self._apply(keys=self._keys, args=args))
        if len(self._known) + len(writes) + len(known) // 4 > KNOWN_LIMIT:
            self._known.clear()
        failed = {raw_id.decode() for raw_id in deferred}
        texts = []
        for device_id, entry in writes.items():
            if device_id not in failed:
                self._known[device_id] = entry
                if entry.changed:
                    texts.append(entry.text)
        for at in range(0, len(known), 4):
            device_id, text, count, window = known[at : at + 4]
            if count is not None:  # its count was deleted by hand: not a state to merge on
                self._known[device_id.decode()] = _Known.read(text, int(count), window)
        return texts + changed, deferred

    def _head(
        self, devices: int, topics: int, reasons: int, raw: int, rejected: int, written: int
    ) -> list[Any]:
        """The script's first arguments (see ``redis_apply.lua``)."""
        return [
            self._deadletter_limit,
            self._dedupe_window,
            devices,
            topics,
            reasons,
            raw,
            rejected,
            self._channel,
            written,
            self._recent,
        ]

    def _apply_args(
        self,
        batch: Batch,
        by_device: dict[str, list[Reading]],
        fingerprints_of: dict[str, list[bytes]],
        writes: dict[str, _Known],
    ) -> list[Any]:
        """The script's arguments; each device's fingerprints are left in ``fingerprints_of``,
        and the outcome of each device merged here, against what the store last said of it,
        in ``writes``."""
        topics = Counter(raw.topic for raw in batch.raw)
        reasons = Counter(item.reason for item in batch.rejected)
        window, dumps, known = self._dedupe_window, orjson.dumps, self._known
        written: list[Any] = []
        sent: list[Any] = []
        for device_id, readings in by_device.items():
            fingerprints = [_fingerprint(reading) for reading in readings] if window else []
            fingerprints_of[device_id] = fingerprints
            before = known.get(device_id)
            if before is not None:
                try:
                    after = before.merge(readings, fingerprints, window)
                except _WindowUnknown:
                    # The script looks into the window, and says what it left.
                    del known[device_id]
                    sent += self._readings_form(device_id, readings, fingerprints)
                    continue
                if after is not None:
                    writes[device_id] = after
                    # The receive time as Python spells it, the shortest text of the same
                    # double as orjson's. Every small orjson result kept holds about 4 KiB
                    # (its first buffer): 1.9 µs a device instead of 0.35.
                    written += (
                        device_id,
                        b"%d" % before.count,
                        after.text if after.changed else b"",
                        after.count - before.count,
                        b"%r" % after.seen,
                        *after.window_writes,
                    )
                continue
            if len(set(fingerprints)) < len(fingerprints):
                # A repeat inside the batch: only the window, reading by reading, finds which.
                sent += self._readings_form(device_id, readings, fingerprints)
                continue
            # The readings the script would apply in turn: each one not older than any before.
            merged: dict[str, Any] = {}
            newest = -math.inf
            applied = readings[0]
            oldest, seen = applied.timestamp, applied.received_at
            for reading in readings:
                ts = reading.timestamp
                if ts >= newest:
                    newest, applied = ts, reading
                    merged.update(reading.fields)
                elif ts < oldest:
                    oldest = ts
                if reading.received_at > seen:
                    seen = reading.received_at
            lines = [device_id.encode(), dumps(device_id), b"%d" % len(readings), dumps(oldest)]
            lines += (dumps(seen), dumps(applied.timestamp), dumps(applied.received_at))
            lines.append(b"%d" % len(readings[0].fields))
            lines += _members(merged)
            sent += (b"m", b"".join(fingerprints), b"\n".join(lines))
        args = self._head(
            len(sent) // 3,
            len(topics),
            len(reasons),
            len(batch.raw),
            len(batch.rejected),
            len(written) // 8,
        )
        args += written
        args += sent
        for counts in (topics, reasons):
            for name, count in counts.items():
                args += (name, count)
        keep = batch.rejected[max(0, len(batch.rejected) - self._deadletter_limit) :]
        args += [_deadletter(item) for item in keep]
        return args

    def _readings_form(
        self, device_id: str, readings: list[Reading], fingerprints: list[bytes]
    ) -> list[Any]:
        dumps = orjson.dumps
        lines = [device_id.encode(), dumps(device_id), b"%d" % len(readings)]
        for reading in readings:
            members = _members(reading.fields)
            lines += (dumps(reading.timestamp), dumps(reading.received_at), b"%d" % len(members))
            lines += members
        return [b"r", b"".join(fingerprints), b"\n".join(lines)]

    async def expire(self, last_seen_before: float) -> list[str]:
        ids = await self._run(
            "expire",
            self._expire(
                keys=[self._lastseen, self._state],
                args=[last_seen_before, self._channel, self._recent],
            ),
        )
        removed = [device_id.decode() for device_id in ids]
        for device_id in removed:
            self._known.pop(device_id, None)
        return removed

    # -- reads ------------------------------------------------------------

    async def devices(self) -> list[DeviceState]:
        return [orjson.loads(text) for text in await self._command("HVALS", self._state)]

    async def device(self, device_id: str) -> DeviceState | None:
        text = await self._command("HGET", self._state, device_id)
        return None if text is None else orjson.loads(text)

    async def counters(self) -> Counters:
        async def snapshot() -> list[Any]:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in self._counter_keys:
                    pipe.hgetall(key)
                return await pipe.execute()

        per_device, per_topic, per_reason, totals = await self._run("counters", snapshot())
        total = _counts(totals)
        return Counters(
            total.get("readings", 0),
            total.get("raw", 0),
            total.get("rejected", 0),
            _counts(per_device),
            _counts(per_topic),
            _counts(per_reason),
        )

    async def total(self) -> int:
        counts = await self._command("HMGET", self._totals, "readings", "raw", "rejected")
        return sum(int(count) for count in counts if count is not None)

    async def freshness(self, seen_before: float) -> Freshness:
        async def counts() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zcard(self._lastseen)
                pipe.zcount(self._lastseen, "-inf", f"({seen_before!r}")
                return await pipe.execute()

        known, silent = await self._run("freshness", counts())
        return Freshness(int(known), int(silent))

    async def deadletters(self, limit: int | None = None) -> list[Rejected]:
        if limit is not None and limit <= 0:
            return []
        last = -1 if limit is None else limit - 1
        return [
            _rejected(item) for item in await self._command("LRANGE", self._deadletters, 0, last)
        ]

    # -- commands ---------------------------------------------------------

    def _command_key(self, command_id: str) -> str:
        return f"{self._cmd}:{command_id}"

    def _write_call(self, before: bytes | None, command: Command) -> tuple[list[Any], bytes]:
        """The script's keys and args that compare-and-set ``command`` over ``before``
        (``None``: a new one), the keys first; and the text it writes."""
        document = command.to_json()
        text = orjson.dumps(document)
        key = command.idempotency_key
        keys: list[Any] = [
            self._command_key(command.id),
            f"{self._cmd}:device:{command.device_id}",
            self._open,
            f"{self._cmd}:queued:{command.device_id}",
            f"{self._cmd}:idem:{key}" if key is not None else self._open,
            f"{self._cmd}:waiting",
        ]
        args: list[Any] = [
            b"" if before is None else before,
            text,
            command.id,
            command.created_at,
            "" if command.closed else command.expires_at,
            "1" if command.status == QUEUED else "0",
            "0" if key is None else "1",
            self._retention_ms if command.closed else 0,
            self._channel,
            orjson.dumps({"updated": [], "removed": [], "commands": [document]}),
            command.device_id,
        ]
        return [*keys, *args], text

    async def _write(self, before: bytes | None, command: Command) -> int | bytes:
        """Compare-and-set ``command`` over ``before`` (``None``: a new one); see the script."""
        call, _ = self._write_call(before, command)
        written: int | bytes = await self._run(
            "command write", self._write_command(keys=call[:6], args=call[6:])
        )
        return written

    async def add_command(self, command: Command) -> Command:
        written = await self._write(None, command)
        if written == 1:
            return command
        if isinstance(written, bytes):
            made = await self.command(written.decode())
            if made is not None:
                if made.fingerprint != command.fingerprint:
                    raise IdempotencyConflict(
                        f"the idempotency key {command.idempotency_key!r} was used for another "
                        "request"
                    )
                return made
        raise StoreError(f"{self._location}: command {command.id} exists already")

    async def _read(self, command_id: str) -> bytes | None:
        text: bytes | None = await self._command("GET", self._command_key(command_id))
        return text

    async def command(self, command_id: str) -> Command | None:
        text = await self._read(command_id)
        return None if text is None else Command.from_json(orjson.loads(text))

    async def _commands_of(self, key: str, ids: list[bytes]) -> list[Command]:
        """The commands ``ids`` name, in that order; ids of forgotten ones leave ``key``."""
        if not ids:
            return []
        texts = await self._command("MGET", *(self._command_key(i.decode()) for i in ids))
        gone = [i for i, text in zip(ids, texts, strict=True) if text is None]
        if gone:
            await self._command("ZREM", key, *gone)
        return [Command.from_json(orjson.loads(text)) for text in texts if text is not None]

    async def device_commands(
        self, device_id: str, status: str | None = None, limit: int = 100
    ) -> list[Command]:
        key = f"{self._cmd}:device:{device_id}"
        ids = await self._command("ZRANGE", key, 0, -1, "REV")
        found: list[Command] = []
        for first in range(0, len(ids), 500):
            for command in await self._commands_of(key, ids[first : first + 500]):
                if status is None or command.status == status:
                    found.append(command)
                    if len(found) >= limit:
                        return found
        return found

    async def queued_by_device(self, device_ids: Collection[str]) -> dict[str, list[Command]]:
        devices = list(device_ids)
        if not devices:
            return {}

        async def queued_ids() -> list[list[bytes]]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for device_id in devices:
                    pipe.zrange(f"{self._cmd}:queued:{device_id}", 0, -1)
                return await pipe.execute()

        per_device = await self._run("queued commands", queued_ids())
        ids = [command_id for found in per_device for command_id in found]
        if not ids:
            return {}
        texts = await self._command("MGET", *(self._command_key(i.decode()) for i in ids))
        commands = iter(texts)
        found: dict[str, list[Command]] = {}
        for device_id, device_ids_queued in zip(devices, per_device, strict=True):
            gone: list[bytes] = []
            for command_id in device_ids_queued:
                text = next(commands)
                if text is None:
                    gone.append(command_id)
                    continue
                command = Command.from_json(orjson.loads(text))
                if command.status == QUEUED:
                    found.setdefault(device_id, []).append(command)
            if gone:  # forgotten already: their ids leave the index
                await self._command("ZREM", f"{self._cmd}:queued:{device_id}", *gone)
        return found

    async def queued_devices(self) -> set[str]:
        return {
            device.decode() for device in await self._command("SMEMBERS", f"{self._cmd}:waiting")
        }

    async def due_commands(self, now: float) -> list[str]:
        ids = await self._command("ZRANGE", self._open, "-inf", now, "BYSCORE")
        return [command_id.decode() for command_id in ids]

    async def move_commands(self, moves: Sequence[CommandMove]) -> list[Command]:
        """One MGET and one pipeline of compare-and-set scripts for the batch; a move whose
        command another writer changed in between is retried alone (``_move``)."""
        if not moves:
            return []
        ids = list(dict.fromkeys(move.command_id for move in moves))
        texts = await self._command("MGET", *(self._command_key(i) for i in ids))
        # What each command is as read, then as this batch's earlier moves leave it.
        current: dict[str, tuple[bytes, Command]] = {
            command_id: (text, Command.from_json(orjson.loads(text)))
            for command_id, text in zip(ids, texts, strict=True)
            if text is not None
        }
        planned: list[tuple[int, Command, list[Any]]] = []
        for index, move in enumerate(moves):
            if move.command_id not in current:
                continue
            before, command = current[move.command_id]
            after = move.apply(command)
            if after is not None:
                call, text = self._write_call(before, after)
                planned.append((index, after, call))
                current[move.command_id] = (text, after)
        if not planned:
            return []

        async def write_all() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, _, call in planned:
                    pipe.evalsha(self._write_command.sha, 6, *call)
                return await pipe.execute()

        try:
            written = await self._run("command write", write_all())
        except StoreError as exc:
            if not isinstance(exc.__cause__, NoScriptError):
                raise
            # A restarted Redis forgot the script: nothing was written, load it and go again.
            await self._run("command write", self._redis.script_load(COMMAND))
            written = await self._run("command write", write_all())
        moved: dict[int, Command] = {}
        lost: dict[str, int] = {}
        """Command id -> the first of its moves that another writer overtook."""
        for (index, after, _), outcome in zip(planned, written, strict=True):
            if outcome == 1 and after.id not in lost:
                moved[index] = after
            else:
                lost.setdefault(after.id, index)
        # Those moves again, one at a time, in order, over what the other writer left.
        for index, move in enumerate(moves):
            if lost.get(move.command_id, len(moves)) <= index:
                again = await self._move(move)
                if again is not None:
                    moved[index] = again
        return [moved[index] for index in sorted(moved)]

    async def _move(self, move: CommandMove) -> Command | None:
        """One move, read and compare-and-set until no other writer interferes."""
        for _ in range(COMMAND_RETRIES):
            before = await self._read(move.command_id)
            if before is None:
                return None
            after = move.apply(Command.from_json(orjson.loads(before)))
            if after is None:
                return None
            if await self._write(before, after) == 1:
                return after
        raise StoreError(f"{self._location}: command {move.command_id} kept changing under a move")

    # -- fan-out ----------------------------------------------------------

    @asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Changes]]:
        async with self._redis.pubsub() as pubsub:
            await self._run("subscribe", pubsub.subscribe(self._channel))
            # Wait for Redis to confirm, so nothing published after entering is missed.
            confirmed = await self._run("subscribe", pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT))
            if confirmed is None:
                raise self._failed("subscribe", TimeoutError("Redis did not confirm"))
            yield self._follow(pubsub)

    async def _follow(self, pubsub: PubSub) -> AsyncIterator[Changes]:
        catch_up = False
        while True:
            if not self._running:
                # Otherwise a subscriber outliving its store would reconnect forever.
                raise StoreError(f"{self._location}: the store stopped")
            if catch_up:
                try:
                    states = await self.devices()
                except StoreError:
                    await asyncio.sleep(RESUBSCRIBE_DELAY)
                    continue
                catch_up = False
                if states:
                    yield Changes(updated=states)
            try:
                # Reading reconnects a dropped connection and resubscribes (redis-py's
                # on_connect); Redis confirms that with a "subscribe" message.
                message = await pubsub.get_message(timeout=None)
            except _FAILURES as exc:
                self._error = f"subscriber disconnected: {exc}"
                await asyncio.sleep(RESUBSCRIBE_DELAY)
                continue
            if message is None:
                continue
            if message["type"] == "subscribe":
                catch_up = True
            elif message["type"] == "message":
                changes = self._decode(message["data"])
                if changes is not None:
                    yield changes

    def _decode(self, data: bytes) -> Changes | None:
        try:
            document = orjson.loads(data)
            return Changes(
                updated=document["updated"],
                removed=document["removed"],
                commands=document.get("commands", []),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            # The channel is open to any Redis client; a stray message must not end the stream.
            log.warning("ignored a malformed message on %s: %s", self._channel, exc)
            return None
