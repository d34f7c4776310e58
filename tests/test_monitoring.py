"""Monitoring: the Prometheus config and alert rules (deploy/prometheus) checked by promtool,
the Grafana provisioning (deploy/grafana) checked for what Grafana needs, and every PromQL
expression of the dashboard and of the alert rules evaluated by a real Prometheus scraping a
running ``iotstream run`` and the distributed roles on real Kafka and Redis."""

from __future__ import annotations

import json
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from websockets.sync.client import connect

import harness
from harness.prometheus import query, scrape_config, start_prometheus, wait_scraped

from .conftest import Server, require, start_server, stop_process
from .test_distributed import Stack

pytestmark = pytest.mark.prometheus

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "iotstream.json"
# What Grafana puts in for its built-in variables, at a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "30s", "$__interval": "5s", "$__range": "5m"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(PROMETHEUS_DIR / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_panels(panels: list[dict[str, Any]] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows too."""
    if panels is None:
        panels = json.loads(DASHBOARD.read_text())["panels"]
    for panel in panels:
        yield panel
        yield from dashboard_panels(panel.get("panels", []))


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, expression) of every query, Grafana's variables put in."""
    found = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


# --- PromQL operands --------------------------------------------------------------------------

BINARY = re.compile(r"==|!=|>=|<=|>|<|\b(?:and|or|unless)\b")
MODIFIERS = re.compile(
    r"^\s*(?:bool\b\s*)?(?:(?:on|ignoring)\s*\([^)]*\)\s*)?(?:(?:group_left|group_right)\s*"
    r"(?:\([^)]*\))?\s*)?"
)
NUMBER = re.compile(r"^\s*[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?\s*$", re.I)


def _top_level_split(expr: str) -> list[str]:
    """``expr`` cut at its comparison and set operators outside brackets and strings."""
    parts, depth, start, i, quote = [], 0, 0, 0, ""
    while i < len(expr):
        char = expr[i]
        if quote:
            if char == "\\":
                i += 1
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0 and (match := BINARY.match(expr, i)):
            parts.append(expr[start:i])
            i = start = match.end()
            continue
        i += 1
    parts.append(expr[start:])
    return parts


def _unwrapped(expr: str) -> str | None:
    """The inside of ``( ... )`` when the brackets enclose all of ``expr``."""
    expr = expr.strip()
    if not (expr.startswith("(") and expr.endswith(")")):
        return None
    depth = 0
    for i, char in enumerate(expr):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and i < len(expr) - 1:
            return None
    return expr[1:-1]


def operands(expr: str) -> list[str]:
    """The vector operands of ``expr``'s comparisons and set operations (``a > 1 and b`` ->
    ``[a, b]``): each must return data for the comparison to mean anything."""
    found = []
    for part in _top_level_split(expr):
        part = MODIFIERS.sub("", part).strip()
        if NUMBER.match(part):
            continue
        inner = _unwrapped(part)
        if inner is not None and len(_top_level_split(inner)) > 1:
            found.extend(operands(inner))
        else:
            found.append(part)
    return found


def test_operands_strip_comparisons_and_set_operators() -> None:
    assert operands("up == 0") == ["up"]
    assert operands('sum(rate(x{a=~"b|c"}[5m])) / sum(y) > 0.05 and sum(z) > 0.1') == [
        'sum(rate(x{a=~"b|c"}[5m])) / sum(y)',
        "sum(z)",
    ]
    assert operands("(a or on () sum(b) * 0) == 0") == ["a", "sum(b) * 0"]
    assert operands("a == bool 1 unless ignoring (x) group_left (y) b") == ["a", "b"]
    assert operands('max by (g) (lag{p!="1"}) > 10') == ['max by (g) (lag{p!="1"})']


# --- the files --------------------------------------------------------------------------------


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_config_and_the_rules() -> None:
    config = promtool("check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    assert "SUCCESS: 1 rule files found" in config.stdout
    rules = promtool("check", "rules", str(PROMETHEUS_DIR / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout


def test_each_alert_fires_on_the_failure_it_is_for() -> None:
    """promtool's unit tests of the rules, over synthetic series (alerts.test.yml)."""
    result = promtool("test", "rules", str(PROMETHEUS_DIR / "alerts.test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS_DIR / "alerts.test.yml").read_text()))
    assert tested == {rule["alert"] for rule in alert_rules()}


def test_every_alert_waits_has_a_severity_and_says_what_happened() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "IotstreamPipelineStalled",
        "IotstreamPipelineLagHigh",
        "IotstreamConsumerLagGrowing",
        "IotstreamBrokerDown",
        "IotstreamStoreDown",
        "IotstreamNoReadings",
        "IotstreamManyRejects",
    }
    for rule in rules:
        assert re.fullmatch(r"\d+[sm]", rule["for"]), rule
        assert rule["labels"]["severity"] in ("critical", "warning"), rule
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule


def test_prometheus_scrapes_every_role_of_the_compose_stack() -> None:
    services = load_yaml(ROOT / "docker-compose.yml")["services"]
    jobs = {
        job["job_name"]: [t for static in job["static_configs"] for t in static["targets"]]
        for job in load_yaml(PROMETHEUS_DIR / "prometheus.yml")["scrape_configs"]
    }
    roles = {"bridge", "processor", "archiver", "api"}
    assert roles <= set(jobs)
    scraped = {target for job in roles for target in jobs[job]}
    expected = set()
    for name, service in services.items():
        command = service.get("command", [])
        if service.get("build") == "." and command[0] in roles:
            assert command[command.index("--http-host") + 1] == "0.0.0.0", name
            expected.add(f"{name}:{command[command.index('--metrics-port') + 1]}")
            assert name.rstrip("12") == command[0]
    assert scraped == expected
    mounts = services["prometheus"]["volumes"]
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard() -> None:
    services = load_yaml(ROOT / "docker-compose.yml")["services"]
    mounts = dict(v.rsplit(":", 1)[0].split(":", 1) for v in services["grafana"]["volumes"][:3])
    source = load_yaml(GRAFANA_DIR / "provisioning/datasources/prometheus.yml")["datasources"][0]
    assert (source["type"], source["url"], source["isDefault"]) == (
        "prometheus",
        "http://prometheus:9090",
        True,
    )
    provider = load_yaml(GRAFANA_DIR / "provisioning/dashboards/iotstream.yml")["providers"][0]
    assert provider["type"] == "file"
    assert mounts["./deploy/grafana/dashboards/iotstream.json"] == (
        provider["options"]["path"] + "/iotstream.json"
    )
    for file in ("datasources/prometheus.yml", "dashboards/iotstream.yml"):
        assert mounts[f"./deploy/grafana/provisioning/{file}"] == (
            f"/etc/grafana/provisioning/{file}"
        )

    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == source["type"]
    panels = list(dashboard_panels())
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        for target in [panel, *panel["targets"]]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
    for title, expr in dashboard_expressions():
        assert "$" not in expr, (title, expr)


# --- against a real Prometheus ----------------------------------------------------------------


def send_traffic(mqtt_port: int, http: str, tag: str) -> int:
    """Readings, a malformed payload, a raw message, a command and the device's result; how
    many MQTT messages that was."""
    pub = [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(mqtt_port), "-q", "1"]
    for device in range(3):
        lines = [json.dumps({"x": float(i), "y": float(device)}) for i in range(20)]
        subprocess.run(
            [*pub, "-t", f"sensors/{tag}-{device}/coordinates", "-l"],
            input="\n".join(lines) + "\n",
            text=True,
            check=True,
            timeout=30,
        )
    subprocess.run([*pub, "-t", f"sensors/{tag}-0/coordinates", "-m", "{not json"], check=True)
    subprocess.run([*pub, "-t", "test/hello", "-m", "Hello World!"], check=True)
    command = httpx.post(f"{http}/api/commands/{tag}-0", json={"command": "tracking"})
    assert command.status_code == 202, command.text
    reply = json.dumps({"id": command.json()["id"], "status": "succeeded"})
    subprocess.run([*pub, "-t", f"orin/{tag}-0/command/result", "-m", reply], check=True)
    for path in ("/api/coordinates", f"/api/devices/{tag}-1", "/api/stats", "/api/health"):
        assert httpx.get(http + path, timeout=10).status_code == 200, path
    return 3 * 20 + 3


@pytest.fixture(scope="module")
def scraped(
    tmp_path_factory: pytest.TempPathFactory, kafka: harness.Service, redis_server: harness.Service
) -> Iterator[harness.Service]:
    """A Prometheus (1 s scrapes, the alert rules loaded) scraping an ``iotstream run`` and a
    bridge, a processor, an archiver and an api on Kafka and Redis, after traffic through
    both; WebSocket clients stay connected to both meanwhile."""
    require("mosquitto")
    tmp_path = tmp_path_factory.mktemp("monitoring")
    server: Server | None = None
    with harness.start_mosquitto(harness.free_port(), tmp_path / "mosquitto") as broker:
        stack = Stack(tmp_path, broker.port, kafka.address, f"redis://{redis_server.address}/0")
        try:
            # The embedded server first, alone: Pythons importing side by side on two cores
            # answer slowly.
            (tmp_path / "embedded").mkdir()
            server = start_server(tmp_path / "embedded", "--ws-interval", "0.05")
            stack.start_bridge()
            for role in ("processor", "archiver", "api"):
                stack.start(role, role)
            for name in ("bridge", "processor", "archiver", "api"):
                stack.wait_healthy(name)
            targets = {
                "run": [server.http.removeprefix("http://")],
                **{name: [stack.http[name].removeprefix("http://")] for name in stack.http},
            }
            config = scrape_config(
                targets, interval=1.0, rule_files=[PROMETHEUS_DIR / "alerts.yml"]
            )
            with (
                start_prometheus(harness.free_port(), tmp_path / "prometheus", config) as prom,
                connect(server.ws + "/coordinates"),
                connect(stack.http["api"].replace("http", "ws") + "/coordinates"),
            ):
                # Scraped before the traffic too, so that rates and quantiles have it.
                wait_scraped(prom, len(targets))
                tag = f"robot-{uuid.uuid4().hex[:6]}"
                sent = send_traffic(server.mqtt_port, server.http, tag)
                sent += send_traffic(broker.port, stack.http["api"], tag)
                received = "sum(iotstream_mqtt_messages_received_total)"
                deadline = time.monotonic() + 30
                while float(query(prom, received)[0]["value"][1]) < sent:
                    assert time.monotonic() < deadline, query(prom, received)
                    time.sleep(0.5)
                yield prom
        finally:
            stack.stop_all()
            if server is not None:
                stop_process(server.process)


@pytest.mark.kafka
@pytest.mark.redis
def test_every_dashboard_and_alert_expression_returns_data(scraped: harness.Service) -> None:
    """What the dashboard and the alerts read exists with these names and labels: every panel
    query, and each side of every alert's comparisons, returns series."""
    expressions = [(f"panel {title!r}", expr) for title, expr in dashboard_expressions()]
    for rule in alert_rules():
        query(scraped, rule["expr"])  # valid as written (empty while nothing is wrong)
        expressions += [(f"alert {rule['alert']}", part) for part in operands(rule["expr"])]
    # Rates need two scrapes after the traffic, and the archiver commits about once a second.
    deadline = time.monotonic() + 30
    while empty := [(where, e) for where, e in expressions if not query(scraped, e)]:
        if time.monotonic() > deadline:
            break
        expressions = empty
        time.sleep(1)
    assert not empty, "no data:\n" + "\n".join(f"{where}: {e}" for where, e in empty)


@pytest.mark.kafka
@pytest.mark.redis
def test_prometheus_evaluates_every_alert_rule(scraped: harness.Service) -> None:
    body = httpx.get(f"http://{scraped.address}/api/v1/rules?type=alert").json()
    rules = {rule["name"]: rule for group in body["data"]["groups"] for rule in group["rules"]}
    assert set(rules) == {rule["alert"] for rule in alert_rules()}
    deadline = time.monotonic() + 10
    while any(rule["health"] == "unknown" for rule in rules.values()):
        assert time.monotonic() < deadline, rules
        time.sleep(0.5)
        body = httpx.get(f"http://{scraped.address}/api/v1/rules?type=alert").json()
        rules = {r["name"]: r for group in body["data"]["groups"] for r in group["rules"]}
    assert {name: rule["health"] for name, rule in rules.items()} == dict.fromkeys(rules, "ok")
