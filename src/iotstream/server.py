"""Starting and stopping the roles of iotstream: the embedded server runs them all in one
process; the distributed mode runs each as its own process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from contextlib import AsyncExitStack
from typing import Literal

import uvicorn
from fastapi import FastAPI

from .api import Services, create_app
from .broker import connect_host, create_broker
from .bus import create_bus
from .commands import CommandService
from .config import MqttEndpoint, Settings
from .errors import ConfigError
from .health import HasHealth
from .hub import Hub
from .ingest import Ingest
from .lifecycle import cancel_all, settle_heap, spawn
from .mqtt import MqttConnection
from .parser import Parser
from .processor import Processor
from .simulator import Fleet, simulate
from .stats import RateMeter
from .store import create_store

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: ``serve`` owns shutdown, so every part stops
    in order before the process exits (uvicorn would re-raise the signal first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _banner(settings: Settings, endpoint: MqttEndpoint) -> str:
    http = f"http://{connect_host(settings.http_host)}:{settings.http_port}"
    lines = [
        f"iotstream is running: dashboard {http}/",
        f"  API        {http}/api/health , Swagger UI {http}/docs",
        f"  WebSocket  ws://{connect_host(settings.http_host)}:{settings.http_port}/coordinates",
        f"  MQTT       {endpoint}  (publish to sensors/<id>/coordinates)",
    ]
    if settings.mqtt_url is None and settings.mqtt_host == "127.0.0.1":
        lines.append("  MQTT listens on loopback only; --mqtt-host 0.0.0.0 opens it to the network")
    if settings.http_host == "127.0.0.1":
        lines.append("  HTTP listens on loopback only; --http-host 0.0.0.0 opens it to the network")
    return "\n".join(lines)


Role = Literal["broker", "bridge", "processor", "api"]
EMBEDDED: frozenset[Role] = frozenset({"broker", "bridge", "processor", "api"})


def _stop_event() -> asyncio.Event:
    """Set by the first SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


# What a role needs when it runs on its own: in-process backends cannot be shared between
# processes, so a lone role must be given the engines it talks to.
NEEDS: dict[Role, tuple[str, ...]] = {
    "bridge": ("mqtt_url", "kafka_bootstrap"),
    "processor": ("kafka_bootstrap", "redis_url"),
    "api": ("redis_url", "mqtt_url"),
}


def _check_engines(settings: Settings, roles: frozenset[Role]) -> None:
    if "broker" in roles:
        return
    missing = sorted(
        {name for role in roles for name in NEEDS.get(role, ()) if getattr(settings, name) is None}
    )
    if missing:
        flags = ", ".join("--" + name.replace("_", "-") for name in missing)
        raise ConfigError(f"iotstream {' '.join(sorted(roles))} needs {flags}")


async def serve(settings: Settings, roles: frozenset[Role] = EMBEDDED) -> None:
    """Run ``roles`` in this process until SIGINT/SIGTERM, then stop them in reverse order.

    ``iotstream run`` is every role; ``bridge``, ``processor`` and ``api`` are one each,
    for the distributed mode where each scales on its own.
    """
    _check_engines(settings, roles)
    stop = _stop_event()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        components: dict[str, HasHealth] = {}
        broker = create_broker(settings) if "broker" in roles else None
        if broker is not None:
            await stack.enter_async_context(broker)
            components["broker"] = broker
            endpoint = MqttEndpoint(connect_host(broker.host), broker.port)
        else:
            endpoint = MqttEndpoint.parse(settings.mqtt_url or "mqtt://127.0.0.1")

        bus = store = hub = None
        if roles & {"bridge", "processor"}:
            bus = await stack.enter_async_context(create_bus(settings))
            components["bus"] = bus
        if roles & {"processor", "api"}:
            store = await stack.enter_async_context(create_store(settings))
            components["store"] = store
        if "api" in roles:
            assert store is not None
            hub = await stack.enter_async_context(
                Hub(store, interval=settings.ws_interval, client_buffer=settings.ws_client_buffer)
            )
            components["hub"] = hub
        if "processor" in roles:
            assert bus is not None and store is not None
            components["processor"] = await stack.enter_async_context(
                Processor(bus, store, group=settings.kafka_group, device_ttl=settings.device_ttl)
            )
        if "bridge" in roles:
            assert bus is not None
            durable = settings.kafka_bootstrap is not None
            ingest = await stack.enter_async_context(
                Ingest(
                    endpoint,
                    settings.mqtt_topics,
                    settings.mqtt_qos,
                    Parser(settings.max_payload),
                    bus,
                    ack_after_publish=durable,
                    client_id=settings.mqtt_client_id
                    or (f"iotstream-bridge-{socket.gethostname()}" if durable else None),
                    share_group=settings.mqtt_share_group,
                )
            )
            components["ingest"] = ingest
            components.setdefault("broker", ingest.connection)

        tasks: list[asyncio.Task[None]] = []
        stack.push_async_callback(cancel_all, tasks)
        if settings.simulate:
            fleet = Fleet(settings.simulate, seed=1)
            tasks.append(spawn(simulate(fleet, endpoint, settings.simulate_rate), "simulator"))
        settle_heap()
        if hub is None:
            log.info("iotstream %s running; stop with Ctrl-C", " + ".join(sorted(roles)))
            await stop.wait()
            return
        assert store is not None
        command_link = await stack.enter_async_context(MqttConnection(endpoint, "commands"))
        components["commands"] = command_link
        components.setdefault("broker", command_link)
        rates = RateMeter(store)
        tasks.append(spawn(rates.run(), "rates"))
        services = Services(store, hub, CommandService(command_link), rates, components)
        await _serve_http(settings, create_app(services, settings.cors_origins), stop, endpoint)


async def _serve_http(
    settings: Settings, app: FastAPI, stop: asyncio.Event, endpoint: MqttEndpoint
) -> None:
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_level="warning",
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_interval,
        ws_per_message_deflate=settings.ws_compression,
        lifespan="off",
    )
    server = _Server(config)
    serving = asyncio.ensure_future(server.serve())
    stopping = asyncio.ensure_future(stop.wait())
    while not server.started and not serving.done():  # noqa: ASYNC110 - uvicorn only has a flag
        await asyncio.sleep(0.02)
    if server.started:
        print(_banner(settings, endpoint), flush=True)
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
