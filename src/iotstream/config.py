"""Settings: one typed tree, read from defaults < TOML file < ``IOTSTREAM_*`` env < CLI flags.

The tree groups settings by concern (``settings.mqtt.port``, ``settings.kafka.bootstrap``,
``settings.state.device_ttl``, ...). Users name each setting by one flat name, the same in
every layer: ``mqtt_port`` is the TOML key, ``IOTSTREAM_MQTT_PORT`` the variable and
``--mqtt-port`` the flag. A flat name is ``<group>_<field>`` unless the field declares another
(``Flat("max_payload")``), so the names users know stay put when a field moves into a group.
A TOML file may also use the grouped form::

    [mqtt]
    port = 1111

``OPTIONS`` lists every setting by its flat name, in the order of the tree.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import unquote, urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from .errors import ConfigError
from .models import mqtt_text_problem

BrokerKind = Literal["auto", "mosquitto", "amqtt"]
LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]
ENV_PREFIX = "IOTSTREAM_"
KAFKA_LINGER_MS = 10
KAFKA_FETCH_WAIT_MS = 10
"""Kafka's linger.ms (the bridge's producer) and fetch.wait.max.ms (the processors'
consumers; an archiver's fetches wait as long as it rests between polls, ``archiver.py``)
unless set; ``bus/kafka.py`` says why."""


@dataclass(frozen=True, slots=True)
class Flat:
    """Field metadata: the flat name of a setting whose name is not ``<group>_<field>``."""

    name: str


@dataclass(frozen=True, slots=True)
class Shown:
    """Field metadata: how ``--help`` and the docs show a default that the value does not
    say well (``on`` for ``True``, a path derived from another setting for ``None``)."""

    text: str


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# A list that the environment and flags give as one comma-separated string.
CommaList = Annotated[list[str], BeforeValidator(_split_commas)]


class Group(BaseModel):
    """A group of settings; ``title`` heads its flags in ``--help``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    title: ClassVar[str]


class MqttSettings(Group):
    title = "MQTT"

    host: str = Field(
        default="127.0.0.1",
        description="address the embedded broker listens on; 0.0.0.0 opens it to the network",
    )
    port: int = Field(default=3123, ge=1, le=65535, description="port of the embedded broker")
    url: str | None = Field(
        default=None,
        description="use this existing broker (mqtt://host:port) instead of starting one",
    )
    broker: Annotated[BrokerKind, Flat("broker")] = Field(
        default="auto",
        description="embedded broker: mosquitto child process, in-process amqtt, "
        "or auto (mosquitto when on PATH)",
    )
    qos: int = Field(default=1, ge=0, le=2, description="QoS of the ingest subscription")
    topics: CommaList = Field(
        default_factory=lambda: ["#"], description="topic filters the ingest subscribes to"
    )
    max_payload: Annotated[int, Flat("max_payload")] = Field(
        default=64 * 1024,
        ge=1,
        description="largest accepted MQTT payload in bytes; larger is rejected",
    )
    client_id: str | None = Field(
        default=None,
        description="fixed MQTT client id of the ingest; with it the session persists "
        "(clean session off) so the broker keeps messages while the bridge is away",
    )
    share_group: str | None = Field(
        default=None,
        description="subscribe as $share/<group>/<topic> so several bridges split the stream",
    )
    username: str | None = Field(
        default=None,
        description="MQTT user name for --mqtt-url (or give it in the URL: mqtt://user:pass@host)",
    )
    password: str | None = Field(
        default=None,
        description="MQTT password for --mqtt-url; the environment keeps it out of the "
        "process list",
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain) of a TLS listener of the embedded broker "
        "(mqtts://, TLS 1.2+); needs --mqtt-tls-key",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of --mqtt-tls-cert")
    tls_port: int = Field(
        default=8883, ge=1, le=65535, description="port of the embedded broker's TLS listener"
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is not None:
            MqttEndpoint.parse(value)
        return value

    @field_validator("topics")
    @classmethod
    def _check_topics(cls, value: list[str]) -> list[str]:
        # A filter the broker refuses would get the ingest disconnected at every SUBSCRIBE.
        for topic in value:
            levels = topic.split("/")
            wildcards_ok = (
                all(
                    level in ("+", "#") or ("+" not in level and "#" not in level)
                    for level in levels
                )
                and "#" not in levels[:-1]
            )
            problem = mqtt_text_problem(topic)
            if not topic or problem is not None or not wildcards_ok:
                raise ValueError(f"{topic!r} is not an MQTT topic filter ({problem or 'syntax'})")
        return value

    @field_validator("client_id", "share_group", "username")
    @classmethod
    def _check_mqtt_text(cls, value: str | None) -> str | None:
        problem = None if value is None else mqtt_text_problem(value)
        if problem is not None:
            raise ValueError(f"{value!r} {problem}")
        return value

    @model_validator(mode="after")
    def _check_tls(self) -> MqttSettings:
        _check_pair(self.tls_cert, self.tls_key, "--mqtt-tls-cert", "--mqtt-tls-key")
        return self

    def endpoint(self) -> MqttEndpoint:
        """The broker ``url`` names, with ``username``/``password`` unless the URL has them."""
        if self.url is None:
            raise ConfigError("no --mqtt-url")
        endpoint = MqttEndpoint.parse(self.url)
        if endpoint.username is None and self.username is not None:
            return dataclasses.replace(endpoint, username=self.username, password=self.password)
        return endpoint


def _check_pair(cert: Path | None, key: Path | None, cert_flag: str, key_flag: str) -> None:
    if (cert is None) != (key is None):
        raise ValueError(f"{cert_flag} and {key_flag} go together")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise ValueError(f"{path} is not a file")


class KafkaSettings(Group):
    title = "Kafka (distributed mode)"

    bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,...); the bus is Kafka when set",
    )
    topic: str = Field(default="mqtt-messages", description="Kafka topic of the message log")
    partitions: int | None = Field(
        default=None,
        ge=1,
        description="partitions of the Kafka topics when iotstream creates them "
        "(default: 100, or one per core, at most 8, on a cluster of one broker)",
    )
    replication_factor: int = Field(
        default=1,
        ge=1,
        description="replication factor of the Kafka topics when iotstream creates them",
    )
    retention_ms: int | None = Field(
        default=None,
        ge=1,
        description="retention of the Kafka topics in ms (default: the broker's)",
    )
    group: str = Field(
        default="iotstream-processor", description="consumer group of the processors"
    )
    linger_ms: int = Field(
        default=KAFKA_LINGER_MS,
        ge=0,
        le=1000,
        description="ms a producer holds records to send them together (Kafka's linger.ms): "
        "less is a lower latency for more of Kafka's CPU",
    )
    fetch_wait_ms: int = Field(
        default=KAFKA_FETCH_WAIT_MS,
        ge=0,
        le=1000,
        description="ms Kafka holds a processor's fetch until it has a megabyte to return "
        "(fetch.wait.max.ms): less is a lower latency for more of Kafka's CPU",
    )
    instance_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="a name for this process in its Kafka consumer groups, kept across restarts "
        "(static membership): restarted with it, a processor or archiver takes its partitions "
        "back at once instead of after the 10 s session timeout; give each process its own (a "
        "second one with it stops the first), and know that a process stopped for good leaves "
        "its partitions to the others only after that timeout",
    )


class RedisSettings(Group):
    title = "Redis (distributed mode)"

    url: str | None = Field(
        default=None, description="Redis URL (redis://host:port/db); the store is Redis when set"
    )
    prefix: str = Field(default="iotstream", description="prefix of every Redis key and channel")
    dedupe_window: int = Field(
        default=64,
        ge=0,
        description="readings per device remembered in Redis so a replayed or redelivered "
        "reading is not counted twice",
    )


class HttpSettings(Group):
    title = "HTTP API"

    host: str = Field(
        default="127.0.0.1",
        description="address of the HTTP API and of the metrics and health listener; "
        "0.0.0.0 opens them to the network",
    )
    port: int = Field(
        default=8081, ge=1, le=65535, description="port of the HTTP API and WebSocket"
    )
    cors_origins: Annotated[CommaList, Flat("cors_origins")] = Field(
        default_factory=lambda: ["*"], description="origins allowed by CORS (comma-separated)"
    )
    tls_cert: Path | None = Field(
        default=None,
        description="PEM certificate (chain): serve HTTPS and WSS instead of HTTP and WS; "
        "needs --http-tls-key",
    )
    tls_key: Path | None = Field(default=None, description="PEM private key of --http-tls-cert")

    @model_validator(mode="after")
    def _check_tls(self) -> HttpSettings:
        _check_pair(self.tls_cert, self.tls_key, "--http-tls-cert", "--http-tls-key")
        return self


class WsSettings(Group):
    title = "WebSocket"

    interval: float = Field(
        default=0.01,
        gt=0,
        le=60,
        description="seconds between WebSocket broadcasts (updates coalesce)",
    )
    client_buffer: int = Field(
        default=64,
        ge=1,
        description="frames queued per WebSocket client; a client past it gets a fresh snapshot",
    )
    ping_interval: float = Field(default=20.0, gt=0, description="seconds between WebSocket pings")
    compression: bool = Field(
        default=False,
        description="offer permessage-deflate; it compresses every frame once per client, "
        "which costs more CPU than a frame's encoding",
    )


class StateSettings(Group):
    title = "Device state"

    device_ttl: Annotated[float | None, Flat("device_ttl")] = Field(
        default=None, gt=0, description="drop devices silent for this many seconds (default: never)"
    )
    deadletter_limit: Annotated[int, Flat("deadletter_limit")] = Field(
        default=1000, ge=1, description="rejected messages kept for GET /api/deadletters"
    )


class CommandSettings(Group):
    title = "Commands"

    ttl: Annotated[float, Flat("command_ttl")] = Field(
        default=60.0,
        gt=0,
        description="seconds a command may wait for its device when the request gives no ttl",
    )
    max_ttl: Annotated[float, Flat("command_max_ttl")] = Field(
        default=3600.0, gt=0, description="the largest ttl a command request may ask for"
    )
    offline_after: Annotated[float, Flat("offline_after")] = Field(
        default=30.0,
        gt=0,
        description="a device without a presence topic counts as offline once its last "
        "reading is this many seconds old (its commands wait for it)",
    )
    retention: Annotated[float, Flat("command_retention")] = Field(
        default=86_400.0, gt=0, description="seconds a finished command stays readable"
    )


class SimulatorSettings(Group):
    title = "Simulated robots"

    robots: Annotated[int, Flat("simulate")] = Field(
        default=0, ge=0, description="also run this many simulated robots inside the server"
    )
    rate: Annotated[float, Flat("simulate_rate")] = Field(
        default=5.0, gt=0, description="updates per second of each simulated robot"
    )


class MetricsSettings(Group):
    title = "Health and metrics"

    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of the metrics and health listener (GET /metrics, GET /api/health, "
        "on --http-host); unset, a process with the HTTP API answers on --http-port; 0 picks "
        "a free port and logs it",
    )
    silent_after: Annotated[float, Flat("silent_after")] = Field(
        default=60.0,
        gt=0,
        description="a device counts as silent (GET /api/health, iotstream_devices_silent) "
        "once its last reading is this many seconds old",
    )


class LakeSettings(Group):
    title = "History (Delta Lake)"

    enabled: Annotated[bool, Flat("lake"), Shown("on")] = Field(
        default=True,
        description="keep every event in Delta Lake tables for the history API; off disables it",
    )
    url: Annotated[str | None, Shown("<data-dir>/lake")] = Field(
        default=None,
        description="where the Delta tables live: a directory or "
        "s3://bucket/prefix, with credentials and endpoint from the AWS_* environment variables",
    )
    retention_days: Annotated[float, Flat("lake_retention")] = Field(
        default=30, gt=0, description="days of history kept; older date partitions are deleted"
    )
    compact_interval: float = Field(
        default=300,
        gt=0,
        description="seconds between background compactions of the lake's small files",
    )


AuthMode = Literal["auto", "on", "off"]


class AuthSettings(Group):
    title = "Security"

    mode: Annotated[AuthMode, Flat("auth")] = Field(
        default="auto",
        description="who may use the API, the WebSocket and the broker: on (credentials "
        "needed), off, or auto (off only when every listener is on loopback)",
    )
    token_ttl: Annotated[float, Flat("token_ttl")] = Field(
        default=900,
        gt=0,
        le=86_400,
        description="seconds a token from POST /api/auth/token is valid; a removed user's "
        "tokens stop working after it",
    )
    jwt_key: Annotated[Path | None, Flat("jwt_key"), Shown("generated, kept with the users")] = (
        Field(
            default=None,
            description="PEM file of the private key (Ed25519 or EC P-256) that signs tokens",
        )
    )
    key_lifetime: Annotated[float, Flat("jwt_key_lifetime")] = Field(
        default=30,
        gt=0,
        description="days a generated signing key signs tokens before a new one replaces it",
    )
    login_attempts: Annotated[int, Flat("login_attempts")] = Field(
        default=10,
        ge=1,
        description="failed logins allowed per minute for one user and for one client "
        "address; more answer 429",
    )
    oidc_issuer: Annotated[str | None, Flat("oidc_issuer")] = Field(
        default=None,
        description="also accept tokens of this OpenID Connect issuer (https://...)",
    )
    oidc_audience: Annotated[str | None, Flat("oidc_audience")] = Field(
        default=None, description="the audience OpenID Connect tokens must be issued for"
    )
    oidc_role_claim: Annotated[str, Flat("oidc_role_claim")] = Field(
        default="role",
        description="dotted path of the claim holding an OpenID Connect token's role "
        "(a string or a list; the highest iotstream role in it counts)",
    )
    oidc_algorithms: Annotated[CommaList, Flat("oidc_algorithms")] = Field(
        default_factory=lambda: ["RS256", "ES256", "EdDSA"],
        description="signature algorithms accepted on OpenID Connect tokens",
    )

    @field_validator("oidc_algorithms")
    @classmethod
    def _check_algorithms(cls, value: list[str]) -> list[str]:
        allowed = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"}
        allowed |= {"ES512", "EdDSA"}
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise ValueError(f"not an asymmetric JWT algorithm: {', '.join(unknown)}")
        return value


class Settings(BaseModel):
    """Every setting of iotstream. Field descriptions are the ``--help`` text."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mqtt: MqttSettings = Field(default_factory=MqttSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    ws: WsSettings = Field(default_factory=WsSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    commands: CommandSettings = Field(default_factory=CommandSettings)
    simulator: SimulatorSettings = Field(default_factory=SimulatorSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    lake: LakeSettings = Field(default_factory=LakeSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)

    data_dir: Path = Field(
        default=Path("data"), description="directory for everything the server writes"
    )
    log_level: LogLevel = Field(default="info", description="log level")
    log_format: LogFormat = Field(
        default="text",
        description="log lines on stderr: text, or json (one object per line with time, level, "
        "logger, message, role and component)",
    )

    def value(self, name: str) -> Any:
        """The value of the setting with flat name ``name`` (``"kafka_bootstrap"``)."""
        node: Any = self
        for part in OPTIONS[name].path:
            node = getattr(node, part)
        return node


@dataclass(frozen=True, slots=True)
class Option:
    """One setting as users name it: a TOML key, an ``IOTSTREAM_*`` variable and a flag."""

    name: str
    path: tuple[str, ...]
    field: FieldInfo
    title: str

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def description(self) -> str:
        return self.field.description or ""

    @property
    def default(self) -> Any:
        return self.field.get_default(call_default_factory=True)

    @property
    def shown_default(self) -> Any:
        """The default as ``--help`` shows it."""
        shown = next((m.text for m in self.field.metadata if isinstance(m, Shown)), None)
        return self.default if shown is None else shown


def _options() -> dict[str, Option]:
    options: dict[str, Option] = {}
    for name, info in Settings.model_fields.items():
        group = info.annotation
        if not (isinstance(group, type) and issubclass(group, Group)):
            options[name] = Option(name, (name,), info, "General")
            continue
        for field, field_info in group.model_fields.items():
            flat = next(
                (m.name for m in field_info.metadata if isinstance(m, Flat)), f"{name}_{field}"
            )
            assert flat not in options, f"two settings are named {flat}"
            options[flat] = Option(flat, (name, field), field_info, group.title)
    return options


OPTIONS: Mapping[str, Option] = _options()
_BY_PATH = {option.path: option for option in OPTIONS.values()}


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    """Where an MQTT client connects, with optional credentials; ``tls``: over TLS, checking
    the broker's certificate against the system's trusted CAs (``SSL_CERT_FILE``)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    tls: bool = False

    @classmethod
    def parse(cls, url: str) -> MqttEndpoint:
        """``mqtt://[user[:password]@]host[:port]`` (port 1883 when absent), or ``mqtts://``
        for TLS (port 8883)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp", "mqtts", "ssl") or not parts.hostname:
            raise ValueError(f"expected mqtt://host:port or mqtts://host:port, got {url!r}")
        tls = parts.scheme in ("mqtts", "ssl")
        return cls(
            parts.hostname,
            parts.port or (8883 if tls else 1883),
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            tls,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


# A layer maps flat names to (value, where it came from), the latter for error messages.
_Layer = dict[str, tuple[Any, str]]


def load_settings(config_path: Path | None = None, **flat_overrides: Any) -> Settings:
    """Settings from an optional TOML file, the environment, then ``flat_overrides``.

    Overrides are keyed by flat name (``mqtt_port=1111``), as the CLI flags are; ``None``
    overrides are ignored, so unset flags fall through.
    """
    values: _Layer = {}
    if config_path is not None:
        values.update(_file_layer(config_path))
    values.update(
        (option.name, (os.environ[option.env], option.env))
        for option in OPTIONS.values()
        if option.env in os.environ
    )
    for name, value in flat_overrides.items():
        if name not in OPTIONS:
            raise ConfigError(f"unknown setting {name!r}")
        if value is not None:
            values[name] = (value, OPTIONS[name].flag)
    tree: dict[str, Any] = {}
    for name, (value, _) in values.items():
        *groups, field = OPTIONS[name].path
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
        node[field] = value
    try:
        return Settings.model_validate(tree)
    except ValidationError as exc:
        raise ConfigError(_explain(exc, values)) from exc


def _file_layer(path: Path) -> _Layer:
    """The settings of a TOML file, flat (``mqtt_port = 1``) or grouped (``[mqtt] port = 1``)."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    layer: _Layer = {}

    def put(option: Option | None, key: str, value: Any) -> None:
        if option is None:
            raise ConfigError(f"unknown setting {key} in config file {path}")
        if option.name in layer:
            raise ConfigError(f"{option.name} is set twice in config file {path}")
        layer[option.name] = (value, f"config file {path}")

    for key, value in document.items():
        if isinstance(value, dict):
            # ``lake`` is both a group and the flat name of ``lake.enabled``: a table is the group.
            group = Settings.model_fields[key].annotation if key in Settings.model_fields else None
            if not (isinstance(group, type) and issubclass(group, Group)):
                raise ConfigError(f"unknown settings group [{key}] in config file {path}")
            for field, item in value.items():
                put(_BY_PATH.get((key, field)), f"[{key}] {field}", item)
        else:
            put(OPTIONS.get(key), key, value)
    return layer


def _explain(exc: ValidationError, values: _Layer) -> str:
    """One line per invalid setting, named as the user set it."""
    lines = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        option = _BY_PATH.get(loc[:2]) or _BY_PATH.get(loc[:1])
        if option is None:
            lines.append(f"{'.'.join(loc)}: {error['msg']}")
            continue
        value, source = values.get(option.name, (error.get("input"), "default"))
        lines.append(f"{option.name}: {error['msg']} (got {value!r} from {source})")
    return "invalid settings:\n  " + "\n  ".join(lines)
