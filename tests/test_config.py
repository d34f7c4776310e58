"""Settings: defaults, TOML file, IOTSTREAM_* environment and CLI flags, in that order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from iotstream.cli import build_parser
from iotstream.config import MqttEndpoint, load_settings
from iotstream.errors import ConfigError


def test_defaults_match_the_reference_system(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("IOTSTREAM_MQTT_PORT", "IOTSTREAM_HTTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.mqtt_port, settings.http_port) == (3123, 8081)
    assert settings.mqtt_host == settings.http_host == "127.0.0.1"
    assert settings.ws_interval <= 0.05
    assert settings.cors_origins == ["*"]


def test_flags_beat_environment_beats_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "iotstream.toml"
    config.write_text(
        'mqtt_port = 1111\nhttp_port = 2222\nws_interval = 0.5\ncors_origins = ["a"]\n'
    )
    monkeypatch.setenv("IOTSTREAM_HTTP_PORT", "3333")
    monkeypatch.setenv("IOTSTREAM_CORS_ORIGINS", "http://a.example,http://b.example")
    settings = load_settings(config, ws_interval="0.1", device_ttl=None)
    assert settings.mqtt_port == 1111  # file
    assert settings.http_port == 3333  # environment over file
    assert settings.ws_interval == 0.1  # flag over file
    assert settings.cors_origins == ["http://a.example", "http://b.example"]
    assert settings.device_ttl is None


def test_bad_settings_are_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mqtt_port"):
        load_settings(mqtt_port="99999")
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


def test_run_help_explains_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--help"])
    text = capsys.readouterr().out
    from iotstream.config import Settings

    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in text
        assert f"IOTSTREAM_{name.upper()}" in text


@pytest.mark.parametrize(
    ("role", "flags", "missing"),
    [
        ("bridge", [], "--kafka-bootstrap, --mqtt-url"),
        ("processor", ["--kafka-bootstrap", "127.0.0.1:1"], "--redis-url"),
        ("api", ["--redis-url", "redis://127.0.0.1:1/0"], "--mqtt-url"),
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
