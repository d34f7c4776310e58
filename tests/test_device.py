"""The device SDK (paho-mqtt, MQTT 5) against the real pipeline: positions, presence,
commands answered, a redelivery not run twice, and commands kept while it is offline."""

from __future__ import annotations

import asyncio
import subprocess
import threading

from iotstream.commands import COMMAND_QOS, command_topic, result_topic
from iotstream.device import CommandRejected, Device
from iotstream.models import DeviceId

from .conftest import require
from .faults import wait_until
from .test_commands import Pipeline, pipeline, wait_until_offline

__all__ = ["pipeline"]  # the fixture, shared with test_commands


def robot(pipeline: Pipeline, device_id: str) -> tuple[Device, list[tuple[str, ...]]]:
    device = Device(device_id, f"mqtt://127.0.0.1:{pipeline.broker.port}", batch_interval=0.02)
    calls: list[tuple[str, ...]] = []

    @device.command("goto")
    def goto(x: str, y: str) -> dict[str, float]:
        calls.append((x, y))
        if float(x) < 0:
            raise CommandRejected("the goal is off the floor")
        device.position(float(x), float(y))
        return {"x": float(x), "y": float(y)}

    @device.command("explode")
    def explode() -> None:
        raise RuntimeError("no")

    return device, calls


async def test_a_device_reports_positions_and_carries_out_commands(pipeline: Pipeline) -> None:
    device, calls = robot(pipeline, "sdk1")
    await asyncio.to_thread(device.start)
    try:
        await wait_until_state(pipeline, "sdk1", lambda s: s.get("presence") == "online")
        # After it: the presence message is dated when the server received it.
        device.position(1.0, 2.0, heading=90)
        await wait_until_state(pipeline, "sdk1", lambda s: s.get("heading") == 90)
        good = await pipeline.commands.submit("sdk1", "goto", [3.5, 4])
        done = await pipeline.wait_for_status(good.id, "queued", "sent", "delivered", "succeeded")
        assert done.result == {"x": 3.5, "y": 4.0}
        await wait_until_state(pipeline, "sdk1", lambda s: s.get("x") == 3.5)
        refused = await pipeline.commands.submit("sdk1", "goto", [-1, 0])
        rejected = await pipeline.wait_for_status(
            refused.id, "queued", "sent", "delivered", "rejected"
        )
        assert rejected.message == "the goal is off the floor"
        broken = await pipeline.commands.submit("sdk1", "explode")
        failed = await pipeline.wait_for_status(broken.id, "queued", "sent", "delivered", "failed")
        assert failed.message == "RuntimeError: no"
        unknown = await pipeline.commands.submit("sdk1", "dance")
        await pipeline.wait_for_status(unknown.id, "queued", "sent", "delivered", "rejected")
        assert calls == [("3.5", "4"), ("-1", "0")]
    finally:
        await asyncio.to_thread(device.stop)


async def test_a_redelivered_command_runs_once(pipeline: Pipeline) -> None:
    device, calls = robot(pipeline, "sdk2")
    await asyncio.to_thread(device.start)
    try:
        command = await pipeline.commands.submit("sdk2", "goto", [1, 1])
        await pipeline.wait_for_status(command.id, "queued", "sent", "delivered", "succeeded")
        # The same command again, as a broker redelivers it.
        pipeline.commands.connection.publish(
            command_topic(DeviceId("sdk2")),
            b"goto 1 1",
            qos=COMMAND_QOS,
            correlation_data=command.id.encode(),
            response_topic=result_topic(DeviceId("sdk2")),
        )
        await wait_until(lambda: device.duplicates == 1, "the repeat was recognised")
        assert calls == [("1", "1")]
    finally:
        await asyncio.to_thread(device.stop)


async def test_a_command_waits_for_a_device_that_went_offline(pipeline: Pipeline) -> None:
    device, calls = robot(pipeline, "sdk3")
    await asyncio.to_thread(device.start)
    await wait_until_state(pipeline, "sdk3", lambda s: s.get("presence") == "online")
    await asyncio.to_thread(device.stop)
    await wait_until_offline(pipeline, "sdk3")
    command = await pipeline.commands.submit("sdk3", "goto", [2, 2], ttl=30)
    assert command.status == "queued"
    back, calls = robot(pipeline, "sdk3")
    await asyncio.to_thread(back.start)
    try:
        done = await pipeline.wait_for_status(
            command.id, "queued", "sent", "delivered", "succeeded"
        )
        assert done.attempts == 1
        assert calls == [("2", "2")]
    finally:
        await asyncio.to_thread(back.stop)
    assert threading.active_count() < 50


async def wait_until_state(pipeline: Pipeline, device_id: str, holds: object) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:
        state = await pipeline.store.device(device_id)
        if state is not None and holds(state):  # type: ignore[operator]
            return
        assert loop.time() < deadline, f"{device_id}: {state}"
        await asyncio.sleep(0.01)


async def gone_away(pipeline: Pipeline, device_id: str) -> tuple[Device, list[tuple[str, ...]]]:
    """A robot that connected once and left (its session stays with the broker)."""
    device, calls = robot(pipeline, device_id)
    await asyncio.to_thread(device.start)
    await asyncio.to_thread(device.stop)
    return device, calls


async def test_the_session_persists_so_the_broker_keeps_commands_while_away(
    pipeline: Pipeline,
) -> None:
    await gone_away(pipeline, "sdk4")
    # Published while the device is away (as by a server that took it for online): the
    # broker holds it for the device's session.
    pipeline.commands.connection.publish(
        command_topic(DeviceId("sdk4")),
        b"goto 7 8",
        qos=COMMAND_QOS,
        correlation_data=b"held-1",
        response_topic=result_topic(DeviceId("sdk4")),
        message_expiry_interval=60,
    )
    await pipeline.commands.connection.drain()
    back, calls = robot(pipeline, "sdk4")
    await asyncio.to_thread(back.start)
    try:
        await wait_until(lambda: calls == [("7", "8")], "the held command ran")
    finally:
        await asyncio.to_thread(back.stop)


async def test_a_plain_publishers_command_runs_on_the_device(pipeline: Pipeline) -> None:
    """The reference system's ``mosquitto_pub -t orin/robot1/command -m tracking``: no id to
    acknowledge, the handler runs all the same."""
    device, _ = robot(pipeline, "sdk5")
    modes: list[str] = []
    device.command("tracking")(lambda: modes.append("tracking"))
    await asyncio.to_thread(device.start)
    try:
        await asyncio.to_thread(
            subprocess.run,
            [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(pipeline.broker.port),
             "-t", "orin/sdk5/command", "-m", "tracking"],
            check=True, timeout=10,
        )  # fmt: skip
        await wait_until(lambda: modes == ["tracking"], "the plain command ran")
        assert (device.handled, device.duplicates) == (1, 0)
    finally:
        await asyncio.to_thread(device.stop)


async def test_a_stopped_device_starts_again_and_keeps_what_it_reported_offline(
    pipeline: Pipeline,
) -> None:
    device, calls = await gone_away(pipeline, "sdk6")
    await wait_until_offline(pipeline, "sdk6")
    device.field("battery", 87)  # offline: kept for the next connection
    device.flush()
    await asyncio.to_thread(device.start)
    try:
        await wait_until_state(
            pipeline, "sdk6", lambda s: s.get("presence") == "online" and s.get("battery") == 87
        )
        command = await pipeline.commands.submit("sdk6", "goto", [5, 6])
        await pipeline.wait_for_status(command.id, "queued", "sent", "delivered", "succeeded")
        assert calls == [("5", "6")]
    finally:
        await asyncio.to_thread(device.stop)
