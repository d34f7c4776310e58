"""``GET /api/health``: served by every role, with or without the rest of the API."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from .. import __version__
from .dependencies import HealthSourceDep
from .schemas import ComponentHealth, HealthReport

router = APIRouter()


@router.get("/api/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
async def health(source: HealthSourceDep) -> JSONResponse:
    """Overall status and each component's; 503 when any component is down."""
    components = {name: part.health() for name, part in source.components.items()}
    ok = all(h.ok for h in components.values())
    report = HealthReport(
        status="UP" if ok else "DOWN",
        uptimeSeconds=round(time.time() - source.started_at, 3),
        version=__version__,
        components={
            name: ComponentHealth.model_validate(h.as_dict()) for name, h in components.items()
        },
    )
    return JSONResponse(report.model_dump(), status_code=200 if ok else 503)
