"""With credentials required, /openapi.json (and so /docs) shows the security schemes, the
role each operation needs and its 401 and 403 answers; open operations stay open."""

from __future__ import annotations

import httpx

from iotstream.auth import Role


async def test_the_docs_show_the_security_schemes(secured_client: httpx.AsyncClient) -> None:
    response = await secured_client.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["OAuth2Password"]["flows"]["password"]["tokenUrl"] == "/api/auth/token"
    assert (schemes["APIKey"]["in"], schemes["APIKey"]["name"]) == ("header", "X-API-Key")
    paths = document["paths"]
    command = paths["/api/commands/{device_id}"]["post"]
    assert {"OAuth2Password": []} in command["security"]
    assert {"401", "403"} <= set(command["responses"])
    assert "Needs the **operator** role." in command["description"]
    assert "Needs the **viewer** role." in paths["/api/coordinates"]["get"]["description"]
    assert "Needs the **admin** role." in paths["/api/users"]["post"]["description"]
    for open_path, method in [("/api/health", "get"), ("/api/auth/token", "post")]:
        operation = paths[open_path][method]
        assert "security" not in operation
        assert "401" not in operation["responses"] or open_path == "/api/auth/token"
    assert (await secured_client.get("/docs")).status_code == 200


async def test_health_stays_open_and_says_nothing_else(
    secured_client: httpx.AsyncClient, api_keys: dict[Role, str]
) -> None:
    response = await secured_client.get("/api/health")
    assert response.status_code == 200
    report = response.json()
    assert set(report) == {"status", "uptimeSeconds", "version", "components"}
    assert report["components"]["store"] == {"status": "UP", "detail": ""}
    for headers in ({"X-API-Key": api_keys[Role.VIEWER]}, {"Authorization": "Bearer nonsense"}):
        response = await secured_client.get("/api/health", headers=headers)
        assert response.status_code == 200
        shown = response.json()["components"]["store"]["detail"] != ""
        assert shown is ("X-API-Key" in headers)
