"""``iotstream run --auth on`` as a subprocess: the first start makes ``admin`` and prints
its password once; real HTTP and WebSocket clients log in, are refused, and are closed."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from harness import stop_process
from tests.conftest import Server, start_server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    tmp = tmp_path_factory.mktemp("secured")
    server = start_server(tmp, "--auth", "on", "--cors-origins", "http://dash.example")
    try:
        found = re.search(r"Created the user admin with the password (\S+)", server.log.read_text())
        assert found is not None, server.log.read_text()
        yield server, found.group(1)
    finally:
        stop_process(server.process)


def login(server: Server, password: str) -> str:
    response = httpx.post(
        server.http + "/api/auth/token", data={"username": "admin", "password": password}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def test_the_first_start_prints_the_admin_password_and_keeps_only_its_hash(
    secured_server: tuple[Server, str],
) -> None:
    server, password = secured_server
    accounts = (server.data_dir / "auth" / "accounts.json").read_text()
    assert password not in accounts and "$argon2id$" in accounts
    assert server.get("/api/coordinates").status_code == 401
    assert server.get("/api/health").status_code == 200
    token = login(server, password)
    response = httpx.get(
        server.http + "/api/coordinates", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200


async def test_a_browser_style_websocket_with_the_token_as_a_subprotocol(
    secured_server: tuple[Server, str],
) -> None:
    server, password = secured_server
    token = login(server, password)
    async with connect(
        server.ws + "/coordinates",
        subprotocols=["iotstream", f"bearer.{token}"],  # type: ignore[list-item]
        origin="http://dash.example",  # type: ignore[arg-type]
    ) as ws:
        assert ws.subprotocol == "iotstream"
        assert orjson.loads(await ws.recv())["type"] == "snapshot"
        await ws.send(b"\x00binary")
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1003


async def test_a_websocket_message_over_4_kib_is_closed_with_1009(
    secured_server: tuple[Server, str],
) -> None:
    server, password = secured_server
    headers = {"Authorization": f"Bearer {login(server, password)}"}
    async with connect(server.ws + "/coordinates", additional_headers=headers) as ws:
        assert orjson.loads(await ws.recv())["type"] == "snapshot"
        await ws.send(orjson.dumps({"type": "ping", "pad": "x" * 5000}).decode())
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer nonsense"}, 401), ({"Origin": "http://evil"}, 403)],
)
async def test_a_websocket_without_valid_credentials_is_refused(
    secured_server: tuple[Server, str], headers: dict[str, str], status: int
) -> None:
    server, password = secured_server
    if "Origin" in headers:
        headers = {**headers, "Authorization": f"Bearer {login(server, password)}"}
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.ws + "/coordinates", additional_headers=headers):
            pass
    assert refused.value.response.status_code == status
