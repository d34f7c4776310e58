"""The HTTP API and the ``/coordinates`` WebSocket (FastAPI).

One router per concern, each route taking what it needs through ``dependencies``:

- ``health``     ``GET /api/health`` (every role serves it, see ``create_health_app``)
- ``stats``      ``GET /api/stats``, ``GET /metrics`` (every role serves the latter too)
- ``devices``    ``GET /api/coordinates``, ``/api/devices/{device_id}``, ``/api/deadletters``
- ``commands``   ``POST /api/commands/{device_id}``
- ``history``    ``GET /api/devices/{device_id}/history``, ``/api/history``, ``/api/raw`` (the lake)
- ``analytics``  ``GET /api/devices/{device_id}/trips``, ``/stops``, ``/summary``,
                 ``/prediction``, ``/api/analytics/heatmap`` (analyses of the lake)
- ``websocket``  ``/coordinates``
- ``dashboard``  ``GET /``, the files under ``/dashboard``, ``GET /swagger-ui.html``
- ``auth``       ``POST /api/auth/token``, ``/.well-known/jwks.json``, ``/api/auth/me``,
                 ``/api/users``, ``/api/apikeys`` (only when credentials are required)
- ``security``   ``authorize``: who may call what, and how ``/openapi.json`` shows it
- ``limits``     bounds on request bodies, query strings and WebSocket messages
- ``timing``     request durations for ``iotstream_http_request_duration_seconds``
- ``schemas``    the request and response models and their OpenAPI examples
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request, params
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..auth import Role
from ..errors import AuthError
from ..health import HasHealth
from . import auth, commands, dashboard, devices, health, stats, websocket
from .dependencies import ApiContext, HealthSource, RoleHealth
from .limits import RequestLimits
from .security import ByMethod, Needs, authorize, document_security, operations, role_table
from .timing import RequestTiming

__all__ = ["AUTH_ROUTERS", "ROUTERS", "ApiContext", "create_app", "create_health_app"]


def _routers() -> tuple[tuple[APIRouter, Needs], ...]:
    """Every router with the smallest role that may use it; None: open to anyone; ByMethod:
    one role for its GETs, another for the rest. With auth off (``ApiContext.auth`` is None)
    every route is open, as on loopback before there was auth.

    The lake's routers are imported here, not with the package: they bring pyarrow, DuckDB
    and numba (170 MB and half a second), which a role serving only ``create_health_app``
    (the bridge, the processor, the archiver) does not need."""
    from . import analytics, history

    return (
        (health.router, None),
        (stats.router, Role.VIEWER),
        (stats.metrics_router, Role.VIEWER),
        (devices.router, Role.VIEWER),
        (commands.router, ByMethod(read=Role.VIEWER, write=Role.OPERATOR)),
        (history.router, Role.VIEWER),
        (analytics.router, Role.VIEWER),
        (websocket.router, Role.VIEWER),
        (dashboard.router, None),
    )


def __getattr__(name: str) -> Any:
    if name == "ROUTERS":
        return _routers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Logging in, and the admin's users and API keys: only when credentials are required.
AUTH_ROUTERS: tuple[tuple[APIRouter, Needs], ...] = (
    (auth.router, None),
    (auth.session_router, Role.VIEWER),
    (auth.admin_router, Role.ADMIN),
)

# The one place for what every route and the WebSocket handshake go through: ``authorize``
# checks the caller against the role its router was included with (``ROUTERS``). The docs
# (/docs, /openapi.json) and the static files under /dashboard are not our routes and stay
# outside it; the dashboard asks for credentials itself when the API answers 401.
ROUTE_DEPENDENCIES: Sequence[params.Depends] = (Depends(authorize),)


async def _accounts_down(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "credentials cannot be checked now"}, status_code=503)


async def _invalid_request(request: Request, exc: Exception) -> Response:
    # As FastAPI's own answer, but ASCII-escaped: the errors echo the input, and a lone
    # surrogate in it (valid JSON, not valid UTF-8) would turn the 422 into a 500.
    assert isinstance(exc, RequestValidationError)
    body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
    return Response(body, status_code=422, media_type="application/json")


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # The trace goes to the log; the client learns only that it was not its fault.
    return JSONResponse({"detail": "internal error"}, status_code=500)


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
    app.add_middleware(RequestLimits)
    app.add_middleware(RequestTiming)  # the outermost: it times the others' answers too
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(AuthError, _accounts_down)
    app.add_exception_handler(Exception, _internal_error)
    app.state.context = context
    app.state.cors_origins = cors_origins
    routers = _routers() if context.auth is None else (*_routers(), *AUTH_ROUTERS)
    roles: dict[Callable[..., Any], Role | None] = {}
    endpoints: dict[tuple[str, str], Callable[..., Any]] = {}
    for router, role in routers:
        app.include_router(router, dependencies=ROUTE_DEPENDENCIES)
        roles.update(role_table(router.routes, role))
        endpoints.update(((path, method), end) for path, method, end in operations(router.routes))
    app.state.roles = roles
    if context.auth is not None:
        oidc = context.auth.oidc
        document_security(app, roles, endpoints, None if oidc is None else oidc.issuer)
    # On the app, not in the dashboard router: older FastAPI releases in our supported range
    # drop a router's mounts when including it.
    app.mount("/dashboard", dashboard.files(), name="dashboard")
    return app


HEALTH_ROUTERS = (health.router, stats.metrics_router)
"""What the listener of ``--metrics-port`` serves, open to anyone (Prometheus, load
balancers)."""


def create_health_app(
    components: dict[str, HasHealth], context: HealthSource | None = None
) -> FastAPI:
    """For roles without the API (bridge, processor, archiver): serves GET /api/health, with
    the same body and 200/503 as the full app, and GET /metrics. ``context``: the API's, when
    the process also serves it, so both listeners show the same."""
    app = FastAPI(
        title="iotstream",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(RequestTiming)
    app.state.context = RoleHealth(components) if context is None else context
    app.state.roles = role_table([r for router in HEALTH_ROUTERS for r in router.routes], None)
    for router in HEALTH_ROUTERS:
        app.include_router(router, dependencies=ROUTE_DEPENDENCIES)
    return app
