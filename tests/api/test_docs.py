"""The OpenAPI document, Swagger UI (and its reference-system address), and CORS."""

from __future__ import annotations

from typing import Any

import httpx

from iotstream.api.schemas import ROBOT

OPERATIONS = {
    ("/api/health", "get"): ("health_api_health_get", {"200", "503"}),
    ("/api/devices/{device_id}/history", "get"): (
        "device_history_api_devices__device_id__history_get",
        {"200", "404", "422", "503"},
    ),
    ("/api/history", "get"): ("fleet_history_api_history_get", {"200", "422", "503"}),
    ("/api/raw", "get"): ("raw_messages_api_raw_get", {"200", "422", "503"}),
    ("/api/stats", "get"): ("stats_api_stats_get", {"200"}),
    ("/api/coordinates", "get"): ("coordinates_api_coordinates_get", {"200"}),
    ("/api/devices/{device_id}", "get"): (
        "device_api_devices__device_id__get",
        {"200", "404", "422"},
    ),
    ("/api/deadletters", "get"): ("deadletters_api_deadletters_get", {"200", "422"}),
    ("/api/commands/{device_id}", "post"): (
        "command_api_commands__device_id__post",
        {"202", "400", "422", "503"},
    ),
    ("/api/devices/{device_id}/commands", "post"): (
        "create_command_api_devices__device_id__commands_post",
        {"202", "400", "422", "503"},
    ),
    ("/api/devices/{device_id}/commands", "get"): (
        "device_commands_api_devices__device_id__commands_get",
        {"200", "404", "422"},
    ),
    ("/api/commands/{command_id}", "get"): (
        "get_command_api_commands__command_id__get",
        {"200", "404", "422"},
    ),
    ("/api/commands/{command_id}", "delete"): (
        "cancel_command_api_commands__command_id__delete",
        {"200", "404", "409", "422", "503"},
    ),
    ("/metrics", "get"): ("metrics_metrics_get", {"200"}),
    **{
        (f"/api/devices/{{device_id}}/{what}", "get"): (
            f"device_{what}_api_devices__device_id__{what}_get",
            {"200", "404", "422", "503"},
        )
        for what in ("trips", "stops", "summary", "prediction")
    },
    ("/api/analytics/heatmap", "get"): ("heatmap_api_analytics_heatmap_get", {"200", "422", "503"}),
}


async def spec(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


async def test_openapi_lists_every_operation_as_before(client: httpx.AsyncClient) -> None:
    paths = (await spec(client))["paths"]
    found = {
        (path, method): (operation["operationId"], set(operation["responses"]))
        for path, operations in paths.items()
        for method, operation in operations.items()
    }
    assert found == OPERATIONS
    [parameter] = paths["/api/devices/{device_id}"]["get"]["parameters"]
    assert (parameter["name"], parameter["in"], parameter["required"]) == (
        "device_id",
        "path",
        True,
    )
    assert parameter["schema"]["type"] == "string"


async def test_openapi_examples(client: httpx.AsyncClient) -> None:
    document = await spec(client)
    paths, schemas = document["paths"], document["components"]["schemas"]
    assert schemas["CommandRequest"]["examples"] == [
        {"command": "tracking"},
        {"command": "goto 3.5 2.0"},
    ]
    assert schemas["CommandRequest"]["additionalProperties"] is False
    [health] = schemas["HealthReport"]["examples"]
    assert health["components"]["broker"]["status"] == "UP"
    [stats] = schemas["StatsReport"]["examples"]
    assert set(stats) == set(schemas["StatsReport"]["properties"])
    content = "application/json"
    coordinates = paths["/api/coordinates"]["get"]["responses"]["200"]["content"]
    assert coordinates[content]["example"] == [ROBOT]
    device = paths["/api/devices/{device_id}"]["get"]["responses"]
    assert device["200"]["content"][content]["example"] == ROBOT
    assert device["404"]["content"][content]["example"] == {"detail": "..."}
    command = paths["/api/commands/{device_id}"]["post"]
    assert command["requestBody"]["content"][content]["schema"] == {
        "$ref": "#/components/schemas/CommandRequest"
    }
    assert command["responses"]["202"]["content"][content]["schema"] == {
        "$ref": "#/components/schemas/CommandAccepted"
    }
    assert set(schemas["DeadLetter"]["properties"]) == {
        "topic",
        "reason",
        "detail",
        "size",
        "payload",
        "receivedAt",
    }


async def test_swagger_ui_and_its_reference_system_address(client: httpx.AsyncClient) -> None:
    docs = await client.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text and "/openapi.json" in docs.text
    redirect = await client.get("/swagger-ui.html")
    assert redirect.status_code == 307
    assert redirect.headers["location"] == "/docs"


async def test_cors_follows_the_origins_given(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/health", headers={"Origin": "http://example.com"})
    assert response.headers["access-control-allow-origin"] == "*"
    preflight = await client.options(
        "/api/commands/robot1",
        headers={"Origin": "http://example.com", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]
