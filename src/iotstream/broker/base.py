"""The broker seam: an MQTT broker the embedded server runs for itself."""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ..config import MqttEndpoint
from ..errors import BrokerError
from ..lifecycle import Component


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener beside the plain one: its port and PEM certificate (chain) and key."""

    port: int
    cert: Path
    key: Path


class Broker(Component):
    """A broker listening on ``host:port``; start and stop it with ``async with``."""

    tls: TlsListener | None = None

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @abstractmethod
    async def start(self) -> None:
        """Start the broker; returns once it accepts connections."""

    def client_endpoint(self, account: str) -> MqttEndpoint:
        """Where the server's own client ``account`` (``iotstream.broker.accounts``) connects:
        the plain listener, with that account's credentials when the broker checks them."""
        return MqttEndpoint(connect_host(self.host), self.port)


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
