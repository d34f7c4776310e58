"""What authentication costs: REST requests and WebSocket handshakes with auth off, with an
API key and with a bearer token, against the same in-process API served by uvicorn.

``python -m bench.auth`` (a few seconds) prints the median and 99th percentile of each, and
the overhead against auth off. The server runs in a thread of its own, the client in the main
thread, one request at a time, so the numbers are the latency each request pays.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from websockets.sync.client import connect

from harness import free_port
from iotstream.api import ApiContext, create_app
from iotstream.auth import Authenticator, Role, add_api_key, add_user
from iotstream.auth.file import FileAccounts
from iotstream.commands import CommandService
from iotstream.config import AuthSettings, MqttEndpoint
from iotstream.hub import Hub
from iotstream.mqtt import MqttConnection
from iotstream.rates import RateMeter
from iotstream.store import MemoryStore

PASSWORD = "bench-password"


@contextmanager
def serving(data_dir: Path | None) -> Iterator[tuple[str, dict[str, str]]]:
    """The API on a free loopback port, with credentials required when ``data_dir`` is
    given; yields its base URL and credentials by kind (``key``, ``token``)."""
    port = free_port()
    ready = threading.Event()
    servers: list[uvicorn.Server] = []
    credentials: dict[str, str] = {}

    async def run() -> None:
        async with MemoryStore() as store, Hub(store) as hub:
            link = MqttConnection(MqttEndpoint("127.0.0.1", free_port()), "commands")
            context = ApiContext(store, hub, CommandService(link, store), RateMeter(store), {})
            auth = None
            if data_dir is not None:
                auth = Authenticator(
                    FileAccounts(data_dir / "accounts.json"), AuthSettings(), required=True
                )
                await auth.start()
                _, credentials["key"] = await add_api_key(auth.accounts, "bench", Role.VIEWER)
                await add_user(auth.accounts, "bench", Role.VIEWER, PASSWORD)
                token = await auth.login("bench", PASSWORD, "127.0.0.1")
                credentials["token"] = token.access_token
            context.auth = auth
            config = uvicorn.Config(
                create_app(context, ["*"]), port=port, log_level="warning", lifespan="off"
            )
            server = uvicorn.Server(config)
            servers.append(server)
            task = asyncio.create_task(server.serve())
            # uvicorn only has a flag to say it started.
            while not server.started:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            ready.set()
            await task  # until the main thread sets ``should_exit``
            if auth is not None:
                await auth.stop()

    thread = threading.Thread(target=asyncio.run, args=(run(),), daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the API did not start")
    try:
        yield f"127.0.0.1:{port}", credentials
    finally:
        servers[0].should_exit = True  # uvicorn polls it
        thread.join(30)


def timed(action: Callable[[], None], count: int) -> list[float]:
    for _ in range(min(50, count)):
        action()  # warm up: connections, caches, the JIT of nothing
    times = []
    for _ in range(count):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return times


def summary(times: list[float]) -> tuple[float, float]:
    """Median and 99th percentile, in microseconds."""
    ordered = sorted(times)
    return statistics.median(ordered) * 1e6, ordered[int(len(ordered) * 0.99) - 1] * 1e6


def rest_latency(address: str, headers: dict[str, str], count: int) -> tuple[float, float]:
    """GET /api/coordinates over one kept-alive connection."""
    with httpx.Client(base_url=f"http://{address}", headers=headers) as client:

        def request() -> None:
            response = client.get("/api/coordinates")
            assert response.status_code == 200, (response.status_code, response.text)

        return summary(timed(request, count))


def handshake_latency(
    address: str, headers: dict[str, str], protocols: list[str] | None, count: int
) -> tuple[float, float]:
    """A new WebSocket: handshake, the snapshot frame, close."""

    def handshake() -> None:
        with connect(
            f"ws://{address}/coordinates",
            additional_headers=headers,
            subprotocols=protocols,  # type: ignore[arg-type]
        ) as ws:
            ws.recv()

    return summary(timed(handshake, count))


Row = tuple[str, tuple[float, float] | None, tuple[float, float]]


def measure(requests: int, handshakes: int) -> list[Row]:
    """REST and WebSocket-handshake latency (median, p99) with auth off, then each way of
    authenticating; the subprotocol way has no REST row."""
    rows: list[Row] = []
    with serving(None) as (address, _):
        rows.append(
            (
                "auth off",
                rest_latency(address, {}, requests),
                handshake_latency(address, {}, None, handshakes),
            )
        )
    with tempfile.TemporaryDirectory() as tmp, serving(Path(tmp)) as (address, credentials):
        for name, headers in (
            ("X-API-Key", {"X-API-Key": credentials["key"]}),
            ("bearer token", {"Authorization": f"Bearer {credentials['token']}"}),
        ):
            rows.append(
                (
                    name,
                    rest_latency(address, headers, requests),
                    handshake_latency(address, headers, None, handshakes),
                )
            )
        protocols = ["iotstream", f"bearer.{credentials['token']}"]
        rows.append(
            (
                "token as subprotocol",
                None,
                handshake_latency(address, {}, protocols, handshakes),
            )
        )
    return rows


def run_auth(requests: int = 2000, handshakes: int = 300) -> dict[str, Any]:
    """``measure`` as the ``auth`` scenario of ``python -m bench`` writes it (microseconds)."""
    rows = measure(requests, handshakes)
    base = rows[0]
    assert base[1] is not None
    cases = []
    for name, rest, (ws50, ws99) in rows:
        case: dict[str, Any] = {"case": name, "wsP50Us": round(ws50), "wsP99Us": round(ws99)}
        case["wsOverheadUs"] = round(ws50 - base[2][0])
        if rest is not None:
            case.update(restP50Us=round(rest[0]), restP99Us=round(rest[1]))
            case["restOverheadUs"] = round(rest[0] - base[1][0])
        cases.append(case)
    return {"kind": "auth", "requests": requests, "handshakes": handshakes, "cases": cases}


def summary_line(result: dict[str, Any]) -> str:
    return "  " + "; ".join(
        f"{c['case']}: REST p50 {c.get('restP50Us', '-')} µs, WS handshake p50 {c['wsP50Us']} µs"
        for c in result["cases"]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.auth", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="REST requests per case")
    parser.add_argument("--handshakes", type=int, default=300, help="WebSocket handshakes per case")
    args = parser.parse_args(argv)
    rows = measure(args.requests, args.handshakes)
    base = rows[0]
    assert base[1] is not None
    print(f"{'':22} {'REST p50':>9} {'p99':>8} {'+p50':>7}   {'WS p50':>9} {'p99':>8} {'+p50':>7}")
    for name, rest, (ws50, ws99) in rows:
        if rest is None:
            rest_text = f"{'-':>9} {'-':>8} {'-':>7}"
        else:
            rest_text = f"{rest[0]:8.0f}µ {rest[1]:7.0f}µ {rest[0] - base[1][0]:+6.0f}µ"
        print(f"{name:22} {rest_text}   {ws50:8.0f}µ {ws99:7.0f}µ {ws50 - base[2][0]:+6.0f}µ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
