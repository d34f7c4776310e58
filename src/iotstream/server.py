"""The roles of iotstream and how a process runs them.

A role says what it needs and what it starts (``ROLES``); the embedded server
(``iotstream run``) runs them all in one process, the distributed mode runs each as its own
process (``iotstream bridge``, ...). The parts the roles of one process share (the MQTT
endpoint, bus, store, hub) are built once, on first need, by an ``Assembly``. A new role is
one more entry in ``ROLES``, and with it one more sub-command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI

from .api import ApiContext, create_app, create_health_app
from .api.limits import MAX_WS_MESSAGE
from .archiver import Archiver
from .auth import (
    Authenticator,
    accounts_path,
    auth_required,
    create_authenticator,
    public_listeners,
)
from .broker import Broker, MosquittoBroker, connect_host, create_broker
from .broker import accounts as broker_accounts
from .bus import Bus, create_bus
from .commands import CommandService
from .config import OPTIONS, MqttEndpoint, Settings
from .errors import ConfigError
from .health import HasHealth
from .heap import keep_freed_memory, tune_garbage_collection
from .hub import Hub
from .ingest import Ingest
from .lake import Lake, create_lake
from .lifecycle import Component, cancel_all, spawn
from .logs import UVICORN_LOG_CONFIG
from .metrics import set_build_info
from .mqtt import MqttConnection
from .parser import Parser
from .processor import Processor
from .rates import RateMeter
from .simulator import Fleet, simulate
from .store import Store, create_store

log = logging.getLogger(__name__)

C = TypeVar("C", bound=Component)


class Assembly:
    """The parts the roles of one process share, each built once, on first need.

    Every part is entered into the process's exit stack, so the parts stop in the reverse
    order of their start, and registered by name in ``components`` for ``GET /api/health``.
    """

    def __init__(self, settings: Settings, stack: AsyncExitStack) -> None:
        self.settings = settings
        self.stack = stack
        self.components: dict[str, HasHealth] = {}
        self.api: FastAPI | None = None
        """The app served on --http-port, when a role of this process serves one."""
        self.context: ApiContext | None = None
        """What that app serves from."""
        self.broker: Broker | None = None
        """The embedded broker, when this process runs one."""
        self._endpoint: MqttEndpoint | None = None
        self._bus: Bus | None = None
        self._store: Store | None = None
        self._hub: Hub | None = None
        self._lake: Lake | None = None
        self._lake_made = False

    async def enter(self, name: str, component: C) -> C:
        """Start ``component`` until the process stops, reporting its health as ``name``."""
        await self.stack.enter_async_context(component)
        self.components[name] = component
        return component

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run a background task until the process stops."""
        self.stack.push_async_callback(cancel_all, [spawn(coro, name)])

    async def start_broker(self) -> None:
        """Start the embedded broker, unless ``--mqtt-url`` names one; what starts after it
        connects to it."""
        broker = create_broker(self.settings)
        if broker is not None:
            self.broker = await self.enter("broker", broker)

    def endpoint(self, account: str) -> MqttEndpoint:
        """Where MQTT client ``account`` of this process (``iotstream.broker.accounts``)
        connects: the embedded broker as that account, or ``--mqtt-url``."""
        if self.broker is not None:
            return self.broker.client_endpoint(account)
        if self._endpoint is None:
            if self.settings.mqtt.url is None:
                raise ConfigError("no MQTT broker in this process: give --mqtt-url")
            self._endpoint = self.settings.mqtt.endpoint()
        return self._endpoint

    async def bus(self) -> Bus:
        if self._bus is None:
            self._bus = await self.enter("bus", create_bus(self.settings))
        return self._bus

    async def store(self) -> Store:
        if self._store is None:
            self._store = await self.enter("store", create_store(self.settings))
        return self._store

    async def lake(self) -> Lake | None:
        """The Delta Lake tables, ``None`` with ``--lake off``."""
        if not self._lake_made:
            self._lake_made = True
            lake = create_lake(self.settings)
            if lake is not None:
                self._lake = await self.enter("lake", lake)
        return self._lake

    async def hub(self) -> Hub:
        if self._hub is None:
            ws = self.settings.ws
            hub = Hub(await self.store(), interval=ws.interval, client_buffer=ws.client_buffer)
            self._hub = await self.enter("hub", hub)
        return self._hub


@dataclass(frozen=True, slots=True)
class Role:
    """What a role needs and what it starts.

    ``needs`` are the settings (flat names) of the engines a role must be given when it runs
    without the others: in-process backends cannot be shared between processes.
    ``serves_http``: the role serves the HTTP API on --http-port, which answers
    ``GET /metrics`` and ``GET /api/health``. Otherwise a process of this role alone serves
    them on ``metrics_port`` unless ``--metrics-port`` says otherwise. ``summary`` and
    ``detail`` describe its CLI sub-command (no summary: no sub-command; it runs in
    ``iotstream run``).
    """

    name: str
    start: Callable[[Assembly], Awaitable[None]]
    needs: tuple[str, ...] = ()
    serves_http: bool = False
    metrics_port: int = 0
    summary: str | None = None
    detail: str = ""


async def _start_api(parts: Assembly) -> None:
    store, hub = await parts.store(), await parts.hub()
    command_link = MqttConnection(parts.endpoint(broker_accounts.COMMANDS), "commands", mqtt5=True)
    await parts.stack.enter_async_context(command_link)
    parts.components.setdefault("broker", command_link)
    options = parts.settings.commands
    command_service = CommandService(
        command_link,
        store,
        default_ttl=options.ttl,
        max_ttl=options.max_ttl,
        offline_after=options.offline_after,
    )
    # Its health is the link's, with what it keeps queued.
    await parts.enter("commands", command_service)
    rates = RateMeter(store)
    parts.spawn(rates.run(), "rates")
    # The shared ``components`` also gets the parts of roles started after this one.
    context = ApiContext(
        store,
        hub,
        command_service,
        rates,
        parts.components,
        lake=await parts.lake(),
        auth=await _start_auth(parts),
        silent_after=parts.settings.metrics.silent_after,
    )
    parts.context = context
    parts.api = create_app(context, parts.settings.http.cors_origins)


async def _start_auth(parts: Assembly) -> Authenticator | None:
    """The authenticator when credentials are required; on a first start without users it
    makes ``admin`` and prints its password, this once."""
    settings = parts.settings
    if not auth_required(settings):
        public = public_listeners(settings)
        if public:
            log.warning(
                "--auth off with %s open to the network: anyone who reaches it may "
                "watch and command every robot",
                " and ".join(public),
            )
        return None
    auth = await parts.enter("auth", create_authenticator(settings))
    if auth.initial_password is not None:
        print(
            f"Created the user admin with the password {auth.initial_password}\n"
            f"  It is shown this once and stored only as a hash in {accounts_path(settings)}; "
            "`iotstream users add NAME --role ROLE` adds more.",
            flush=True,
        )
    return auth


async def _start_processor(parts: Assembly) -> None:
    settings = parts.settings
    processor = Processor(
        await parts.bus(),
        await parts.store(),
        group=settings.kafka.group,
        device_ttl=settings.state.device_ttl,
    )
    await parts.enter("processor", processor)


async def _start_archiver(parts: Assembly) -> None:
    lake = await parts.lake()
    if lake is None:
        log.info("the lake is off (--lake off): nothing is archived")
        return
    settings = parts.settings.lake
    archiver = Archiver(
        await parts.bus(),
        lake,
        compact_interval=settings.compact_interval,
        retention=settings.retention_days * 86_400,
    )
    await parts.enter("archiver", archiver)


async def _start_bridge(parts: Assembly) -> None:
    mqtt = parts.settings.mqtt
    durable = parts.settings.kafka.bootstrap is not None
    ingest = Ingest(
        parts.endpoint(broker_accounts.INGEST),
        mqtt.topics,
        mqtt.qos,
        Parser(mqtt.max_payload),
        await parts.bus(),
        ack_after_publish=durable,
        client_id=mqtt.client_id
        or (f"iotstream-bridge-{socket.gethostname()}" if durable else None),
        share_group=mqtt.share_group,
    )
    await parts.enter("ingest", ingest)
    parts.components.setdefault("broker", ingest.connection)


# In start order: what receives starts before what feeds it, so on SIGINT/SIGTERM the HTTP
# listeners stop first, then the simulator, the bridge, the archiver (which writes what the
# bus still holds), the processor, the API's parts, and the broker last.
ROLES: tuple[Role, ...] = (
    Role("broker", Assembly.start_broker),
    Role(
        "api",
        _start_api,
        needs=("redis_url", "mqtt_url"),
        serves_http=True,
        summary="REST, WebSocket and commands served from Redis",
    ),
    Role(
        "processor",
        _start_processor,
        needs=("kafka_bootstrap", "redis_url"),
        metrics_port=9082,
        summary="Kafka to Redis",
        detail="Offsets are committed after the Redis writes.",
    ),
    Role(
        "archiver",
        _start_archiver,
        needs=("kafka_bootstrap",),
        metrics_port=9083,
        summary="Kafka to the Delta Lake tables (--lake-url, default <data-dir>/lake)",
        detail="Offsets are committed after the lake commit, and each commit records the "
        "Kafka offsets it holds, so every event lands in the lake exactly once.",
    ),
    Role(
        "bridge",
        _start_bridge,
        needs=("mqtt_url", "kafka_bootstrap"),
        metrics_port=9081,
        summary="MQTT to Kafka",
        detail="A QoS 1 message is acknowledged only after Kafka confirmed it.",
    ),
)


def default_metrics_port(roles: Sequence[Role]) -> int | None:
    """Where a process of ``roles`` serves its metrics and health when ``--metrics-port`` is
    not given: ``None`` when it serves the HTTP API (they are on --http-port), else the first
    role's port (0: any free one)."""
    if any(role.serves_http for role in roles):
        return None
    return next((role.metrics_port for role in roles if role.metrics_port), 0)


def role_names(roles: Sequence[Role]) -> str:
    """The roles of a process as its logs and ``iotstream_build_info`` name them: the
    sub-command roles, sorted and comma-joined (``api,archiver,bridge,processor`` for
    ``iotstream run``)."""
    return ",".join(sorted(role.name for role in roles if role.summary))


def _check_engines(settings: Settings, roles: Sequence[Role]) -> None:
    if {role.name for role in roles} == {role.name for role in ROLES}:
        return  # every role in one process: the in-process backends serve them all
    missing = sorted(
        {name for role in roles for name in role.needs if settings.value(name) is None}
    )
    if missing:
        flags = ", ".join(OPTIONS[name].flag for name in missing)
        raise ConfigError(f"iotstream {' '.join(role.name for role in roles)} needs {flags}")
    if [role.name for role in roles] == ["archiver"] and not settings.lake.enabled:
        raise ConfigError("iotstream archiver writes the lake: it cannot run with --lake off")


class _Server(uvicorn.Server):
    """uvicorn without its signal handling: ``serve`` owns shutdown, so every part stops
    in order before the process exits (uvicorn would re-raise the signal first)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _listen(stack: AsyncExitStack, host: str, port: int, flag: str) -> socket.socket:
    """A bound socket, so a busy port is a clear error at start and port 0 a free one."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    stack.callback(sock.close)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit it. uvloop does not turn Nagle off on connections of
        # a socket it was handed, and Nagle holds small WebSocket frames back until the
        # client's delayed ACK: 40 ms on the latency tail (measured with make bench).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({flag}): {exc.strerror}") from exc
    return sock


def _bind(
    settings: Settings, roles: Sequence[Role], stack: AsyncExitStack
) -> tuple[socket.socket | None, socket.socket | None]:
    """The sockets of the HTTP API, if a role serves it, and of the metrics and health
    listener, unless the API answers GET /metrics and GET /api/health on the same port."""
    http = settings.http
    api = None
    if any(role.serves_http for role in roles):
        api = _listen(stack, http.host, http.port, "--http-port")
    port = settings.metrics.port
    if port is None:
        port = default_metrics_port(roles)
    if port is None or (api is not None and port == http.port):
        return api, None
    return api, _listen(stack, http.host, port, "--metrics-port")


def _url(sock: socket.socket, tls: bool) -> str:
    host, port = sock.getsockname()[:2]
    return f"{'https' if tls else 'http'}://{connect_host(host)}:{port}"


def _stop_event() -> asyncio.Event:
    """Set by the first SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def serve(settings: Settings, roles: Sequence[Role] = ROLES) -> None:
    """Run ``roles`` in this process until SIGINT/SIGTERM, then stop them in reverse order.

    ``iotstream run`` is every role; ``bridge``, ``processor`` and ``api`` are one each,
    for the distributed mode where each scales on its own.
    """
    roles = [role for role in ROLES if role in roles]
    _check_engines(settings, roles)
    set_build_info(role_names(roles))
    stop = _stop_event()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    keep_freed_memory()
    async with AsyncExitStack() as stack:
        # Ports first: a busy one fails before anything started.
        api_socket, health_socket = _bind(settings, roles, stack)
        parts = Assembly(settings, stack)
        for role in roles:
            await role.start(parts)
        if settings.simulator.robots:
            fleet = Fleet(settings.simulator.robots, seed=1)
            endpoint = parts.endpoint(broker_accounts.SIMULATOR)
            parts.spawn(simulate(fleet, endpoint, settings.simulator.rate), "simulator")

        listeners: list[tuple[FastAPI, socket.socket]] = []
        lines = []
        if api_socket is not None and parts.api is not None:
            listeners.append((parts.api, api_socket))
            lines.append(_banner(settings, parts.broker))
        else:
            names = " + ".join(role.name for role in roles)
            lines.append(f"iotstream {names} is running; stop with Ctrl-C")
        if health_socket is not None:
            # With the API in this process, the same health and metrics as on its port.
            listeners.append((create_health_app(parts.components, parts.context), health_socket))
            url = _url(health_socket, settings.http.tls_cert is not None)
            lines.append(f"  Health     {url}/api/health")
            lines.append(f"  Metrics    {url}/metrics")
        tune_garbage_collection()
        await _serve_http(settings, listeners, stop, "\n".join(lines))


def _banner(settings: Settings, broker: Broker | None) -> str:
    host = connect_host(settings.http.host)
    tls = settings.http.tls_cert is not None
    http = f"{'https' if tls else 'http'}://{host}:{settings.http.port}"
    lines = [
        f"iotstream is running: dashboard {http}/",
        f"  API        {http}/api/health , Swagger UI {http}/docs",
        f"  WebSocket  {'wss' if tls else 'ws'}://{host}:{settings.http.port}/coordinates",
    ]
    if auth_required(settings):
        lines.append(
            "  API needs credentials: log in on the dashboard or POST /api/auth/token; "
            "`iotstream users add` and `iotstream apikeys add` make more"
        )
    if broker is None:
        lines.append(f"  MQTT       {settings.mqtt.endpoint()}")
    else:
        mqtt_host = connect_host(broker.host)
        lines.append(
            f"  MQTT       mqtt://{mqtt_host}:{broker.port}  (publish to sensors/<id>/coordinates)"
        )
        if broker.tls is not None:
            lines.append(f"  MQTT TLS   mqtts://{mqtt_host}:{broker.tls.port}")
        if isinstance(broker, MosquittoBroker) and broker.accounts is not None:
            lines.append(
                "  MQTT needs an account per robot: `iotstream devices add <id>` prints its "
                "user name and password"
            )
    if settings.mqtt.url is None and settings.mqtt.host == "127.0.0.1":
        lines.append("  MQTT listens on loopback only; --mqtt-host 0.0.0.0 opens it to the network")
    if settings.http.host == "127.0.0.1":
        lines.append("  HTTP listens on loopback only; --http-host 0.0.0.0 opens it to the network")
    return "\n".join(lines)


async def _serve_http(
    settings: Settings,
    listeners: list[tuple[FastAPI, socket.socket]],
    stop: asyncio.Event,
    banner: str,
) -> None:
    """Serve every listener until ``stop``; print ``banner`` once all of them accept."""
    servers = [
        _Server(
            uvicorn.Config(
                app,
                log_level="warning",
                log_config=UVICORN_LOG_CONFIG,
                ws_ping_interval=settings.ws.ping_interval,
                ws_ping_timeout=settings.ws.ping_interval,
                ws_per_message_deflate=settings.ws.compression,
                ws_max_size=MAX_WS_MESSAGE,
                lifespan="off",
                ssl_certfile=settings.http.tls_cert,
                ssl_keyfile=settings.http.tls_key,
            )
        )
        for app, _ in listeners
    ]
    serving = [
        asyncio.ensure_future(server.serve(sockets=[sock]))
        for server, (_, sock) in zip(servers, listeners, strict=True)
    ]
    # uvicorn only has a flag to say it started.
    while not all(s.started for s in servers) and not any(t.done() for t in serving):  # noqa: ASYNC110
        await asyncio.sleep(0.02)
    if all(s.started for s in servers):
        print(banner, flush=True)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({*serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    for server in servers:
        server.should_exit = True
    stopping.cancel()
    await asyncio.gather(*serving)
