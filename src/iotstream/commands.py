"""Commands to devices, tracked to their end (``iotstream.models.Command``).

A command is kept in the store as ``queued``. When its device is online it is published at
once; otherwise it waits, and is published when the device comes back, only while its TTL
has not passed (the store's ``advance`` refuses a late ``sent``), so nothing runs late.

On the wire the command is the plain text it always was, on ``orin/{device_id}/command`` with
QoS 1, so devices that know nothing else keep working. It is published over MQTT 5 with
correlation data (the command id), a response topic (``orin/{device_id}/command/result``)
and a message expiry (what is left of its TTL): the broker drops it rather than deliver it
late to a device whose persistent session held it. MQTT 3.1.1 devices never see them. A device
that knows them answers on ``orin/{device_id}/command/ack`` and ``.../result``; those reach
the store through the ingest and the bus like every message (``iotstream.parser``).

Presence: a device's ``presence`` field (``online``/``offline``, the retained
``sensors/{device_id}/presence`` topic with its will that the device SDK sets up) when it has
one; otherwise its last reading's age (``offline_after``). A device the store does not know
counts as online: the broker's message expiry still keeps it from running a command late.

What goes to the broker is valid for it: the device id is a ``DeviceId`` (an MQTT topic level
Mosquitto accepts) and the command printable text, so no request can make the broker drop the
connection commands go out on.

Every api instance runs a ``CommandService``: each follows the store's announcements, so a
device's return seen by any of them sends its queued commands, and the store's atomic moves
let only one of them send each command.

A fleet coming back at once (a site's network returning) is one dispatch: the devices that
returned since the last dispatch are looked at together, their queued commands read in one
store call and moved to ``sent`` in batches of ``SEND_BATCH``, each batch one store call and
one WebSocket frame. Publishing keeps to the broker's receive maximum (the QoS 1 messages it
lets a client have unacknowledged): at that limit it waits for the acknowledgements, so a
command moved to ``sent`` is always published.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
import uuid
from collections.abc import Sequence

import orjson

from .errors import CommandError, InvalidCommand, InvalidDeviceId, InvalidMessage, StoreError
from .health import Health
from .lifecycle import Component, cancel_all, crashed, spawn
from .metrics import COMMANDS, command_moved, zero
from .models import (
    CANCELED,
    COMMAND_STATES,
    DEVICE_ID,
    QUEUED,
    RECEIVED_AT,
    SENT,
    Command,
    DeviceId,
    DeviceState,
    Transition,
    mqtt_text_problem,
)
from .mqtt import MqttConnection
from .store import Store
from .store.base import CommandMove

log = logging.getLogger(__name__)

PREDEFINED = ("tracking", "slam", "none")
MAX_COMMAND = 256
MAX_PAYLOAD = 1024
"""Characters of a command with its args, as published."""
COMMAND_QOS = 1
PRESENCE = "presence"
ONLINE = "online"
OFFLINE = "offline"
SWEEP_INTERVAL = 1.0
SEND_BATCH = 500
"""Commands moved to ``sent`` in one store call before they are published."""

Arg = str | int | float


def command_topic(device_id: DeviceId) -> str:
    return f"orin/{device_id}/command"


def ack_topic(device_id: DeviceId) -> str:
    return f"orin/{device_id}/command/ack"


def result_topic(device_id: DeviceId) -> str:
    return f"orin/{device_id}/command/result"


def presence_topic(device_id: DeviceId) -> str:
    return f"sensors/{device_id}/{PRESENCE}"


def validate(command: str) -> None:
    """Raise ``InvalidCommand`` with the reason when the command text cannot be sent."""
    if not command:
        raise InvalidCommand("command is empty")
    if len(command) > MAX_COMMAND:
        raise InvalidCommand(f"command is longer than {MAX_COMMAND} characters")
    # Printable text has no control character, surrogate or noncharacter, so it is valid MQTT
    # UTF-8 already; the second check keeps it so should the first rule ever be relaxed.
    if not command.isprintable():
        raise InvalidCommand("command contains characters that are not printable")
    problem = mqtt_text_problem(command)
    if problem is not None:
        raise InvalidCommand(f"command {problem}")


def payload_of(command: str, args: Sequence[Arg]) -> str:
    """The text a device receives: the command, then each arg, separated by spaces."""
    words = [command]
    for arg in args:
        text = repr(arg) if isinstance(arg, float) else str(arg)
        if not text or any(c.isspace() for c in text) or not text.isprintable():
            raise InvalidCommand(f"arg {text!r} is empty, holds a blank or is not printable")
        words.append(text)
    payload = " ".join(words)
    if len(payload) > MAX_PAYLOAD:
        raise InvalidCommand(f"the command with its args is longer than {MAX_PAYLOAD} characters")
    return payload


def fingerprint(device_id: str, command: str, args: Sequence[Arg], ttl: float | None) -> str:
    """What a request said, to tell a repeat with the same idempotency key from another one."""
    said = orjson.dumps([device_id, command, list(args), ttl])
    return hashlib.blake2b(said, digest_size=16).hexdigest()


def is_online(state: DeviceState | None, now: float, offline_after: float) -> bool:
    """Whether a device may be sent a command now (see the module docstring)."""
    if state is None:
        return True
    presence = state.get(PRESENCE)
    if presence == OFFLINE:
        return False
    if presence == ONLINE:
        return True
    received = state.get(RECEIVED_AT)
    return not isinstance(received, int | float) or now - received <= offline_after


class CommandService(Component):
    """Tracks commands in ``store`` and sends them over ``connection``; ``async with`` runs
    what sends queued commands when their device returns and closes those past their TTL."""

    def __init__(
        self,
        connection: MqttConnection,
        store: Store,
        *,
        default_ttl: float = 60.0,
        max_ttl: float = 3600.0,
        offline_after: float = 30.0,
        sweep_interval: float = SWEEP_INTERVAL,
    ) -> None:
        self.connection = connection
        self.store = store
        zero(COMMANDS, COMMAND_STATES)
        self.default_ttl = default_ttl
        self.max_ttl = max_ttl
        self.offline_after = offline_after
        self.sweep_interval = sweep_interval
        self.sent = 0
        """Commands published by this instance."""
        self._waiting: set[str] = set()
        """Devices that may have queued commands."""
        self._due: dict[str, DeviceState | None] = {}
        """Devices to look at in the next dispatch, with their newest state when known."""
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed = asyncio.Event()

    # -- requests ---------------------------------------------------------

    async def submit(
        self,
        device_id: str,
        command: str,
        args: Sequence[Arg] = (),
        ttl: float | None = None,
        idempotency_key: str | None = None,
    ) -> Command:
        """Keep a new command and send it if its device is online; raises ``InvalidCommand``
        for one that cannot be sent, ``IdempotencyConflict`` for a key used for another
        request, ``CommandError`` when the broker is not reachable."""
        validate(command)
        payload = payload_of(command, args)
        if ttl is not None and not 0 < ttl <= self.max_ttl:
            raise InvalidCommand(f"ttl must be more than 0 and at most {self.max_ttl:g} seconds")
        try:
            device = DeviceId.parse(device_id)
        except InvalidDeviceId as exc:
            raise InvalidCommand(str(exc)) from exc
        if not self.connection.connected.is_set():
            raise CommandError(f"the MQTT broker at {self.connection.endpoint} is not reachable")
        now = time.time()
        lifetime = self.default_ttl if ttl is None else ttl
        made = Command(
            id=uuid.uuid4().hex,
            device_id=device,
            command=command,
            args=tuple(args),
            payload=payload,
            ttl=lifetime,
            created_at=now,
            expires_at=now + lifetime,
            transitions=(Transition(QUEUED, now),),
            idempotency_key=idempotency_key,
            fingerprint=None
            if idempotency_key is None
            else fingerprint(device, command, args, ttl),
        )
        stored = await self.store.add_command(made)
        if stored.id != made.id:
            return stored  # a repeat: the command that key made
        if not is_online(await self.store.device(device), now, self.offline_after):
            self._waiting.add(device)
            return stored
        published = await self._send([stored])
        if published:
            return published[0]
        # Not sent by this instance: another one did, or it waits for the link or the sweep.
        return await self.store.command(stored.id) or stored

    async def cancel(self, command_id: str) -> Command | None:
        """The command canceled, or ``None`` when it is past being canceled (or unknown)."""
        return await self.store.update_command(command_id, CANCELED, time.time())

    # -- sending ----------------------------------------------------------

    async def _send(self, commands: Sequence[Command]) -> list[Command]:
        """Publish queued commands in their order, in batches of ``SEND_BATCH`` moved to
        ``sent`` at once, unless another instance did or their TTL is about to pass; those
        this instance published. Returns nothing while the link is down: they wait for it."""
        published: list[Command] = []
        for first in range(0, len(commands), SEND_BATCH):
            if not self.connection.connected.is_set():
                break
            now = time.time()
            # A second is the finest expiry MQTT has: with less left, it could arrive late.
            batch = [c for c in commands[first : first + SEND_BATCH] if c.expires_at - now >= 1]
            moved = await self.store.move_commands([CommandMove(c.id, SENT, now) for c in batch])
            for command in moved:
                if await self._publish(command):
                    published.append(command)
        self.sent += len(published)
        return published

    async def _publish(self, command: Command) -> bool:
        """Publish a command moved to ``sent``; ``False`` when it could not go (it closes as
        sent, unconfirmed, once its TTL passes)."""
        while True:
            expiry = math.floor(command.expires_at - time.time())
            if expiry < 1:
                log.warning("command %s not published: its TTL ran out while it waited", command.id)
                return False
            try:
                self.connection.publish(
                    command_topic(command.device_id),
                    command.payload.encode(),
                    qos=COMMAND_QOS,
                    correlation_data=command.id.encode(),
                    response_topic=result_topic(command.device_id),
                    message_expiry_interval=expiry,
                )
            except InvalidMessage as exc:  # validated on the way in: should not happen
                log.error(
                    "command %s could not be published: %s",
                    command.id,
                    exc,
                    extra={"device_id": command.device_id, "command_id": command.id},
                )
                return False
            except OverflowError:
                # As many QoS 1 messages as the broker's receive maximum allows are waiting
                # for its acknowledgement (gmqtt has no packet id left): wait for them.
                await self.connection.drain()
                continue
            return True

    async def _send_queued(self, due: dict[str, DeviceState | None]) -> list[Command]:
        """Send the queued commands of those ``due`` devices that are online (by the state
        given, else the store's), oldest first, with a few store calls for them all; those
        sent. A device stays waiting while it has commands left queued."""
        now = time.time()
        online = []
        for device_id, state in due.items():
            if state is None:
                state = await self.store.device(device_id)
            if is_online(state, now, self.offline_after):
                online.append(device_id)
        if not online:
            return []
        queued = await self.store.queued_by_device(online)
        sent = await self._send([c for device_id in online for c in queued.get(device_id, ())])
        left = await self.store.queued_by_device(online)  # waiting for the link, or expiring
        self._waiting.difference_update(d for d in online if d not in left)
        return sent

    def _check(self, device_id: str, state: DeviceState | None = None) -> None:
        """Look at the device in the next dispatch (``state``: its newest, if known)."""
        if state is not None or device_id not in self._due:
            self._due[device_id] = state
        self._wake.set()

    async def _dispatch(self) -> None:
        """Send the queued commands of every device due for a look; the devices that came
        back while one dispatch ran are all handled by the next, together."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            due, self._due = self._due, {}
            try:
                await self._send_queued(due)
            except StoreError as exc:
                # They stay waiting: their next change, or the link's return, tries again.
                log.warning("queued commands of %d devices not sent now: %s", len(due), exc)

    # -- background -------------------------------------------------------

    async def _follow(self) -> None:
        async with self.store.subscribe() as changes:
            self._subscribed.set()
            async for change in changes:
                for document in change.commands:
                    command_moved(document)
                    if document["status"] == QUEUED:
                        self._waiting.add(document["deviceId"])
                        self._check(document["deviceId"])
                if self._waiting:
                    for state in change.updated:
                        device_id = state[DEVICE_ID]
                        if device_id in self._waiting:
                            self._check(device_id, state)

    async def _sweep(self) -> None:
        link_was_up = self.connection.connected.is_set()
        while True:
            await asyncio.sleep(self.sweep_interval)
            try:
                await self.store.expire_commands(time.time())
            except StoreError as exc:
                log.warning("command expiry skipped: %s", exc)
            link_is_up = self.connection.connected.is_set()
            if link_is_up and not link_was_up:
                for device_id in list(self._waiting):
                    self._check(device_id)  # what waited for the link
            link_was_up = link_is_up

    async def start(self) -> None:
        self._waiting.update(await self.store.queued_devices())
        self._tasks.append(spawn(self._follow(), "commands-follow"))
        self._tasks.append(spawn(self._dispatch(), "commands-dispatch"))
        self._tasks.append(spawn(self._sweep(), "commands-sweep"))
        await asyncio.wait_for(self._subscribed.wait(), 10)
        for device_id in list(self._waiting):
            self._check(device_id)

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        self._tasks = []

    def health(self) -> Health:
        stopped = crashed(self._tasks)
        if stopped:
            return Health(False, f"stopped: {', '.join(stopped)}")
        link = self.connection.health()
        waiting = f", {len(self._waiting)} devices with queued commands"
        return Health(link.ok, f"{link.detail}{waiting}")
