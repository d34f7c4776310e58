"""Prometheus metrics: the contract's series on ``iotstream run`` after real traffic (the
distributed roles' are in ``test_distributed``), what the pieces count per batch, route
templates as labels, and the lags and device freshness of ``GET /api/health``."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from harness import stop_process
from iotstream import metrics
from iotstream.api import ApiContext, create_app, create_health_app
from iotstream.commands import CommandService
from iotstream.config import MqttEndpoint
from iotstream.health import HasHealth
from iotstream.hub import Hub
from iotstream.lake.base import TABLES
from iotstream.models import (
    COMMAND_STATES,
    EXPIRED,
    SENT,
    Batch,
    Command,
    DeviceId,
    RawMessage,
    Reading,
)
from iotstream.mqtt import MqttConnection
from iotstream.rates import RateMeter
from iotstream.store import MemoryStore
from iotstream.store.base import advance

from .conftest import Server, require, start_server

CONTRACT = {
    "iotstream_build_info": "gauge",
    "iotstream_mqtt_messages_received_total": "counter",
    "iotstream_mqtt_connected": "gauge",
    "iotstream_parse_rejects_total": "counter",
    "iotstream_bus_published_events_total": "counter",
    "iotstream_bus_publish_batches_total": "counter",
    "iotstream_bus_publish_batch_size_events": "histogram",
    "iotstream_bus_publish_duration_seconds": "histogram",
    "iotstream_bus_consumed_events_total": "counter",
    "iotstream_bus_consume_batches_total": "counter",
    "iotstream_bus_consume_batch_size_events": "histogram",
    "iotstream_bus_consumer_lag_events": "gauge",
    "iotstream_pipeline_lag_seconds": "gauge",
    "iotstream_store_write_duration_seconds": "histogram",
    "iotstream_store_up": "gauge",
    "iotstream_websocket_clients": "gauge",
    "iotstream_websocket_frames_sent_total": "counter",
    "iotstream_websocket_resets_total": "counter",
    "iotstream_commands_total": "counter",
    "iotstream_lake_rows_written_total": "counter",
    "iotstream_lake_commit_duration_seconds": "histogram",
    "iotstream_http_request_duration_seconds": "histogram",
    "iotstream_devices": "gauge",
    "iotstream_devices_silent": "gauge",
    "iotstream_component_up": "gauge",
}
"""Every series name and type of the contract with the deployment's Prometheus rules and
Grafana dashboard."""


@dataclasses.dataclass(frozen=True)
class Scrape:
    """One ``GET /metrics``, parsed by Prometheus' own parser."""

    types: dict[str, str]
    """Each family's type, by the name it is exposed as (``_total`` included)."""
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float | None:
        """The sample ``name`` whose labels include ``labels``; ``None`` when there is none."""
        found = [
            value
            for sample, have, value in self.samples
            if sample == name and labels.items() <= have.items()
        ]
        assert len(found) <= 1, (name, labels, found)
        return found[0] if found else None

    def total(self, name: str, **labels: str) -> float:
        """The sum of every sample ``name`` whose labels include ``labels``."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and labels.items() <= have.items()
        )

    def labels(self, name: str, label: str) -> set[str]:
        return {have[label] for sample, have, _ in self.samples if sample == name}


def scrape(base: str) -> Scrape:
    response = httpx.get(base + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    types: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for family in text_string_to_metric_families(response.text):
        exposed = family.name + "_total" if family.type == "counter" else family.name
        types[exposed] = family.type
        samples.extend((s.name, s.labels, s.value) for s in family.samples)
    return Scrape(types, samples)


def scrape_until(base: str, predicate: Callable[[Scrape], bool], timeout: float = 30) -> Scrape:
    deadline = time.monotonic() + timeout
    while True:
        got = scrape(base)
        if predicate(got):
            return got
        assert time.monotonic() < deadline, f"GET {base}/metrics never matched"
        time.sleep(0.1)


def count(got: Scrape, name: str, **labels: str) -> float:
    """A histogram's count (or 0)."""
    return got.value(name + "_count", **labels) or 0.0


# --- iotstream run (conftest's ``server``, one per module) -----------------------------


async def test_run_serves_the_contract_and_counts_what_was_sent(server: Server) -> None:
    device = f"metered-{uuid.uuid4().hex[:8]}"
    before = scrape(server.http)
    # Known label values are shown at 0 before their first event, so a rate sees that event.
    kinds = before.labels("iotstream_bus_published_events_total", "kind")
    assert kinds == {"reading", "raw", "rejected", "command_reply"}
    assert before.labels("iotstream_commands_total", "state") == set(COMMAND_STATES)
    assert before.labels("iotstream_lake_rows_written_total", "table") == set(TABLES)
    lines = [orjson.dumps({"x": float(i), "y": 0.0, "seq": i}).decode() for i in range(50)]
    async with connect(server.ws + "/coordinates") as ws:
        assert orjson.loads(await ws.recv())["type"] == "snapshot"
        server.publish_lines(f"sensors/{device}/coordinates", lines)
        server.publish(f"sensors/{device}/coordinates", "not json")
        command = httpx.post(f"{server.http}/api/commands/{device}", json={"command": "tracking"})
        assert command.status_code == 202, command.text
        server.wait_for(
            f"/api/devices/{device}", lambda r: r.status_code == 200 and r.json()["seq"] == 49
        )
        while True:  # the frame with the last reading has gone out
            frame = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
            if any(d.get("seq") == 49 for d in frame["devices"] if d["deviceId"] == device):
                break
        connected = scrape(server.http)
    # Until the lake has the readings, every group committed and the client is gone.
    after = scrape_until(
        server.http,
        lambda got: (
            got.total("iotstream_lake_rows_written_total", table="readings")
            >= before.total("iotstream_lake_rows_written_total", table="readings") + 50
            and got.total("iotstream_bus_consumer_lag_events") == 0
            and got.value("iotstream_websocket_clients") == 0
        ),
    )

    def delta(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    for name, kind in CONTRACT.items():
        assert after.types.get(name) == kind, name
    assert after.value("iotstream_build_info", role="api,archiver,bridge,processor") == 1
    # 50 readings, the bad payload, and the command as the ingest sees it (a raw message).
    assert delta("iotstream_mqtt_messages_received_total") >= 52
    assert delta("iotstream_bus_published_events_total", kind="reading") == 50
    assert delta("iotstream_bus_published_events_total", kind="rejected") == 1
    assert delta("iotstream_bus_published_events_total", kind="raw") >= 1
    assert delta("iotstream_parse_rejects_total", reason="invalid_json") == 1
    assert delta("iotstream_bus_publish_batches_total") >= 1
    for group in ("processor", "archiver"):
        assert delta("iotstream_bus_consumed_events_total", group=group) >= 52
        assert delta("iotstream_bus_consume_batches_total", group=group) >= 1
    assert delta("iotstream_store_write_duration_seconds_count") >= 1
    assert delta("iotstream_lake_commit_duration_seconds_count") >= 1
    assert delta("iotstream_commands_total", state="queued") >= 1
    assert delta("iotstream_commands_total", state="sent") >= 1
    assert delta("iotstream_websocket_frames_sent_total") >= 1
    assert connected.value("iotstream_websocket_clients") == 1
    assert after.value("iotstream_mqtt_connected") == 1
    assert after.value("iotstream_store_up") == 1
    assert (after.value("iotstream_devices") or 0) >= 1
    assert after.labels("iotstream_pipeline_lag_seconds", "group") == {"processor", "archiver"}
    assert after.value("iotstream_bus_consumer_lag_events", group="processor", partition="0") == 0
    assert after.value("iotstream_component_up", component="ingest") == 1
    # Routes are templates: a device id is never a label value.
    routes = after.labels("iotstream_http_request_duration_seconds_count", "route")
    assert "/api/devices/{device_id}" in routes
    assert "/api/commands/{device_id}" in routes
    assert not [route for route in routes if device in route]
    posted = count(after, "iotstream_http_request_duration_seconds", method="POST", status="202")
    assert posted >= 1


async def test_health_shows_lags_and_a_device_that_went_silent(tmp_path: Path) -> None:
    require("mosquitto")
    server = start_server(tmp_path, "--silent-after", "3")
    try:
        body = server.get("/api/health").json()
        assert body["devices"] == {"known": 0, "silent": 0, "silentAfterSeconds": 3.0}
        assert (
            set(body["pipelineLagSeconds"])
            == set(body["consumerLag"])
            == {
                "processor",
                "archiver",
            }
        )
        server.publish("sensors/quiet/coordinates", '{"x": 1, "y": 2}')
        server.wait_for("/api/health", lambda r: r.json()["devices"]["known"] == 1)
        # It stops publishing: once its last reading is 3 s old, it is silent.
        silent = server.wait_for("/api/health", lambda r: r.json()["devices"]["silent"] == 1)
        assert silent.status_code == 200
        assert silent.json()["status"] == "UP"
        assert scrape(server.http).value("iotstream_devices_silent") == 1
        # Everything taken and committed: no lag anywhere.
        idle = server.wait_for(
            "/api/health",
            lambda r: (
                not any(r.json()["consumerLag"].values())
                and not any(r.json()["pipelineLagSeconds"].values())
            ),
        )
        assert idle.json()["consumerLag"] == {"processor": 0, "archiver": 0}
    finally:
        stop_process(server.process)


# --- the pieces, in process -------------------------------------------------------------


def test_a_consumption_counts_per_batch_and_ages_what_it_holds() -> None:
    group = f"test-{uuid.uuid4().hex[:8]}"
    consumption = metrics.Consumption(group)
    now = time.time()
    batch = Batch(
        readings=[Reading(DeviceId("a"), {"x": 1.0}, now - 5, now - 5) for _ in range(3)],
        raw=[RawMessage("test/hello", b"hi", now - 30)],
    )
    consumption.took(batch)
    consumption.took(Batch())
    registry = metrics.REGISTRY
    assert registry.get_sample_value("iotstream_bus_consumed_events_total", {"group": group}) == 4
    assert registry.get_sample_value("iotstream_bus_consume_batches_total", {"group": group}) == 1
    sizes = {"group": group, "le": "10.0"}
    assert registry.get_sample_value("iotstream_bus_consume_batch_size_events_bucket", sizes) == 1
    # The oldest event held is the raw message, whatever kind comes first in the batch.
    assert consumption.pipeline_lag() >= 30
    consumption.done()
    assert consumption.pipeline_lag() == 0


def test_a_command_closed_by_its_ttl_counts_as_expired() -> None:
    sent_at, expires = 1_800_000_000.0, 1_800_000_060.0
    queued = Command(
        "c1", DeviceId("r1"), "slam", (), "slam", 60.0, sent_at - 1, expires, transitions=()
    )
    sent = advance(queued, SENT, sent_at)
    assert sent is not None
    assert metrics._entered(sent.to_json()) == "sent"
    closed = advance(sent, EXPIRED, expires + 1)
    assert closed is not None and closed.status == SENT  # still sent, but closed
    assert metrics._entered(closed.to_json()) == "expired"
    late = advance(closed, "delivered", expires + 2)
    assert late is not None
    assert metrics._entered(late.to_json()) == "delivered"


def api_context(store: MemoryStore, hub: Hub) -> ApiContext:
    link = MqttConnection(MqttEndpoint("127.0.0.1", 1), "commands")  # never started
    components: dict[str, HasHealth] = {"store": store, "hub": hub}
    return ApiContext(store, hub, CommandService(link, store), RateMeter(store), components)


async def test_an_api_s_metrics_port_shows_what_its_http_port_shows() -> None:
    async with MemoryStore() as store, Hub(store) as hub:
        context = api_context(store, hub)
        with_api = create_health_app(context.components, context)
        alone = create_health_app(context.components)
        for app, shown in ((with_api, True), (alone, False)):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                text = (await client.get("/metrics")).text
                health = (await client.get("/api/health")).json()
            assert ("iotstream_websocket_clients 0.0" in text) is shown
            assert ("iotstream_devices 0.0" in text) is shown
            assert 'iotstream_component_up{component="hub"} 1.0' in text
            assert (health["devices"] is not None) is shown


async def test_request_durations_are_labelled_by_route_template() -> None:
    async with MemoryStore() as store, Hub(store) as hub:
        app = create_app(api_context(store, hub), ["*"])
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            paths = ["/api/devices/robot-7", "/dashboard/app.js", "/no/such/path"]
            before = [_requests(route) for route in ROUTES]
            for path in paths:
                await client.get(path)
            # A method no route knows, sent by a client: one label value for all of them.
            await client.request("BREW", "/api/health")
            await client.request("SNIFF", "/api/health")
    assert [_requests(route) - was for route, was in zip(ROUTES, before, strict=True)] == [
        1,
        1,
        1,
        2,
    ]


ROUTES = [
    ("GET", "/api/devices/{device_id}", "404"),
    ("GET", "/dashboard/{path}", "200"),
    ("GET", "unmatched", "404"),
    ("other", "/api/health", "405"),
]


def _requests(route: tuple[str, str, str]) -> float:
    method, template, status = route
    labels = {"method": method, "route": template, "status": status}
    value = metrics.REGISTRY.get_sample_value(
        "iotstream_http_request_duration_seconds_count", labels
    )
    return value or 0.0
