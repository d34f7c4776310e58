"""GET /api/health on the full app and on the health-only app of the other roles."""

from __future__ import annotations

import time

import httpx

from iotstream import __version__
from iotstream.api import ApiContext, create_health_app
from iotstream.store import MemoryStore

from .conftest import unreachable_link


async def test_up_when_every_component_is(client: httpx.AsyncClient, context: ApiContext) -> None:
    context.started_at = time.time() - 100
    response = await client.get("/api/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "UP"
    assert body["version"] == __version__
    assert 100 <= body["uptimeSeconds"] < 110
    assert set(body["components"]) == {"store", "hub"}
    for name, part in context.components.items():
        assert body["components"][name] == {"status": "UP", "detail": part.health().detail}


async def test_503_and_down_when_one_component_is(
    client: httpx.AsyncClient, context: ApiContext
) -> None:
    link = unreachable_link()
    context.components["commands"] = link
    response = await client.get("/api/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "DOWN"
    assert body["components"]["commands"] == {
        "status": "DOWN",
        "detail": f"not connected to {link.endpoint}",
    }
    assert body["components"]["store"]["status"] == "UP"
    assert body["components"]["hub"]["status"] == "UP"


async def test_a_role_without_the_api_serves_health_alone() -> None:
    async with MemoryStore() as store:
        components = {"store": store}
        app = create_health_app(components)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            up = await client.get("/api/health")
            assert up.status_code == 200
            assert up.json()["status"] == "UP"
            assert up.json()["version"] == __version__
            assert up.json()["components"] == {
                "store": {"status": "UP", "detail": store.health().detail}
            }
            assert 0 <= up.json()["uptimeSeconds"] < 10

            components["commands"] = unreachable_link()
            down = await client.get("/api/health")
            assert down.status_code == 503
            assert down.json()["status"] == "DOWN"
            assert down.json()["components"]["commands"]["status"] == "DOWN"

            metrics = await client.get("/metrics")
            assert metrics.status_code == 200
            assert 'iotstream_component_up{component="commands"} 0.0' in metrics.text
            for path in ("/api/stats", "/api/coordinates", "/docs", "/openapi.json"):
                assert (await client.get(path)).status_code == 404, path
