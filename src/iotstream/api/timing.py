"""How long each HTTP request took, for ``iotstream_http_request_duration_seconds``.

The ``route`` label is the template of the route that answered (``/api/devices/{device_id}``),
``<mount>/{path}`` for files under a mount, or ``unmatched``: never the path itself, whose
values (device ids, anything a client makes up) have no bound.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..metrics import request_done

UNMATCHED = "unmatched"
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""Methods that are labels as they are; any other a client sends is ``other``, so clients
cannot make series without bound."""


def route_of(scope: Scope, root_path: str) -> str:
    """The template of the route the router put in ``scope``; ``root_path`` is the scope's
    before routing (a mount appends its prefix to it)."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(template, str):
        return template
    mounted: str = scope.get("root_path", root_path)
    if mounted != root_path:
        return mounted[len(root_path) :] + "/{path}"
    return UNMATCHED


class RequestTiming:
    """ASGI middleware: observes every HTTP request's duration by method, route and status
    (500 when the app raised before answering). WebSocket sessions are left out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root_path = scope.get("root_path", "")
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            route = route_of(scope, root_path)
            request_done(method, route, status, time.perf_counter() - started)
