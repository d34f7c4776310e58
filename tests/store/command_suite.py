"""The store's command contract, written once; a backend's test class mixes ``CommandSuite`` in
beside ``StoreSuite`` (same ``store`` fixture)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from iotstream.errors import IdempotencyConflict
from iotstream.models import (
    CANCELED,
    DELIVERED,
    EXPIRED,
    FAILED,
    QUEUED,
    SENT,
    SUCCEEDED,
    Batch,
    Changes,
    Command,
    CommandReply,
    DeviceId,
    Transition,
)
from iotstream.store import Store
from iotstream.store.base import CommandMove

T0 = 1_800_000_000.0
TTL = 60.0


def new_command(
    device: str = "r1",
    text: str = "goto",
    args: tuple[str | int | float, ...] = (1.5, 2),
    *,
    at: float = T0,
    key: str | None = None,
    fingerprint: str | None = None,
) -> Command:
    payload = " ".join([text, *map(str, args)])
    return Command(
        id=uuid.uuid4().hex,
        device_id=DeviceId(device),
        command=text,
        args=args,
        payload=payload,
        ttl=TTL,
        created_at=at,
        expires_at=at + TTL,
        transitions=(Transition(QUEUED, at),),
        idempotency_key=key,
        fingerprint=fingerprint,
    )


def reply(command: Command, status: str, at: float, **extra: object) -> CommandReply:
    return CommandReply(
        command.device_id,
        command.id,
        status,
        extra.get("result"),
        extra.get("error"),  # type: ignore[arg-type]
        at,
    )


async def next_commands(changes: object, count: int) -> list[dict[str, object]]:
    """The next ``count`` command moves a subscription announces."""
    got: list[dict[str, object]] = []
    while len(got) < count:
        change: Changes = await asyncio.wait_for(anext(changes), 10)  # type: ignore[call-overload]
        got += change.commands
    return got


class CommandSuite:
    async def test_a_command_is_kept_queued_and_listed(self, store: Store) -> None:
        older = await store.add_command(new_command(at=T0))
        newer = await store.add_command(new_command(at=T0 + 1, text="slam", args=()))
        await store.add_command(new_command("r2"))
        assert await store.command(older.id) == older
        assert await store.command("nothing") is None
        assert await store.device_commands("r1") == [newer, older]
        assert await store.device_commands("r1", limit=1) == [newer]
        assert await store.device_commands("r1", status=SENT) == []
        assert await store.queued_commands("r1") == [older, newer]
        assert await store.device_commands("nobody") == []
        assert await store.queued_devices() == {"r1", "r2"}
        await store.update_command(older.id, SENT, T0 + 2)
        await store.update_command(newer.id, CANCELED, T0 + 2)
        assert await store.queued_devices() == {"r2"}

    async def test_a_command_moves_to_its_end_and_each_move_is_announced(
        self, store: Store
    ) -> None:
        async with store.subscribe() as changes:
            command = await store.add_command(new_command())
            sent = await store.update_command(command.id, SENT, T0 + 1)
            assert sent is not None and sent.attempts == 1
            # Sent once: another instance trying too finds it sent already.
            assert await store.update_command(command.id, SENT, T0 + 1.5) is None
            assert await store.queued_commands("r1") == []
            delivered = await store.update_command(command.id, DELIVERED, T0 + 2)
            assert delivered is not None and delivered.delivery == "confirmed"
            done = await store.update_command(command.id, SUCCEEDED, T0 + 3, result={"at": [1, 2]})
            assert done is not None
            announced = await next_commands(changes, 4)
        assert [c["status"] for c in announced] == [QUEUED, SENT, DELIVERED, SUCCEEDED]
        assert announced[-1] == done.to_json()
        assert (done.closed, done.closed_at, done.reason, done.result) == (
            True,
            T0 + 3,
            SUCCEEDED,
            {"at": [1, 2]},
        )
        assert done.message
        assert done.transitions == (
            Transition(QUEUED, T0),
            Transition(SENT, T0 + 1),
            Transition(DELIVERED, T0 + 2),
            Transition(SUCCEEDED, T0 + 3),
        )
        assert await store.command(command.id) == done
        assert await store.device_commands("r1", status=SUCCEEDED) == [done]
        # An end state is final: a late report or a cancel changes nothing.
        assert await store.update_command(command.id, FAILED, T0 + 4) is None
        assert await store.update_command(command.id, CANCELED, T0 + 4) is None

    async def test_a_result_before_the_acknowledgement_counts(self, store: Store) -> None:
        command = await store.add_command(new_command())
        await store.update_command(command.id, SENT, T0 + 1)
        failed = await store.update_command(command.id, FAILED, T0 + 2, error="motor stalled")
        assert failed is not None
        assert (failed.status, failed.reason, failed.message) == (FAILED, FAILED, "motor stalled")
        assert await store.update_command(command.id, DELIVERED, T0 + 3) is None
        assert await store.command(command.id) == failed

    async def test_a_plain_device_that_never_answers_ends_sent_unconfirmed(
        self, store: Store
    ) -> None:
        command = await store.add_command(new_command())
        await store.update_command(command.id, SENT, T0 + 1)
        assert await store.due_commands(T0 + TTL - 1) == []
        assert await store.due_commands(T0 + TTL) == [command.id]
        [closed] = await store.expire_commands(T0 + TTL)
        assert (closed.status, closed.delivery, closed.closed, closed.reason) == (
            SENT,
            "unconfirmed",
            True,
            "unconfirmed",
        )
        assert await store.due_commands(T0 + TTL + 1) == []
        assert await store.command(command.id) == closed
        # It did arrive after all: its late outcome is kept.
        done = await store.update_command(command.id, SUCCEEDED, T0 + TTL + 2)
        assert done is not None and done.status == SUCCEEDED

    async def test_a_queued_command_expires_and_is_never_sent(self, store: Store) -> None:
        command = await store.add_command(new_command())
        assert await store.update_command(command.id, SENT, T0 + TTL) is None
        assert await store.update_command(command.id, EXPIRED, T0 + TTL - 1) is None
        [expired] = await store.expire_commands(T0 + TTL)
        assert (expired.status, expired.closed, expired.reason) == (EXPIRED, True, "ttl_expired")
        assert await store.queued_commands("r1") == []
        assert await store.update_command(command.id, SENT, T0 + TTL + 1) is None

    async def test_cancel_while_queued_or_sent_only(self, store: Store) -> None:
        queued = await store.add_command(new_command())
        sent = await store.add_command(new_command())
        delivered = await store.add_command(new_command())
        await store.update_command(sent.id, SENT, T0 + 1)
        await store.update_command(delivered.id, DELIVERED, T0 + 1)
        for command in (queued, sent):
            canceled = await store.update_command(command.id, CANCELED, T0 + 2)
            assert canceled is not None
            assert (canceled.status, canceled.closed, canceled.reason) == (
                CANCELED,
                True,
                "canceled",
            )
        assert await store.update_command(delivered.id, CANCELED, T0 + 2) is None
        assert await store.queued_commands("r1") == []
        assert await store.due_commands(T0 + TTL) == [delivered.id]

    async def test_an_idempotency_key_makes_one_command(self, store: Store) -> None:
        key = uuid.uuid4().hex
        first = await store.add_command(new_command(key=key, fingerprint="a"))
        again = await store.add_command(new_command(key=key, fingerprint="a"))
        assert again == first
        with pytest.raises(IdempotencyConflict):
            await store.add_command(new_command(key=key, fingerprint="b"))
        assert await store.device_commands("r1") == [first]

    async def test_replies_in_a_batch_move_commands_once(self, store: Store) -> None:
        command = await store.add_command(new_command())
        other = await store.add_command(new_command("r2"))
        await store.update_command(command.id, SENT, T0 + 1)
        batch = Batch(
            replies=[
                reply(command, DELIVERED, T0 + 2),
                reply(command, SUCCEEDED, T0 + 3, result="at goal"),
                # A device reports only on its own commands.
                CommandReply(DeviceId("r1"), other.id, SUCCEEDED, None, None, T0 + 3),
            ]
        )
        await store.apply(batch)
        done = await store.command(command.id)
        assert done is not None and (done.status, done.result) == (SUCCEEDED, "at goal")
        assert await store.command(other.id) == other
        await store.apply(batch)
        assert await store.command(command.id) == done

    async def test_concurrent_moves_of_one_command_apply_once(self, store: Store) -> None:
        command = await store.add_command(new_command())
        moves = await asyncio.gather(
            *(store.update_command(command.id, SENT, T0 + n) for n in range(1, 6)),
            *(store.update_command(command.id, CANCELED, T0 + n) for n in range(1, 6)),
        )
        final = await store.command(command.id)
        assert final is not None and final.status == CANCELED
        assert sum(1 for move in moves if move is not None and move.status == CANCELED) == 1
        assert sum(1 for move in moves if move is not None and move.status == SENT) <= 1
        assert final.attempts <= 1

    async def test_moves_in_one_batch_apply_in_order_and_are_announced_in_order(
        self, store: Store
    ) -> None:
        first = await store.add_command(new_command(at=T0))
        second = await store.add_command(new_command(at=T0 + 1))
        async with store.subscribe() as changes:
            moved = await store.move_commands(
                [
                    CommandMove(first.id, SENT, T0 + 2),
                    CommandMove(second.id, SENT, T0 + 2),
                    CommandMove(first.id, DELIVERED, T0 + 3),
                    CommandMove("nothing", SENT, T0 + 3),
                    CommandMove(first.id, SENT, T0 + 3),  # sent already: does not apply
                    CommandMove(first.id, SUCCEEDED, T0 + 4, result="done"),
                    # A device reports only on its own commands.
                    CommandMove(second.id, SUCCEEDED, T0 + 4, device_id="r2"),
                ]
            )
            announced = await next_commands(changes, 4)
        assert [(c.id, c.status) for c in moved] == [
            (first.id, SENT),
            (second.id, SENT),
            (first.id, DELIVERED),
            (first.id, SUCCEEDED),
        ]
        assert announced == [c.to_json() for c in moved]
        assert await store.command(first.id) == moved[-1]
        assert await store.command(second.id) == moved[1]
        assert moved[-1].result == "done" and moved[-1].attempts == 1
        assert await store.move_commands([]) == []

    async def test_queued_commands_of_several_devices_in_one_call(self, store: Store) -> None:
        older = await store.add_command(new_command("r1", at=T0))
        newer = await store.add_command(new_command("r1", at=T0 + 1))
        other = await store.add_command(new_command("r2", at=T0))
        assert await store.queued_by_device(["r1", "r2", "nobody"]) == {
            "r1": [older, newer],
            "r2": [other],
        }
        await store.update_command(older.id, SENT, T0 + 2)
        await store.update_command(other.id, CANCELED, T0 + 2)
        assert await store.queued_by_device(["r1", "r2"]) == {"r1": [newer]}
        assert await store.queued_by_device([]) == {}
        assert await store.queued_devices() == {"r1"}

    async def test_concurrent_batches_send_each_command_once(self, store: Store) -> None:
        commands = [await store.add_command(new_command(f"r{n % 3}")) for n in range(20)]
        moves = [CommandMove(c.id, SENT, T0 + 1) for c in commands]
        batches = await asyncio.gather(
            *(store.move_commands(moves[n:] + moves[:n]) for n in range(0, 20, 4))
        )
        sent = [command.id for batch in batches for command in batch]
        assert sorted(sent) == sorted(c.id for c in commands)
        for command in commands:
            stored = await store.command(command.id)
            assert stored is not None and (stored.status, stored.attempts) == (SENT, 1)
        assert await store.queued_devices() == set()
