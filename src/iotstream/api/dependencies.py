"""What routes take through ``Depends``: the parts of the ``ApiContext`` the app was made
with (kept on ``app.state.context``, so routers are module-level objects) and device ids
read from the path.

A route asks for the part it uses by annotation, e.g. ``store: StoreDep``; the same works
for the WebSocket route, since every dependency reads the app from the ``HTTPConnection``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException
from starlette.requests import HTTPConnection

from ..auth import Authenticator
from ..commands import CommandService
from ..config import MetricsSettings
from ..errors import InvalidDeviceId
from ..health import HasHealth
from ..hub import Hub
from ..lake.base import Lake
from ..models import DeviceId
from ..rates import RateMeter
from ..store import Store

SILENT_AFTER: float = MetricsSettings.model_fields["silent_after"].default


@dataclass
class ApiContext:
    """What the API serves from; built and started by ``iotstream.server``."""

    store: Store
    hub: Hub
    commands: CommandService
    rates: RateMeter
    components: dict[str, HasHealth]
    started_at: float = field(default_factory=time.time)
    lake: Lake | None = None
    """The history lake; ``None`` with ``--lake off``."""
    auth: Authenticator | None = None
    """Who may call what; ``None`` when auth is off (``auth_required``): anyone may."""
    silent_after: float = SILENT_AFTER
    """Seconds after its last reading a device counts as silent."""


class HealthSource(Protocol):
    """What ``GET /api/health`` and ``GET /metrics`` read: an ``ApiContext``, or a role's
    ``RoleHealth``."""

    @property
    def components(self) -> dict[str, HasHealth]: ...

    @property
    def started_at(self) -> float: ...

    @property
    def store(self) -> Store | None:
        """The store whose devices are counted (only a process with the API has one here)."""

    @property
    def hub(self) -> Hub | None: ...

    @property
    def silent_after(self) -> float: ...


@dataclass
class RoleHealth:
    """The context of a role without the API (bridge, processor, archiver): its components
    only."""

    components: dict[str, HasHealth]
    started_at: float = field(default_factory=time.time)
    store: None = None
    hub: None = None
    silent_after: float = SILENT_AFTER


def health_source(connection: HTTPConnection) -> HealthSource:
    context: HealthSource = connection.app.state.context
    return context


def api_context(connection: HTTPConnection) -> ApiContext:
    context: ApiContext = connection.app.state.context
    return context


Context = Annotated[ApiContext, Depends(api_context)]


def _store(context: Context) -> Store:
    return context.store


def _hub(context: Context) -> Hub:
    return context.hub


def _commands(context: Context) -> CommandService:
    return context.commands


def _rates(context: Context) -> RateMeter:
    return context.rates


def _started_at(context: Context) -> float:
    return context.started_at


def _lake(context: Context) -> Lake:
    if context.lake is None:
        raise HTTPException(503, "the lake is off (--lake off)")
    return context.lake


HealthSourceDep = Annotated[HealthSource, Depends(health_source)]
StoreDep = Annotated[Store, Depends(_store)]
HubDep = Annotated[Hub, Depends(_hub)]
CommandsDep = Annotated[CommandService, Depends(_commands)]
RatesDep = Annotated[RateMeter, Depends(_rates)]
StartedAtDep = Annotated[float, Depends(_started_at)]
LakeDep = Annotated[Lake, Depends(_lake)]
"""The history lake; 503 when the process runs with ``--lake off``."""


def unknown_device(device_id: str) -> HTTPException:
    return HTTPException(404, f"unknown device {device_id!r}")


def device_id_in_path(
    invalid: Callable[[str, InvalidDeviceId], HTTPException],
) -> Callable[[str], DeviceId]:
    """A dependency reading the ``{device_id}`` path parameter as a ``DeviceId``; a text that
    cannot name a device answers ``invalid(text, error)``. The parameter stays a plain string
    for FastAPI, so such a text never becomes a 422."""

    def device_id(device_id: str) -> DeviceId:
        try:
            return DeviceId.parse(device_id)
        except InvalidDeviceId as exc:
            raise invalid(device_id, exc) from exc

    return device_id


DeviceIdPath = Annotated[
    DeviceId, Depends(device_id_in_path(lambda _, exc: HTTPException(400, str(exc))))
]
"""``{device_id}`` of a device to act on: 400 with the reason when it cannot name one."""

KnownDeviceIdPath = Annotated[
    DeviceId, Depends(device_id_in_path(lambda text, _: unknown_device(text)))
]
"""``{device_id}`` of a device to look up: a text that cannot name a device names no known
one, so it answers 404 like any id no device reported."""
