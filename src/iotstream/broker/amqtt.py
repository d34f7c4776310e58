"""An in-process amqtt broker, for machines without mosquitto."""

from __future__ import annotations

import logging
from typing import Any

from ..errors import BrokerError
from ..health import Health
from .base import Broker

log = logging.getLogger(__name__)


class AmqttBroker(Broker):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self._broker: Any = None

    async def start(self) -> None:
        from amqtt.broker import Broker as AmqttServer

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True},
            },
        }
        # start() returns once amqtt listens; probing the port with a bare TCP connection
        # would leave a socket that amqtt never closes (it waits for a CONNECT).
        broker = AmqttServer(config)
        try:
            await broker.start()
        except Exception as exc:
            raise BrokerError(
                f"amqtt broker failed to start on {self.host}:{self.port}: {exc}"
            ) from exc
        self._broker = broker
        for name in ("amqtt", "transitions"):
            logging.getLogger(name).setLevel(logging.WARNING)
        log.info("in-process amqtt broker listening on %s:%s", self.host, self.port)

    async def stop(self) -> None:
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None

    def health(self) -> Health:
        running = self._broker is not None and str(self._broker.transitions.state) == "started"
        return Health(running, f"in-process amqtt on {self.host}:{self.port}")
