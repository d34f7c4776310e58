"""The role matrix: every endpoint and the WebSocket, without credentials and with each
role's, answer 401, 403 or let the caller through as the roles say (viewer < operator <
admin). A new route must be placed in ``NEEDS``, so none is left open by accident."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from iotstream.api import AUTH_ROUTERS, ROUTERS
from iotstream.auth import Role
from tests.auth.secured import api_keys, authenticator, secured, secured_client

from .conftest import WebSocketSession

__all__ = ["api_keys", "authenticator", "secured", "secured_client"]

VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN
NEEDS: dict[tuple[str, str], Role | None] = {
    ("GET", "/api/health"): None,
    ("GET", "/"): None,
    ("GET", "/swagger-ui.html"): None,
    ("POST", "/api/auth/token"): None,
    ("GET", "/.well-known/jwks.json"): None,
    ("GET", "/api/auth/me"): VIEWER,
    ("GET", "/api/stats"): VIEWER,
    ("GET", "/metrics"): VIEWER,
    ("GET", "/api/coordinates"): VIEWER,
    ("GET", "/api/devices/{device_id}"): VIEWER,
    ("GET", "/api/deadletters"): VIEWER,
    ("GET", "/api/devices/{device_id}/history"): VIEWER,
    ("GET", "/api/history"): VIEWER,
    ("GET", "/api/raw"): VIEWER,
    ("GET", "/api/devices/{device_id}/trips"): VIEWER,
    ("GET", "/api/devices/{device_id}/stops"): VIEWER,
    ("GET", "/api/devices/{device_id}/summary"): VIEWER,
    ("GET", "/api/devices/{device_id}/prediction"): VIEWER,
    ("GET", "/api/analytics/heatmap"): VIEWER,
    ("POST", "/api/commands/{device_id}"): OPERATOR,
    ("POST", "/api/devices/{device_id}/commands"): OPERATOR,
    ("GET", "/api/commands/{command_id}"): VIEWER,
    ("GET", "/api/devices/{device_id}/commands"): VIEWER,
    ("DELETE", "/api/commands/{command_id}"): OPERATOR,
    ("GET", "/api/users"): ADMIN,
    ("POST", "/api/users"): ADMIN,
    ("DELETE", "/api/users/{name}"): ADMIN,
    ("GET", "/api/apikeys"): ADMIN,
    ("POST", "/api/apikeys"): ADMIN,
    ("DELETE", "/api/apikeys/{name}"): ADMIN,
}
PATH_VALUES = {"device_id": "robot1", "name": "nobody", "command_id": "no-such-command"}
REFUSED = {401, 403}


def test_every_endpoint_is_in_the_matrix() -> None:
    found = {
        (method, route.path_format)
        for router, _ in (*ROUTERS, *AUTH_ROUTERS)
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert found == set(NEEDS)


async def test_the_role_matrix(
    secured_client: httpx.AsyncClient, api_keys: dict[Role, str]
) -> None:
    callers: dict[str, dict[str, str]] = {"nobody": {}}
    callers.update({role.value: {"X-API-Key": key} for role, key in api_keys.items()})
    wrong: list[str] = []
    for (method, path), needed in sorted(NEEDS.items(), key=str):
        url = path.format(**PATH_VALUES)
        for caller, headers in callers.items():
            response = await secured_client.request(
                method, url, headers=headers, json={"command": "none"}
            )
            if needed is None:
                expected = "through"
            elif caller == "nobody":
                expected = "401"
            else:
                expected = "through" if Role(caller).covers(needed) else "403"
            got = str(response.status_code) if response.status_code in REFUSED else "through"
            if got != expected:
                wrong.append(f"{method} {path} as {caller}: {response.status_code}")
            if got == "401":
                assert response.headers["www-authenticate"].startswith("Bearer")
    assert wrong == []


@pytest.mark.parametrize(
    ("caller", "expected"), [("nobody", 401), ("viewer", None), ("operator", None)]
)
async def test_the_websocket_needs_a_viewer(
    secured: FastAPI, api_keys: dict[Role, str], caller: str, expected: int | None
) -> None:
    ws = WebSocketSession(secured, "/coordinates")
    if caller != "nobody":
        ws.scope["headers"].append((b"x-api-key", api_keys[Role(caller)].encode()))
    answer = await ws.open()
    if expected is None:
        assert answer["type"] == "websocket.accept"
        assert (await ws.receive_frame())["type"] == "snapshot"
    else:
        assert (answer["type"], answer["status"]) == ("websocket.http.response.start", expected)
    await ws.close()
