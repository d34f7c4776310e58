"""Simulated robots that drive smooth paths across a floor and report over MQTT.

Each robot is a device of the device SDK (``iotstream.device``): it reports its position,
its presence, and answers commands:

- ``goto x y`` drives it there; it reports success on arrival.
- ``stop`` ends a ``goto`` where the robot is.
- ``tracking``, ``slam``, ``none`` (the reference system's modes) switch its ``mode`` field.
- ``reboot s`` switches it off for ``s`` seconds: it reports success, says it is offline and
  leaves the broker, stands still and hears nothing; then it comes back (its persistent session
  keeps what was published to it meanwhile, within each message's expiry).

Beside its position it reports ``mode``, ``lastCommand`` (the text of the last command it
ran) and ``commands`` (how many it ran), so what reached it shows in its state.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from .config import MqttEndpoint
from .errors import missing_extra

if TYPE_CHECKING:
    from .device import Device, Handler

FLOOR = (60.0, 40.0)  # metres: a warehouse floor
MARGIN = 4.0
ARRIVED = 0.3
"""Metres from its goal at which a robot has arrived."""
GOTO_TIMEOUT = 300.0
MAX_REBOOT = 3600.0
"""Seconds a ``reboot`` may keep a robot off."""


@dataclass(slots=True)
class Robot:
    device_id: str
    x: float
    y: float
    heading: float  # radians, counter-clockwise from +x
    speed: float  # m/s
    turn: float  # rad/s
    mode: str = "none"
    """The reference system's mode (``tracking``, ``slam``, ``none``), as last commanded."""
    goal: tuple[float, float] | None = None
    """Where ``goto`` sends it; ``None`` while it roams."""
    arrived: threading.Event = field(default_factory=threading.Event)
    off: bool = False
    """Switched off (``reboot``): it neither moves nor reports."""


class Fleet:
    """``count`` robots named robot1..robotN with reproducible paths for a given seed."""

    def __init__(self, count: int, seed: int | None = None, prefix: str = "robot") -> None:
        self.random = random.Random(seed)
        r = self.random
        self.robots = [
            Robot(
                f"{prefix}{i + 1}",
                r.uniform(MARGIN, FLOOR[0] - MARGIN),
                r.uniform(MARGIN, FLOOR[1] - MARGIN),
                r.uniform(-math.pi, math.pi),
                r.uniform(0.6, 1.6),
                0.0,
            )
            for i in range(count)
        ]

    def step(self, dt: float) -> None:
        r = self.random
        width, height = FLOOR
        for robot in self.robots:
            if robot.off:
                continue
            if robot.goal is not None:
                self._drive_to_goal(robot, dt)
                continue
            # The turn rate wanders; near a wall it steers toward the middle of the floor.
            robot.turn = max(-0.8, min(0.8, robot.turn + r.gauss(0.0, 0.6) * dt))
            near_wall = not (
                MARGIN < robot.x < width - MARGIN and MARGIN < robot.y < height - MARGIN
            )
            if near_wall:
                inward = math.atan2(height / 2 - robot.y, width / 2 - robot.x)
                error = math.remainder(inward - robot.heading, math.tau)
                robot.turn = max(-1.2, min(1.2, 2.0 * error))
            robot.heading = math.remainder(robot.heading + robot.turn * dt, math.tau)
            robot.speed = max(0.3, min(2.0, robot.speed + r.gauss(0.0, 0.2) * dt))
            robot.x = min(width, max(0.0, robot.x + math.cos(robot.heading) * robot.speed * dt))
            robot.y = min(height, max(0.0, robot.y + math.sin(robot.heading) * robot.speed * dt))

    @staticmethod
    def _drive_to_goal(robot: Robot, dt: float) -> None:
        assert robot.goal is not None
        gx, gy = robot.goal
        distance = math.hypot(gx - robot.x, gy - robot.y)
        if distance <= ARRIVED:
            robot.goal = None
            robot.turn = 0.0
            robot.arrived.set()
            return
        robot.heading = math.atan2(gy - robot.y, gx - robot.x)
        robot.speed = max(robot.speed, 1.0)
        step = min(distance, robot.speed * dt)
        robot.x += math.cos(robot.heading) * step
        robot.y += math.sin(robot.heading) * step

    def goto(self, robot: Robot, x: float, y: float, timeout: float = GOTO_TIMEOUT) -> bool:
        """Send ``robot`` to ``(x, y)`` (clamped to the floor) and wait until it is there
        (``step`` moves it); ``False`` when it did not arrive within ``timeout`` seconds."""
        width, height = FLOOR
        robot.arrived.clear()
        robot.goal = (min(width, max(0.0, x)), min(height, max(0.0, y)))
        return robot.arrived.wait(timeout)

    def payloads(self, now: float) -> list[tuple[str, bytes]]:
        """One ``(topic, payload)`` per robot in the reference format plus heading and speed."""
        return [
            (
                f"sensors/{robot.device_id}/coordinates",
                orjson.dumps(
                    {
                        "x": round(robot.x, 3),
                        "y": round(robot.y, 3),
                        "heading": round(math.degrees(robot.heading), 1),
                        "speed": round(robot.speed, 2),
                        "timestamp": round(now, 3),
                    }
                ),
            )
            for robot in self.robots
        ]


class _Power:
    """Switches robots off and on again (``reboot``) until the simulation ends."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ended = threading.Event()

    def reboot(self, device: Device, robot: Robot, seconds: float) -> None:
        """In a thread of its own: the handler's outcome goes out before the device stops."""
        robot.off = True
        device.stop()
        self._ended.wait(seconds)
        with self._lock:
            if self._ended.is_set():
                return
            robot.off = False
            device.start(timeout=None)

    def end(self) -> None:
        """No robot comes back after this."""
        with self._lock:
            self._ended.set()


def _device(
    fleet: Fleet, robot: Robot, endpoint: MqttEndpoint, period: float, power: _Power
) -> Device:
    try:
        from .device import CommandRejected, Device
    except ImportError as exc:
        raise missing_extra("device", "paho-mqtt") from exc

    credentials = None
    if endpoint.username is not None:
        credentials = (endpoint.username, endpoint.password or "")
    device = Device(robot.device_id, str(endpoint), credentials, batch_interval=period)
    ran = 0

    def command(name: str) -> Callable[[Handler], Handler]:
        """Register a handler that also reports the command as the robot's last one."""

        def register(handler: Handler) -> Handler:
            def run(*args: str) -> Any:
                nonlocal ran
                ran += 1
                device.field("lastCommand", " ".join([name, *args]))
                device.field("commands", ran)
                return handler(*args)

            device.command(name)(run)
            return handler

        return register

    @command("goto")
    def goto(x: str, y: str) -> dict[str, float]:
        try:
            goal = float(x), float(y)
        except ValueError:
            raise CommandRejected(f"goto needs two numbers, not {x!r} {y!r}") from None
        if not all(math.isfinite(v) for v in goal):
            raise CommandRejected("goto needs finite numbers")
        if not fleet.goto(robot, *goal):
            raise TimeoutError(f"did not reach {goal} in {GOTO_TIMEOUT:g} s")
        return {"x": round(robot.x, 3), "y": round(robot.y, 3)}

    for mode in ("tracking", "slam", "none"):  # the reference system's modes

        def switch(mode: str = mode) -> dict[str, str]:
            robot.mode = mode
            device.field("mode", mode)
            return {"mode": mode}

        command(mode)(switch)

    @command("stop")
    def stop() -> dict[str, float]:
        robot.goal = None
        robot.arrived.set()
        return {"x": round(robot.x, 3), "y": round(robot.y, 3)}

    @command("reboot")
    def reboot(seconds: str) -> dict[str, float]:
        try:
            off_for = float(seconds)
        except ValueError:
            raise CommandRejected(f"reboot needs a number of seconds, not {seconds!r}") from None
        if not 0 < off_for <= MAX_REBOOT:
            raise CommandRejected(f"reboot takes more than 0 and at most {MAX_REBOOT:g} seconds")
        threading.Thread(
            target=power.reboot,
            args=(device, robot, off_for),
            name=f"{robot.device_id}-reboot",
            daemon=True,
        ).start()
        return {"offFor": off_for}

    device.field("mode", robot.mode)
    return device


async def simulate(
    fleet: Fleet, endpoint: MqttEndpoint, rate: float, duration: float | None = None
) -> None:
    """Publish every robot ``rate`` times per second, for ``duration`` seconds or forever;
    each robot answers commands (see the module docstring) as a device of the device SDK."""
    period = 1.0 / rate
    power = _Power()
    devices = [_device(fleet, robot, endpoint, period, power) for robot in fleet.robots]
    try:
        # Connecting happens in paho's threads; wait for all of them at once.
        await asyncio.gather(*(asyncio.to_thread(device.start, 10.0) for device in devices))
        loop = asyncio.get_running_loop()
        started = next_tick = loop.time()
        while duration is None or loop.time() - started < duration:
            fleet.step(period)
            now = time.time()
            for device, robot in zip(devices, fleet.robots, strict=True):
                if robot.off:
                    continue
                device.position(
                    round(robot.x, 3),
                    round(robot.y, 3),
                    timestamp=round(now, 3),
                    heading=round(math.degrees(robot.heading), 1),
                    speed=round(robot.speed, 2),
                )
            next_tick += period
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
    finally:
        power.end()
        for robot in fleet.robots:  # a goto waiting for its robot gives up
            robot.goal = None
            robot.arrived.set()
        with contextlib.suppress(Exception):
            await asyncio.gather(*(asyncio.to_thread(device.stop) for device in devices))
