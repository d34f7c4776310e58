"""The Docker deployment cannot run here (no Docker engine), so its structure is checked:
services, ports, and that every iotstream command in it is one the CLI accepts."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from iotstream.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
ROLES = {"bridge", "processor", "archiver", "api1", "api2"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())  # type: ignore[no-any-return]


def expand(text: str) -> str:
    """Substitute ${VAR} from .env.example, as docker compose does with .env."""
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )

    def value(match: re.Match[str]) -> str:
        assert match.group(1) in env, f"${{{match.group(1)}}} is not in .env.example"
        return env[match.group(1)]

    return re.sub(r"\$\{(\w+)\}", value, text)


def test_the_stack_has_every_service(compose: dict[str, Any]) -> None:
    engines = {"mosquitto", "kafka", "redis", "lb", "prometheus", "grafana"}
    assert set(compose["services"]) == engines | ROLES


def test_published_ports_match_the_reference_system(compose: dict[str, Any]) -> None:
    ports = {name: svc.get("ports", []) for name, svc in compose["services"].items()}
    assert ports["mosquitto"] == ["3123:3123"]
    assert ports["lb"] == ["8081:8081"]
    assert ports["kafka"] == ["9092:9092"]
    assert ports["redis"] == ["6379:6379"]
    assert all(not ports[role] for role in ROLES)  # reached through the balancer only


@pytest.mark.parametrize("service", sorted(ROLES))
def test_iotstream_commands_exist_in_the_cli(compose: dict[str, Any], service: str) -> None:
    spec = compose["services"][service]
    assert spec["build"] == "."
    command = [expand(part) for part in spec["command"]]
    args = build_parser().parse_args(command)  # exits (fails the test) on an unknown flag
    assert args.command == service.rstrip("12")
    if args.command in ("bridge", "api"):
        assert args.mqtt_url.startswith("mqtt://") and "@mosquitto:3123" in args.mqtt_url
    if args.command in ("bridge", "processor", "archiver"):
        assert args.kafka_bootstrap == "kafka:9092"
    if args.command in ("processor", "api"):
        assert args.redis_url == "redis://redis:6379/0"


def test_mounted_files_exist(compose: dict[str, Any]) -> None:
    for spec in compose["services"].values():
        for volume in spec.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), source


def test_mosquitto_requires_the_password_file() -> None:
    conf = (ROOT / "deploy/mosquitto/mosquitto.conf").read_text()
    assert "listener 3123" in conf and "allow_anonymous false" in conf
    assert "password_file /mosquitto/data/passwd" in conf
    assert (
        "mosquitto_passwd -b -c /mosquitto/data/passwd"
        in (ROOT / "deploy/mosquitto/entrypoint.sh").read_text()
    )


def test_the_balancer_passes_websockets_to_both_apis() -> None:
    conf = (ROOT / "deploy/nginx/nginx.conf").read_text()
    assert "server api1:8081;" in conf and "server api2:8081;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "listen 8081;" in conf


def test_the_image_runs_the_cli() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["iotstream"]' in dockerfile


def test_the_image_installs_the_extras_its_commands_need() -> None:
    """Kafka and Redis for the distributed roles; the device SDK (paho-mqtt) for
    ``iotstream simulate`` and ``iotstream run --simulate``."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    [extras] = re.findall(r"pip install [^\n]*'\.\[([\w,]+)\]'", dockerfile)
    installed = set(extras.split(","))
    assert {"kafka", "redis", "device"} <= installed
    with (ROOT / "pyproject.toml").open("rb") as pyproject:
        defined = tomllib.load(pyproject)["project"]["optional-dependencies"]
    assert installed <= set(defined)
    assert any(requirement.startswith("paho-mqtt") for requirement in defined["device"])


def test_make_targets_of_the_reference_system_exist() -> None:
    makefile = (ROOT / "Makefile").read_text()
    for target in (
        "up",
        "down",
        "logs",
        "list-topics",
        "consume-messages",
        "redis-cli",
        "services",
        "services-down",
        "run",
        "test",
        "demo",
    ):
        assert re.search(rf"^{re.escape(target)}:", makefile, re.M), target
