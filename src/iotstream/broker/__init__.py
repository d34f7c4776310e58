"""The broker seam; ``create_broker`` picks the embedded broker from the settings.

With auth on (``iotstream.auth.auth_required``) the embedded broker is Mosquitto with the
accounts of ``iotstream.broker.accounts``; the in-process amqtt broker checks no accounts, so
it refuses to start then, and so it does with a TLS listener.
"""

from __future__ import annotations

from ..auth.policy import auth_required
from ..config import Settings
from ..errors import ConfigError
from .accounts import Accounts, Credentials
from .amqtt import AmqttBroker
from .base import Broker, TlsListener, connect_host
from .mosquitto import MosquittoBroker, mosquitto_binary

__all__ = [
    "Accounts",
    "AmqttBroker",
    "Broker",
    "Credentials",
    "MosquittoBroker",
    "TlsListener",
    "broker_accounts",
    "connect_host",
    "create_broker",
]

INSTALL = "apt-get install mosquitto"


def broker_accounts(settings: Settings) -> Accounts:
    """The accounts of the embedded broker of ``settings`` (``<data-dir>/mosquitto``)."""
    return Accounts(settings.data_dir / "mosquitto")


def create_broker(settings: Settings) -> Broker | None:
    """The broker to run, or ``None`` when ``--mqtt-url`` names an existing one."""
    mqtt = settings.mqtt
    if mqtt.url is not None:
        return None
    secured = auth_required(settings)
    kind = mqtt.broker
    if kind == "auto":
        kind = "mosquitto" if mosquitto_binary() else "amqtt"
    if kind == "mosquitto":
        if mosquitto_binary() is None:
            raise ConfigError(f"--broker mosquitto: mosquitto is not on PATH ({INSTALL})")
        tls = None
        if mqtt.tls_cert is not None and mqtt.tls_key is not None:
            tls = TlsListener(mqtt.tls_port, mqtt.tls_cert, mqtt.tls_key)
        return MosquittoBroker(
            mqtt.host,
            mqtt.port,
            settings.data_dir / "mosquitto",
            accounts=broker_accounts(settings) if secured else None,
            tls=tls,
        )
    if secured:
        raise ConfigError(
            "auth is on, and the in-process broker (amqtt) cannot check MQTT accounts: "
            f"install mosquitto ({INSTALL}), or keep every listener on loopback (--auth off)"
        )
    if mqtt.tls_cert is not None:
        raise ConfigError(f"--mqtt-tls-cert needs the mosquitto broker ({INSTALL})")
    return AmqttBroker(mqtt.host, mqtt.port)
