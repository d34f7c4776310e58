"""The broker seam: an MQTT broker the embedded server runs for itself."""

from __future__ import annotations

import asyncio
from abc import abstractmethod

from ..errors import BrokerError
from ..lifecycle import Component


class Broker(Component):
    """A broker listening on ``host:port``; start and stop it with ``async with``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @abstractmethod
    async def start(self) -> None:
        """Start the broker; returns once it accepts connections."""


def connect_host(host: str) -> str:
    """The address a local client dials to reach a listener bound to ``host``."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


async def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Wait until ``host:port`` accepts a TCP connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(connect_host(host), port)
        except OSError:
            if loop.time() > deadline:
                raise BrokerError(f"nothing accepts connections on {host}:{port}") from None
            await asyncio.sleep(0.05)
        else:
            writer.close()
            await writer.wait_closed()
            return
