"""Counters: ``GET /api/stats`` as JSON and ``GET /metrics`` for Prometheus."""

from __future__ import annotations

import time

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from .dependencies import (
    CommandsDep,
    ComponentsDep,
    HubDep,
    RatesDep,
    StartedAtDep,
    StoreDep,
)
from .schemas import Rates, StatsReport

router = APIRouter()


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


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(store: StoreDep, hub: HubDep, components: ComponentsDep) -> str:
    """Prometheus text exposition of the main counters."""
    counters = await store.counters()
    lines = [
        "# TYPE iotstream_messages_total counter",
        f'iotstream_messages_total{{kind="reading"}} {counters.readings}',
        f'iotstream_messages_total{{kind="raw"}} {counters.raw}',
        f'iotstream_messages_total{{kind="rejected"}} {counters.rejected}',
        "# TYPE iotstream_rejected_total counter",
        *(f'iotstream_rejected_total{{reason="{r}"}} {n}' for r, n in counters.per_reason.items()),
        "# TYPE iotstream_devices gauge",
        f"iotstream_devices {len(counters.per_device)}",
        "# TYPE iotstream_websocket_clients gauge",
        f"iotstream_websocket_clients {len(hub.subscribers)}",
        "# TYPE iotstream_frames_total counter",
        f"iotstream_frames_total {hub.frames}",
        "# TYPE iotstream_component_up gauge",
        *(
            f'iotstream_component_up{{component="{name}"}} {int(part.health().ok)}'
            for name, part in components.items()
        ),
    ]
    return "\n".join(lines) + "\n"
