"""``iotstream run``: the embedded server, every part of the pipeline in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from contextlib import AsyncExitStack

import uvicorn

from .api import Services, create_app
from .broker import connect_host, create_broker
from .bus import create_bus
from .commands import CommandService
from .config import Settings, mqtt_address
from .health import HasHealth
from .hub import Hub
from .ingest import Ingest
from .lifecycle import cancel_all, spawn
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


def _stop_on_signals(server: uvicorn.Server) -> None:
    def stop() -> None:
        if server.should_exit:
            server.force_exit = True
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)


def _banner(settings: Settings, mqtt_host: str, mqtt_port: int) -> str:
    http = f"http://{connect_host(settings.http_host)}:{settings.http_port}"
    lines = [
        f"iotstream is running: API {http}/api , Swagger UI {http}/docs",
        f"  WebSocket  ws://{connect_host(settings.http_host)}:{settings.http_port}/coordinates",
        f"  MQTT       mqtt://{mqtt_host}:{mqtt_port}  (publish to sensors/<id>/coordinates)",
    ]
    if settings.mqtt_url is None and settings.mqtt_host == "127.0.0.1":
        lines.append("  MQTT listens on loopback only; --mqtt-host 0.0.0.0 opens it to the network")
    if settings.http_host == "127.0.0.1":
        lines.append("  HTTP listens on loopback only; --http-host 0.0.0.0 opens it to the network")
    return "\n".join(lines)


async def serve(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, then stop every part in reverse order."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    async with AsyncExitStack() as stack:
        components: dict[str, HasHealth] = {}
        broker = create_broker(settings)
        if broker is not None:
            await stack.enter_async_context(broker)
            components["broker"] = broker
            mqtt_host, mqtt_port = connect_host(broker.host), broker.port
        else:
            assert settings.mqtt_url is not None
            mqtt_host, mqtt_port = mqtt_address(settings.mqtt_url)

        bus = await stack.enter_async_context(create_bus(settings))
        store = await stack.enter_async_context(create_store(settings))
        hub = await stack.enter_async_context(
            Hub(store, interval=settings.ws_interval, client_buffer=settings.ws_client_buffer)
        )
        processor = await stack.enter_async_context(
            Processor(bus, store, device_ttl=settings.device_ttl)
        )
        ingest = await stack.enter_async_context(
            Ingest(
                mqtt_host,
                mqtt_port,
                settings.mqtt_topics,
                settings.mqtt_qos,
                Parser(settings.max_payload),
                bus,
            )
        )
        command_link = await stack.enter_async_context(
            MqttConnection(mqtt_host, mqtt_port, "commands")
        )
        if broker is None:
            components["broker"] = ingest.connection
        components.update(
            ingest=ingest,
            bus=bus,
            processor=processor,
            store=store,
            hub=hub,
            commands=command_link,
        )

        rates = RateMeter(store)
        tasks = [spawn(rates.run(), "rates")]
        if settings.simulate:
            fleet = Fleet(settings.simulate, seed=1)
            tasks.append(
                spawn(simulate(fleet, mqtt_host, mqtt_port, settings.simulate_rate), "simulator")
            )
        stack.push_async_callback(cancel_all, tasks)

        services = Services(store, hub, CommandService(command_link), rates, components)
        app = create_app(services, settings.cors_origins)
        config = uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_level="warning",
            ws_ping_interval=settings.ws_ping_interval,
            ws_ping_timeout=settings.ws_ping_interval,
            lifespan="off",
        )
        server = _Server(config)
        _stop_on_signals(server)
        server_task = asyncio.ensure_future(server.serve())
        while not server.started and not server_task.done():  # noqa: ASYNC110 - uvicorn only has a flag
            await asyncio.sleep(0.02)
        if server.started:
            print(_banner(settings, mqtt_host, mqtt_port), flush=True)
        await server_task
