"""Who may call what: ``authorize``, the one dependency of every route and of the WebSocket
handshake (``ROUTE_DEPENDENCIES``), and how the OpenAPI document shows it.

Each router is included with the smallest role that may use it (``ROUTERS`` in
``iotstream.api``); ``authorize`` looks the role up by the endpoint the request reached, so
a route is guarded by where it is included, not by code in the route. Credentials:

- ``Authorization: Bearer <token>``: a token of ``POST /api/auth/token`` or, with
  ``--oidc-issuer``, of the OpenID Connect provider;
- ``X-API-Key: <key>``;
- on the WebSocket, for browsers (which cannot set headers), the token as the subprotocol
  ``bearer.<token>``, offered beside ``iotstream``, which the server answers with.

No credentials or bad ones answer 401 with ``WWW-Authenticate``; too small a role 403.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.requests import HTTPConnection
from starlette.routing import BaseRoute

from ..auth import ANONYMOUS, Authenticator, Principal, Role
from ..errors import AuthError, InvalidCredentials

SUBPROTOCOL = "iotstream"
BEARER_SUBPROTOCOL = "bearer."
API_KEY_HEADER = "x-api-key"
CHALLENGE = 'Bearer realm="iotstream"'

RoleTable = Mapping[Callable[..., Any], Role | None]
"""The role each endpoint needs (``None``: open to anyone), by endpoint function."""


def _unauthorized(reason: str, error: str | None = None) -> HTTPException:
    challenge = CHALLENGE if error is None else f'{CHALLENGE}, error="{error}"'
    return HTTPException(401, reason, headers={"WWW-Authenticate": challenge})


def offered_subprotocols(connection: HTTPConnection) -> list[str]:
    header = connection.headers.get("sec-websocket-protocol", "")
    return [part.strip() for part in header.split(",") if part.strip()]


def subprotocol(connection: HTTPConnection) -> str | None:
    """The subprotocol to answer a WebSocket handshake with: ``iotstream`` when offered
    (a browser fails a handshake whose offer goes unanswered), never the token."""
    offered = offered_subprotocols(connection)
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    return next((p for p in offered if not p.startswith(BEARER_SUBPROTOCOL)), None)


def _bearer_token(connection: HTTPConnection) -> str | None:
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    if connection.scope["type"] == "websocket":
        for offered in offered_subprotocols(connection):
            if offered.startswith(BEARER_SUBPROTOCOL):
                return offered.removeprefix(BEARER_SUBPROTOCOL)
    return None


def _check_origin(connection: HTTPConnection) -> None:
    """A browser's WebSocket carries its page's Origin; CORS does not cover WebSockets, so
    the handshake checks it against ``--cors-origins`` itself."""
    origin = connection.headers.get("origin")
    allowed: list[str] = getattr(connection.app.state, "cors_origins", ["*"])
    if origin is not None and "*" not in allowed and origin not in allowed:
        raise HTTPException(403, "origin not allowed")


async def identify(auth: Authenticator, connection: HTTPConnection) -> Principal:
    """Who sent the request; 401 without valid credentials."""
    token = _bearer_token(connection)
    key = connection.headers.get(API_KEY_HEADER)
    try:
        if token is not None:
            return await auth.bearer(token)
        if key:
            return await auth.api_key(key)
    except InvalidCredentials as exc:
        raise _unauthorized(str(exc), "invalid_token" if token is not None else None) from exc
    except AuthError as exc:
        raise HTTPException(503, "credentials cannot be checked now") from exc
    raise _unauthorized("credentials needed: a bearer token or an X-API-Key")


async def authorize(connection: HTTPConnection) -> Principal | None:
    """The caller, allowed to use the route it reached; 401/403 otherwise. The principal is
    also kept as ``connection.state.principal`` (the WebSocket closes when it expires). On an
    open route with credentials required it is ``None`` unless the caller gave valid ones."""
    if connection.scope["type"] == "websocket":
        _check_origin(connection)
    roles: RoleTable = getattr(connection.app.state, "roles", {})
    # An endpoint missing from the table is a route someone forgot to place: admins only.
    needed = roles.get(connection.scope.get("endpoint"), Role.ADMIN)  # type: ignore[arg-type]
    auth: Authenticator | None = getattr(connection.app.state.context, "auth", None)
    principal: Principal | None = ANONYMOUS
    if auth is not None and auth.required:
        if needed is None:
            try:
                principal = await identify(auth, connection)
            except HTTPException:
                principal = None
        else:
            principal = await identify(auth, connection)
            if not principal.role.covers(needed):
                raise HTTPException(
                    403, f"this needs the {needed} role; {principal.name} is a {principal.role}"
                )
    connection.state.principal = principal
    return principal


@dataclass(frozen=True, slots=True)
class ByMethod:
    """The roles of a router whose reads (GET) and writes need different ones."""

    read: Role
    write: Role

    def of(self, route: BaseRoute) -> Role:
        reads = isinstance(route, APIWebSocketRoute) or (
            isinstance(route, APIRoute) and (route.methods or set()) <= {"GET", "HEAD"}
        )
        return self.read if reads else self.write


Needs = Role | ByMethod | None
"""What a router needs: one role, a role for reads and one for writes, or nothing (open)."""


def role_table(routes: list[BaseRoute], needs: Needs) -> dict[Callable[..., Any], Role | None]:
    """The role for the endpoint of each of ``routes`` (HTTP and WebSocket)."""
    return {
        route.endpoint: needs.of(route) if isinstance(needs, ByMethod) else needs
        for route in routes
        if isinstance(route, APIRoute | APIWebSocketRoute)
    }


def operations(routes: list[BaseRoute]) -> list[tuple[str, str, Callable[..., Any]]]:
    """``(path, method, endpoint)`` of each HTTP operation of ``routes``, as OpenAPI keys
    them (lower-case method)."""
    return [
        (route.path_format, method.lower(), route.endpoint)
        for route in routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    ]


ERROR_SCHEMA = {
    "type": "object",
    "properties": {"detail": {"type": "string"}},
    "required": ["detail"],
}
SECURITY_SCHEMES: dict[str, Any] = {
    "OAuth2Password": {
        "type": "oauth2",
        "description": "a token from POST /api/auth/token, sent as Authorization: Bearer",
        "flows": {"password": {"tokenUrl": "/api/auth/token", "scopes": {}}},
    },
    "APIKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "a key from `iotstream apikeys add`",
    },
}


def document_security(
    app: FastAPI,
    roles: RoleTable,
    endpoints: dict[tuple[str, str], Callable[..., Any]],
    oidc_issuer: str | None,
) -> None:
    """Show in ``/openapi.json`` (and so in ``/docs``) which credentials each operation
    takes, the role it needs, and its 401 and 403 answers."""
    generate = app.openapi
    schemes = dict(SECURITY_SCHEMES)
    if oidc_issuer is not None:
        schemes["OpenIDConnect"] = {
            "type": "openIdConnect",
            "openIdConnectUrl": oidc_issuer.rstrip("/") + "/.well-known/openid-configuration",
        }
    security: list[dict[str, list[str]]] = [{name: []} for name in schemes]

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        schema.setdefault("components", {})["securitySchemes"] = schemes
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                role = roles.get(endpoints.get((path, method)), Role.ADMIN)  # type: ignore[arg-type]
                if role is None:
                    continue
                operation["security"] = security
                operation["description"] = (
                    operation.get("description", "") + f"\n\nNeeds the **{role}** role."
                ).strip()
                answers = operation.setdefault("responses", {})
                content = {"application/json": {"schema": ERROR_SCHEMA}}
                answers.setdefault(
                    "401", {"description": "no valid credentials", "content": content}
                )
                answers.setdefault(
                    "403", {"description": f"needs the {role} role", "content": content}
                )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
