"""Every route and the WebSocket handshake go through ROUTE_DEPENDENCIES, the one place
authentication goes; the docs and the dashboard's static files stay outside it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI, HTTPException
from starlette.requests import HTTPConnection

import iotstream.api
from iotstream.api import ApiContext, create_app, create_health_app

from .conftest import WebSocketSession

HTTP_ROUTES = [
    ("GET", "/api/health"),
    ("GET", "/api/stats"),
    ("GET", "/metrics"),
    ("GET", "/api/coordinates"),
    ("GET", "/api/devices/robot1"),
    ("GET", "/api/deadletters"),
    ("POST", "/api/commands/robot1"),
    ("GET", "/"),
    ("GET", "/swagger-ui.html"),
]
OUTSIDE = ["/docs", "/openapi.json", "/dashboard/app.js"]


def refuse(connection: HTTPConnection) -> None:
    raise HTTPException(401, f"no entry to {connection.url.path}")


@pytest.fixture
async def guarded(
    context: ApiContext, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    monkeypatch.setattr(iotstream.api, "ROUTE_DEPENDENCIES", [Depends(refuse)])
    app = create_app(context, ["*"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield app, client


@pytest.mark.parametrize(("method", "path"), HTTP_ROUTES)
async def test_a_route_dependency_guards_every_route(
    guarded: tuple[FastAPI, httpx.AsyncClient], method: str, path: str
) -> None:
    _, client = guarded
    response = await client.request(method, path, json={"command": "slam"})
    assert response.status_code == 401
    assert response.json() == {"detail": f"no entry to {path}"}


async def test_a_route_dependency_guards_the_websocket_handshake(
    guarded: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, _ = guarded
    ws = WebSocketSession(app, "/coordinates")
    refusal = await ws.open()
    assert (refusal["type"], refusal["status"]) == ("websocket.http.response.start", 401)
    await ws.close()


@pytest.mark.parametrize("path", OUTSIDE)
async def test_docs_and_static_files_are_outside_the_route_dependencies(
    guarded: tuple[FastAPI, httpx.AsyncClient], path: str
) -> None:
    _, client = guarded
    assert (await client.get(path)).status_code == 200


async def test_the_health_app_takes_the_same_route_dependencies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(iotstream.api, "ROUTE_DEPENDENCIES", [Depends(refuse)])
    transport = httpx.ASGITransport(app=create_health_app({}))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        assert (await client.get("/api/health")).status_code == 401
