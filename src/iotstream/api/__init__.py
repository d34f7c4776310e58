"""The HTTP API and the ``/coordinates`` WebSocket (FastAPI).

One router per concern, each route taking what it needs through ``dependencies``:

- ``health``     ``GET /api/health`` (every role serves it, see ``create_health_app``)
- ``stats``      ``GET /api/stats``, ``GET /metrics``
- ``devices``    ``GET /api/coordinates``, ``/api/devices/{device_id}``, ``/api/deadletters``
- ``commands``   ``POST /api/commands/{device_id}``
- ``history``    ``GET /api/devices/{device_id}/history``, ``/api/history``, ``/api/raw`` (the lake)
- ``analytics``  ``GET /api/devices/{device_id}/trips``, ``/stops``, ``/summary``,
                 ``/prediction``, ``/api/analytics/heatmap`` (analyses of the lake)
- ``websocket``  ``/coordinates``
- ``dashboard``  ``GET /``, the files under ``/dashboard``, ``GET /swagger-ui.html``
- ``schemas``    the request and response models and their OpenAPI examples
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, FastAPI, params
from fastapi.middleware.cors import CORSMiddleware

from .. import __version__
from ..health import HasHealth
from . import analytics, commands, dashboard, devices, health, history, stats, websocket
from .dependencies import ApiContext, RoleHealth

__all__ = ["ApiContext", "create_app", "create_health_app"]

ROUTERS: tuple[APIRouter, ...] = (
    health.router,
    stats.router,
    devices.router,
    commands.router,
    history.router,
    analytics.router,
    websocket.router,
    dashboard.router,
)

# The one place for what every route and the WebSocket handshake go through; empty today.
# Authentication will be one entry here. The docs (/docs, /openapi.json) and the static
# files under /dashboard are not our routes and stay outside it.
ROUTE_DEPENDENCIES: Sequence[params.Depends] = ()


def create_app(context: ApiContext, cors_origins: list[str]) -> FastAPI:
    app = FastAPI(
        title="iotstream",
        version=__version__,
        description="Real-time coordinates of a robot fleet: REST, the `/coordinates` "
        "WebSocket, and commands to devices.",
    )
    app.add_middleware(
        CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"], allow_headers=["*"]
    )
    app.state.context = context
    for router in ROUTERS:
        app.include_router(router, dependencies=ROUTE_DEPENDENCIES)
    # On the app, not in the dashboard router: older FastAPI releases in our supported range
    # drop a router's mounts when including it.
    app.mount("/dashboard", dashboard.files(), name="dashboard")
    return app


def create_health_app(components: dict[str, HasHealth]) -> FastAPI:
    """For roles without the API (bridge, processor): serves GET /api/health only, with the
    same body and 200/503 as the full app."""
    app = FastAPI(
        title="iotstream",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.context = RoleHealth(components)
    app.include_router(health.router, dependencies=ROUTE_DEPENDENCIES)
    return app
