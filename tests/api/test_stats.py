"""GET /api/stats and GET /metrics."""

from __future__ import annotations

import time
from types import SimpleNamespace

import httpx
from prometheus_client.parser import text_string_to_metric_families

from iotstream.api import ApiContext
from iotstream.hub import Hub

from .conftest import Feed, unreachable_link, until


async def feed_a_little(feed: Feed, hub: Hub) -> None:
    """Two readings, one raw message, one rejected; two frames, one per reading."""
    await feed("sensors/robot1/coordinates", b'{"x": 1, "y": 2}')
    await until(lambda: hub.frames == 1)
    await feed("sensors/robot1/coordX", b"3.5")
    await until(lambda: hub.frames == 2)
    await feed("test/hello", b"hi")
    await feed("sensors/robot2/coordinates", b"not json")


async def test_stats_counts_and_rates(
    client: httpx.AsyncClient, context: ApiContext, hub: Hub, feed: Feed
) -> None:
    context.started_at = time.time() - 50
    context.rates = SimpleNamespace(current=12.34, average=5.67)
    await feed_a_little(feed, hub)
    response = await client.get("/api/stats")
    assert response.status_code == 200
    body = response.json()
    assert 50 <= body.pop("uptimeSeconds") < 60
    assert body == {
        "messages": 4,
        "readings": 2,
        "raw": 1,
        "rejected": 1,
        "devices": 1,
        "perDevice": {"robot1": 2},
        "rawTopics": {"test/hello": 1},
        "rejectedReasons": {"invalid_json": 1},
        "rates": {"messagesPerSecond": 12.3, "messagesPerSecond10s": 5.7},
        "websocketClients": 0,
        "framesSent": 2,
        "commandsSent": 0,
    }


async def test_stats_of_a_fresh_server(client: httpx.AsyncClient) -> None:
    body = (await client.get("/api/stats")).json()
    assert (body["messages"], body["devices"], body["perDevice"]) == (0, 0, {})
    assert body["rates"] == {"messagesPerSecond": 0.0, "messagesPerSecond10s": 0.0}


async def test_metrics_in_prometheus_text(
    client: httpx.AsyncClient, context: ApiContext, hub: Hub, feed: Feed
) -> None:
    """This process's own series; the store-wide counts stay in GET /api/stats."""
    context.components["commands"] = unreachable_link()
    await feed_a_little(feed, hub)
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert samples[("iotstream_devices", ())] == 1
    assert samples[("iotstream_devices_silent", ())] == 0
    assert samples[("iotstream_websocket_clients", ())] == 0
    assert samples[("iotstream_store_up", ())] == 1
    up = {
        dict(labels)["component"]: value
        for (name, labels), value in samples.items()
        if name == "iotstream_component_up"
    }
    assert up == {"store": 1, "hub": 1, "commands": 0}
    # Only a process with an ingest says whether its MQTT connection is up.
    assert not any(name == "iotstream_mqtt_connected" for name, _ in samples)
    for old in ("iotstream_messages_total", "iotstream_rejected_total", "iotstream_frames_total"):
        assert old not in response.text
