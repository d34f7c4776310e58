"""When credentials are required: off only when every listener is on loopback, unless
``--auth`` says otherwise."""

from __future__ import annotations

import pytest

from iotstream.auth import auth_required, is_loopback
from iotstream.config import load_settings


@pytest.mark.parametrize(
    ("flags", "required"),
    [
        ({}, False),
        ({"http_host": "localhost", "mqtt_host": "::1"}, False),
        ({"http_host": "0.0.0.0"}, True),
        ({"mqtt_host": "0.0.0.0"}, True),
        ({"http_host": "192.168.1.20"}, True),
        ({"http_host": "robots.example"}, True),
        # With --mqtt-url this process starts no broker: only HTTP counts.
        ({"mqtt_host": "0.0.0.0", "mqtt_url": "mqtt://10.0.0.5:1883"}, False),
        ({"auth": "on"}, True),
        ({"auth": "off", "http_host": "0.0.0.0"}, False),
    ],
)
def test_auth_is_required_when_a_listener_faces_the_network(
    flags: dict[str, str], required: bool
) -> None:
    assert auth_required(load_settings(**flags)) is required


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.8.9.1", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.org", ""]))


def test_the_environment_sets_the_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IOTSTREAM_AUTH", "on")
    assert auth_required(load_settings())
    assert not auth_required(load_settings(auth="off"))
