"""``GET /api/health``: served by every role, with or without the rest of the API; and
``observe``, what it and ``GET /metrics`` read of the process."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from .. import __version__
from ..errors import StoreError
from ..health import Consuming, Health
from ..metrics import GroupLag
from ..store.base import Freshness
from .dependencies import HealthSource, HealthSourceDep
from .schemas import ComponentHealth, DeviceFreshness, HealthReport

router = APIRouter()


@dataclass(frozen=True, slots=True)
class Observation:
    """The process now: each component's health, each consumer group's lags, and (with the
    API) the devices known and silent, ``None`` while the store does not answer."""

    components: dict[str, Health]
    groups: list[GroupLag]
    devices: Freshness | None


async def observe(source: HealthSource) -> Observation:
    components = {name: part.health() for name, part in source.components.items()}
    consuming = [part for part in source.components.values() if isinstance(part, Consuming)]
    groups = list(await asyncio.gather(*(part.consumption.lag() for part in consuming)))
    devices = None
    if source.store is not None:
        with contextlib.suppress(StoreError):  # the store's component health says why
            devices = await source.store.freshness(time.time() - source.silent_after)
    return Observation(components, groups, devices)


@router.get("/api/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
async def health(source: HealthSourceDep, request: Request) -> JSONResponse:
    """Overall status and each component's; 503 when any component is down. With them the lags
    of the consumer groups in this process, and the devices known and silent. When
    credentials are required and the caller gave none, each component's detail (addresses,
    paths), the lags and the devices are left out: load balancers need the status only."""
    seen = await observe(source)
    ok = all(h.ok for h in seen.components.values())
    # ``authorize`` leaves no principal for a caller it could not identify.
    shown = getattr(request.state, "principal", True) is not None
    devices = seen.devices
    report = HealthReport(
        status="UP" if ok else "DOWN",
        uptimeSeconds=round(time.time() - source.started_at, 3),
        version=__version__,
        components={
            name: ComponentHealth(status="UP" if h.ok else "DOWN", detail=h.detail if shown else "")
            for name, h in seen.components.items()
        },
        pipelineLagSeconds={group.group: round(group.seconds, 3) for group in seen.groups},
        consumerLag={group.group: group.events for group in seen.groups},
        devices=None
        if devices is None or not shown
        else DeviceFreshness(
            known=devices.known, silent=devices.silent, silentAfterSeconds=source.silent_after
        ),
    )
    hidden = set() if shown else {"pipelineLagSeconds", "consumerLag", "devices"}
    return JSONResponse(report.model_dump(exclude=hidden), status_code=200 if ok else 503)
