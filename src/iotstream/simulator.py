"""Simulated robots that drive smooth paths across a floor and report over MQTT."""

from __future__ import annotations

import asyncio
import math
import random
import time
from dataclasses import dataclass

import orjson

from .config import MqttEndpoint
from .mqtt import MqttConnection

FLOOR = (60.0, 40.0)  # metres: a warehouse floor
MARGIN = 4.0


@dataclass(slots=True)
class Robot:
    device_id: str
    x: float
    y: float
    heading: float  # radians, counter-clockwise from +x
    speed: float  # m/s
    turn: float  # rad/s


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


async def simulate(
    fleet: Fleet, endpoint: MqttEndpoint, rate: float, duration: float | None = None
) -> None:
    """Publish every robot ``rate`` times per second, for ``duration`` seconds or forever."""
    period = 1.0 / rate
    async with MqttConnection(endpoint, "simulator") as link:
        await link.connected.wait()
        loop = asyncio.get_running_loop()
        started = next_tick = loop.time()
        while duration is None or loop.time() - started < duration:
            fleet.step(period)
            for topic, payload in fleet.payloads(time.time()):
                link.publish(topic, payload)
            next_tick += period
            await asyncio.sleep(max(0.0, next_tick - loop.time()))
