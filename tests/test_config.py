"""Settings: defaults, TOML file, IOTSTREAM_* environment and CLI flags, in that order."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from iotstream.cli import build_parser
from iotstream.config import OPTIONS, MqttEndpoint, Settings, load_settings
from iotstream.errors import ConfigError
from iotstream.server import ROLES

# The names users know, in every layer: TOML key, environment variable and flag. Moving a
# setting in the tree must not change them.
KNOWN_NAMES = {
    "mqtt_host": ("mqtt", "host"),
    "mqtt_port": ("mqtt", "port"),
    "mqtt_url": ("mqtt", "url"),
    "broker": ("mqtt", "broker"),
    "mqtt_qos": ("mqtt", "qos"),
    "mqtt_topics": ("mqtt", "topics"),
    "max_payload": ("mqtt", "max_payload"),
    "mqtt_client_id": ("mqtt", "client_id"),
    "mqtt_share_group": ("mqtt", "share_group"),
    "mqtt_username": ("mqtt", "username"),
    "mqtt_password": ("mqtt", "password"),
    "mqtt_tls_cert": ("mqtt", "tls_cert"),
    "mqtt_tls_key": ("mqtt", "tls_key"),
    "mqtt_tls_port": ("mqtt", "tls_port"),
    "kafka_bootstrap": ("kafka", "bootstrap"),
    "kafka_topic": ("kafka", "topic"),
    "kafka_partitions": ("kafka", "partitions"),
    "kafka_replication_factor": ("kafka", "replication_factor"),
    "kafka_retention_ms": ("kafka", "retention_ms"),
    "kafka_group": ("kafka", "group"),
    "kafka_linger_ms": ("kafka", "linger_ms"),
    "kafka_fetch_wait_ms": ("kafka", "fetch_wait_ms"),
    "kafka_instance_id": ("kafka", "instance_id"),
    "redis_url": ("redis", "url"),
    "redis_prefix": ("redis", "prefix"),
    "redis_dedupe_window": ("redis", "dedupe_window"),
    "http_host": ("http", "host"),
    "http_port": ("http", "port"),
    "cors_origins": ("http", "cors_origins"),
    "http_tls_cert": ("http", "tls_cert"),
    "http_tls_key": ("http", "tls_key"),
    "ws_interval": ("ws", "interval"),
    "ws_client_buffer": ("ws", "client_buffer"),
    "ws_ping_interval": ("ws", "ping_interval"),
    "ws_compression": ("ws", "compression"),
    "device_ttl": ("state", "device_ttl"),
    "deadletter_limit": ("state", "deadletter_limit"),
    "command_ttl": ("commands", "ttl"),
    "command_max_ttl": ("commands", "max_ttl"),
    "offline_after": ("commands", "offline_after"),
    "command_retention": ("commands", "retention"),
    "simulate": ("simulator", "robots"),
    "simulate_rate": ("simulator", "rate"),
    "metrics_port": ("metrics", "port"),
    "silent_after": ("metrics", "silent_after"),
    "lake": ("lake", "enabled"),
    "lake_url": ("lake", "url"),
    "lake_retention": ("lake", "retention_days"),
    "lake_compact_interval": ("lake", "compact_interval"),
    "auth": ("auth", "mode"),
    "token_ttl": ("auth", "token_ttl"),
    "jwt_key": ("auth", "jwt_key"),
    "jwt_key_lifetime": ("auth", "key_lifetime"),
    "login_attempts": ("auth", "login_attempts"),
    "oidc_issuer": ("auth", "oidc_issuer"),
    "oidc_audience": ("auth", "oidc_audience"),
    "oidc_role_claim": ("auth", "oidc_role_claim"),
    "oidc_algorithms": ("auth", "oidc_algorithms"),
    "data_dir": ("data_dir",),
    "log_level": ("log_level",),
    "log_format": ("log_format",),
}


def test_defaults_match_the_reference_system(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IOTSTREAM_MQTT_PORT", "IOTSTREAM_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.mqtt.port, settings.http.port) == (3123, 8081)
    assert settings.mqtt.host == settings.http.host == "127.0.0.1"
    assert settings.ws.interval <= 0.05
    assert settings.http.cors_origins == ["*"]
    assert settings == Settings()


def test_flags_beat_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "iotstream.toml"
    config.write_text(
        'mqtt_port = 1111\nhttp_port = 2222\nws_interval = 0.5\ncors_origins = ["a"]\n'
    )
    monkeypatch.setenv("IOTSTREAM_HTTP_PORT", "3333")
    monkeypatch.setenv("IOTSTREAM_CORS_ORIGINS", "http://a.example,http://b.example")
    settings = load_settings(config, ws_interval="0.1", device_ttl=None)
    assert settings.mqtt.port == 1111  # file
    assert settings.http.port == 3333  # environment over file
    assert settings.ws.interval == 0.1  # flag over file
    assert settings.http.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.state.device_ttl is None


def test_the_file_may_group_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IOTSTREAM_HTTP_PORT", raising=False)
    config = tmp_path / "iotstream.toml"
    config.write_text(
        'broker = "amqtt"\nsimulate = 3\n'
        '[mqtt]\nport = 1111\ntopics = ["sensors/#"]\nmax_payload = 512\n'
        '[http]\nport = 2222\ncors_origins = ["a"]\n'
        "[state]\ndevice_ttl = 30\n"
        "[simulator]\nrate = 2.5\n"
    )
    monkeypatch.setenv("IOTSTREAM_MQTT_PORT", "3333")
    settings = load_settings(config, max_payload="1024")
    assert settings.mqtt.port == 3333  # environment over the grouped file
    assert settings.mqtt.max_payload == 1024  # flag over the grouped file
    assert (settings.mqtt.broker, settings.mqtt.topics) == ("amqtt", ["sensors/#"])
    assert (settings.http.port, settings.http.cors_origins) == (2222, ["a"])
    assert settings.state.device_ttl == 30
    assert (settings.simulator.robots, settings.simulator.rate) == (3, 2.5)


@pytest.mark.parametrize(
    "text",
    [
        "mqtt_port = 1\n[mqtt]\nport = 2\n",  # one setting twice
        "[mqtt]\nmqtt_port = 1\n",  # a flat name inside a group
        "[lake]\npath = 'x'\n",  # no such group (yet)
        "mqtt_prot = 1\n",
    ],
)
def test_the_file_names_what_it_cannot_use(tmp_path: Path, text: str) -> None:
    config = tmp_path / "iotstream.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match="config file"):
        load_settings(config)


def test_flag_env_and_toml_names_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every setting keeps its flat name (the TOML key), ``IOTSTREAM_<NAME>`` and
    ``--<name>``, wherever it sits in the tree."""
    assert {name: option.path for name, option in OPTIONS.items()} == KNOWN_NAMES
    for name, option in OPTIONS.items():
        assert (option.env, option.flag) == (
            f"IOTSTREAM_{name.upper()}",
            f"--{name.replace('_', '-')}",
        )
    monkeypatch.setenv("IOTSTREAM_BROKER", "amqtt")
    monkeypatch.setenv("IOTSTREAM_SIMULATE_RATE", "7")
    monkeypatch.setenv("IOTSTREAM_METRICS_PORT", "9999")
    args = build_parser().parse_args(
        ["bridge", "--max-payload", "99", "--device-ttl", "5", "--simulate", "2"]
    )
    settings = load_settings(None, **{name: getattr(args, name) for name in OPTIONS})
    assert settings.mqtt.broker == "amqtt"
    assert settings.simulator.rate == 7
    assert settings.metrics.port == 9999
    assert settings.mqtt.max_payload == 99
    assert settings.state.device_ttl == 5
    assert settings.simulator.robots == 2
    assert settings.value("max_payload") == 99


def test_bad_settings_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"mqtt_port: .* 65535 .*'99999' from --mqtt-port"):
        load_settings(mqtt_port="99999")
    monkeypatch.setenv("IOTSTREAM_DEVICE_TTL", "-1")
    with pytest.raises(ConfigError, match=r"device_ttl: .* from IOTSTREAM_DEVICE_TTL"):
        load_settings()
    monkeypatch.delenv("IOTSTREAM_DEVICE_TTL")
    grouped = tmp_path / "grouped.toml"
    grouped.write_text('[ws]\ninterval = "often"\n')
    with pytest.raises(
        ConfigError, match=rf"ws_interval: .* from config file {re.escape(str(grouped))}"
    ):
        load_settings(grouped)
    with pytest.raises(ConfigError, match="mqtt://"):
        load_settings(mqtt_url="http://x")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("mqtt_port = [")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(broken)


def test_mqtt_urls() -> None:
    assert MqttEndpoint.parse("mqtt://broker.lan:3123") == MqttEndpoint("broker.lan", 3123)
    assert MqttEndpoint.parse("mqtt://broker.lan") == MqttEndpoint("broker.lan", 1883)
    assert MqttEndpoint.parse("mqtt://iot:s%40cret@h:1") == MqttEndpoint("h", 1, "iot", "s@cret")
    assert str(MqttEndpoint.parse("mqtt://iot:secret@h:1")) == "mqtt://h:1"  # no password in logs


@pytest.mark.parametrize("command", ["run", *(role.name for role in ROLES if role.summary)])
def test_help_explains_every_option(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # unwrapped
    for option in OPTIONS.values():
        assert f"{option.flag} " in text
        assert f"env {option.env})" in text
        assert option.description.split(";")[0] in text
    assert "(default: 3123; env IOTSTREAM_MQTT_PORT)" in text


@pytest.mark.parametrize(
    ("command", "health"),
    [("run", "the --http-port listener"), ("api", "the --http-port listener"),
     ("bridge", "9081"), ("processor", "9082"), ("archiver", "9083")],
)  # fmt: skip
def test_each_role_has_a_health_port_of_its_own(
    command: str, health: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bridge, a processor and an api started with default flags on one host do not clash."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"(default: {health}; env IOTSTREAM_METRICS_PORT)" in text


@pytest.mark.parametrize(
    ("role", "flags", "missing"),
    [
        ("bridge", [], "--kafka-bootstrap, --mqtt-url"),
        ("processor", ["--kafka-bootstrap", "127.0.0.1:1"], "--redis-url"),
        ("api", ["--redis-url", "redis://127.0.0.1:1/0"], "--mqtt-url"),
        ("archiver", [], "--kafka-bootstrap"),
    ],
)
def test_a_lone_role_names_the_engines_it_needs(role: str, flags: list[str], missing: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "iotstream", role, *flags],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert f"iotstream {role} needs {missing}" in result.stderr
