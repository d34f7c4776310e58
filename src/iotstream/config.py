"""Settings: one typed tree, read from defaults < TOML file < ``IOTSTREAM_*`` env < CLI flags."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .errors import ConfigError

BrokerKind = Literal["auto", "mosquitto", "amqtt"]


class Settings(BaseSettings):
    """Every setting of iotstream. Field descriptions are the ``--help`` text."""

    model_config = SettingsConfigDict(env_prefix="IOTSTREAM_", extra="forbid")

    # MQTT
    mqtt_host: str = Field(
        "127.0.0.1",
        description="address the embedded broker listens on; 0.0.0.0 opens it to the network",
    )
    mqtt_port: int = Field(3123, ge=1, le=65535, description="port of the embedded broker")
    mqtt_url: str | None = Field(
        None,
        description="use this existing broker (mqtt://host:port) instead of starting one",
    )
    broker: BrokerKind = Field(
        "auto",
        description="embedded broker: mosquitto child process, in-process amqtt, "
        "or auto (mosquitto when on PATH)",
    )
    mqtt_qos: int = Field(1, ge=0, le=2, description="QoS of the ingest subscription")
    mqtt_topics: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["#"], description="topic filters the ingest subscribes to"
    )
    max_payload: int = Field(
        64 * 1024, ge=1, description="largest accepted MQTT payload in bytes; larger is rejected"
    )

    mqtt_client_id: str | None = Field(
        None,
        description="fixed MQTT client id of the ingest; with it the session persists "
        "(clean session off) so the broker keeps messages while the bridge is away",
    )
    mqtt_share_group: str | None = Field(
        None,
        description="subscribe as $share/<group>/<topic> so several bridges split the stream",
    )

    # Distributed mode
    kafka_bootstrap: str | None = Field(
        None, description="Kafka bootstrap servers (host:port,...); the bus is Kafka when set"
    )
    kafka_topic: str = Field("mqtt-messages", description="Kafka topic of the message log")
    kafka_partitions: int = Field(
        100, ge=1, description="partitions of the Kafka topic when iotstream creates it"
    )
    kafka_replication_factor: int = Field(
        1, ge=1, description="replication factor of the Kafka topics when iotstream creates them"
    )
    kafka_retention_ms: int | None = Field(
        None, ge=1, description="retention of the Kafka topics in ms (default: the broker's)"
    )
    kafka_group: str = Field("iotstream-processor", description="consumer group of the processors")
    redis_url: str | None = Field(
        None, description="Redis URL (redis://host:port/db); the store is Redis when set"
    )
    redis_prefix: str = Field("iotstream", description="prefix of every Redis key and channel")
    redis_dedupe_window: int = Field(
        64,
        ge=0,
        description="readings per device remembered in Redis so a replayed or redelivered "
        "reading is not counted twice",
    )

    # HTTP and WebSocket
    http_host: str = Field(
        "127.0.0.1", description="address of the HTTP API; 0.0.0.0 opens it to the network"
    )
    http_port: int = Field(8081, ge=1, le=65535, description="port of the HTTP API and WebSocket")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"], description="origins allowed by CORS (comma-separated)"
    )
    ws_interval: float = Field(
        0.01, gt=0, le=60, description="seconds between WebSocket broadcasts (updates coalesce)"
    )
    ws_client_buffer: int = Field(
        64,
        ge=1,
        description="frames queued per WebSocket client; a client past it gets a fresh snapshot",
    )
    ws_ping_interval: float = Field(20.0, gt=0, description="seconds between WebSocket pings")
    ws_compression: bool = Field(
        False,
        description="offer permessage-deflate; it compresses every frame once per client, "
        "which costs more CPU than a frame's encoding",
    )

    # State
    device_ttl: float | None = Field(
        None, gt=0, description="drop devices silent for this many seconds (default: never)"
    )
    deadletter_limit: int = Field(
        1000, ge=1, description="rejected messages kept for GET /api/deadletters"
    )
    data_dir: Path = Field(Path("data"), description="directory for everything the server writes")

    # Demo
    simulate: int = Field(
        0, ge=0, description="also run this many simulated robots inside the server"
    )
    simulate_rate: float = Field(
        5.0, gt=0, description="updates per second of each simulated robot"
    )

    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")

    @field_validator("mqtt_topics", "cors_origins", mode="before")
    @classmethod
    def _split_commas(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("mqtt_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            MqttEndpoint.parse(value)
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Init arguments carry the CLI flags and are layered over the TOML file by
        # ``load_settings``; the environment sits between them.
        return (init_settings, env_settings)


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """Where an MQTT client connects, with optional credentials."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        """``mqtt://[user[:password]@]host[:port]`` (port 1883 when absent)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError(f"expected mqtt://host:port, got {url!r}")
        return cls(
            parts.hostname,
            parts.port or 1883,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


def load_settings(config: Path | None = None, **overrides: Any) -> Settings:
    """Settings from an optional TOML file, the environment, then ``overrides``.

    ``None`` overrides are ignored, so unset CLI flags fall through.
    """
    layered: dict[str, Any] = {}
    if config is not None:
        try:
            with config.open("rb") as handle:
                layered.update(tomllib.load(handle))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config}: {exc}") from exc
    env_only = _environment_values()
    for key in env_only:
        layered.pop(key, None)
    layered.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**layered)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from exc


def _environment_values() -> set[str]:
    """Names of the settings the environment sets (they beat the TOML file)."""
    prefix = "IOTSTREAM_"
    names = set(Settings.model_fields)
    return {
        key[len(prefix) :].lower()
        for key in os.environ
        if key.startswith(prefix) and key[len(prefix) :].lower() in names
    }
