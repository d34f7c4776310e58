"""The broker seam; ``create_broker`` picks the embedded broker from the settings."""

from __future__ import annotations

from ..config import Settings
from ..errors import ConfigError
from .amqtt import AmqttBroker
from .base import Broker, connect_host
from .mosquitto import MosquittoBroker, mosquitto_binary

__all__ = ["AmqttBroker", "Broker", "MosquittoBroker", "connect_host", "create_broker"]


def create_broker(settings: Settings) -> Broker | None:
    """The broker to run, or ``None`` when ``--mqtt-url`` names an existing one."""
    if settings.mqtt.url is not None:
        return None
    kind = settings.mqtt.broker
    if kind == "auto":
        kind = "mosquitto" if mosquitto_binary() else "amqtt"
    if kind == "mosquitto":
        if mosquitto_binary() is None:
            raise ConfigError(
                "--broker mosquitto: mosquitto is not on PATH (apt-get install mosquitto)"
            )
        return MosquittoBroker(
            settings.mqtt.host, settings.mqtt.port, settings.data_dir / "mosquitto"
        )
    return AmqttBroker(settings.mqtt.host, settings.mqtt.port)
