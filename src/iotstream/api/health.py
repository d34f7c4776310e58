"""``GET /api/health``: served by every role, with or without the rest of the API."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .. import __version__
from .dependencies import HealthSourceDep
from .schemas import ComponentHealth, HealthReport

router = APIRouter()


@router.get("/api/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
async def health(source: HealthSourceDep, request: Request) -> JSONResponse:
    """Overall status and each component's; 503 when any component is down. When credentials
    are required and the caller gave none, each component's detail (addresses, paths) is left
    out: load balancers need the status only."""
    components = {name: part.health() for name, part in source.components.items()}
    ok = all(h.ok for h in components.values())
    # ``authorize`` leaves no principal for a caller it could not identify.
    shown = getattr(request.state, "principal", True) is not None
    report = HealthReport(
        status="UP" if ok else "DOWN",
        uptimeSeconds=round(time.time() - source.started_at, 3),
        version=__version__,
        components={
            name: ComponentHealth(status="UP" if h.ok else "DOWN", detail=h.detail if shown else "")
            for name, h in components.items()
        },
    )
    return JSONResponse(report.model_dump(), status_code=200 if ok else 503)
