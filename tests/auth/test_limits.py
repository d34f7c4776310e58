"""Bounds on what a client sends over HTTP: a body over 64 KiB is 413, whether it says its
length or not, a query string over 4 KiB is 414; nothing answers with a stack trace."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx

from iotstream.api.limits import MAX_BODY, MAX_QUERY
from iotstream.auth import Role


async def test_a_large_body_is_413(
    secured_client: httpx.AsyncClient, api_keys: dict[Role, str]
) -> None:
    headers = {"X-API-Key": api_keys[Role.OPERATOR], "Content-Type": "application/json"}
    body = b'{"command": "' + b"x" * MAX_BODY + b'"}'
    said = await secured_client.post("/api/commands/robot1", content=body, headers=headers)
    assert said.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * (MAX_BODY // 2)

    unsaid = await secured_client.post("/api/commands/robot1", content=chunks(), headers=headers)
    assert unsaid.status_code == 413
    assert unsaid.json() == {"detail": f"the request body is over {MAX_BODY} bytes"}


async def test_a_small_body_still_reaches_the_route(
    secured_client: httpx.AsyncClient, api_keys: dict[Role, str]
) -> None:
    response = await secured_client.post(
        "/api/commands/robot1",
        json={"command": "x" * 300},
        headers={"X-API-Key": api_keys[Role.OPERATOR]},
    )
    assert response.status_code == 422  # the route's own bound: 256 characters


async def test_a_long_query_is_414(secured_client: httpx.AsyncClient) -> None:
    response = await secured_client.get("/api/deadletters", params={"limit": "1" * MAX_QUERY})
    assert response.status_code == 414


async def test_bad_input_gets_no_stack_trace(
    secured_client: httpx.AsyncClient, api_keys: dict[Role, str]
) -> None:
    headers = {"X-API-Key": api_keys[Role.ADMIN], "Content-Type": "application/json"}
    for body in (b"{", b"\xff\xfe", b'{"name": "\\ud800", "role": "admin"}'):
        response = await secured_client.post("/api/apikeys", content=body, headers=headers)
        assert response.status_code in (400, 422)
        assert "Traceback" not in response.text
