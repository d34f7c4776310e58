"""Counters: ``GET /api/stats`` as JSON (store-wide, as the reference system's clients
read them) and ``GET /metrics`` for Prometheus (this process's own, ``iotstream.metrics``)."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from ..metrics import CONTENT_TYPE, State, exposition
from .dependencies import (
    CommandsDep,
    HealthSourceDep,
    HubDep,
    RatesDep,
    StartedAtDep,
    StoreDep,
)
from .health import observe
from .schemas import Rates, StatsReport

router = APIRouter()
metrics_router = APIRouter()
"""``GET /metrics``, which every role serves, as ``GET /api/health``."""


@router.get("/api/stats", response_model=StatsReport)
async def stats(
    store: StoreDep,
    rates: RatesDep,
    hub: HubDep,
    commands: CommandsDep,
    started_at: StartedAtDep,
) -> StatsReport:
    """Message counts (total, per device, raw topic and rejection reason), rates, clients."""
    counters = await store.counters()
    return StatsReport(
        messages=counters.total,
        readings=counters.readings,
        raw=counters.raw,
        rejected=counters.rejected,
        devices=len(counters.per_device),
        perDevice=counters.per_device,
        rawTopics=counters.per_topic,
        rejectedReasons=counters.per_reason,
        rates=Rates(
            messagesPerSecond=round(rates.current, 1),
            messagesPerSecond10s=round(rates.average, 1),
        ),
        websocketClients=len(hub.subscribers),
        framesSent=hub.frames,
        commandsSent=commands.sent,
        uptimeSeconds=round(time.time() - started_at, 3),
    )


@metrics_router.get("/metrics", response_class=PlainTextResponse)
async def metrics(source: HealthSourceDep) -> Response:
    """Prometheus text exposition of this process's metrics (per instance; the README's
    "Metrics, health and logs" lists them)."""
    seen = await observe(source)
    parts = seen.components
    state = State(
        components=parts,
        groups=seen.groups,
        # The parts as ``iotstream.server`` names them.
        mqtt_connected=parts["ingest"].ok if "ingest" in parts else None,
        store_up=parts["store"].ok if "store" in parts else None,
        websocket_clients=None if source.hub is None else len(source.hub.subscribers),
        devices=None if seen.devices is None else seen.devices.known,
        devices_silent=None if seen.devices is None else seen.devices.silent,
    )
    return Response(exposition(state), media_type=CONTENT_TYPE)
