"""The HTTP API and the ``/coordinates`` WebSocket (FastAPI)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from . import __version__
from .commands import PREDEFINED, CommandService
from .errors import CommandError, InvalidCommand
from .health import HasHealth
from .hub import Hub, View, encode
from .models import rejected_as_dict
from .stats import RateMeter
from .store import Store

DASHBOARD = Path(__file__).parent / "dashboard"
ROBOT = {
    "deviceId": "robot1",
    "x": 123.45,
    "y": 67.89,
    "timestamp": 1691234567.0,
    "receivedAt": 1691234567.012,
}


@dataclass
class Services:
    """What the API serves from; built and started by ``iotstream.server``."""

    store: Store
    hub: Hub
    commands: CommandService
    rates: RateMeter
    components: dict[str, HasHealth]
    started_at: float = field(default_factory=time.time)


class CommandRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"command": "tracking"}, {"command": "goto 3.5 2.0"}]},
    )
    command: str = Field(
        description=f"{', '.join(PREDEFINED)} or a custom string (1-256 printable characters)",
        min_length=1,
        max_length=256,
        strict=True,
    )


class CommandAccepted(BaseModel):
    id: str
    deviceId: str
    command: str
    topic: str
    sentAt: float
    status: str = "accepted"


class ComponentHealth(BaseModel):
    status: str
    detail: str


class HealthReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "UP",
                    "uptimeSeconds": 12.5,
                    "version": "0.1.0",
                    "components": {
                        "broker": {"status": "UP", "detail": "mosquitto pid 42 on 127.0.0.1:3123"}
                    },
                }
            ]
        }
    )
    status: str
    uptimeSeconds: float
    version: str
    components: dict[str, ComponentHealth]


class Rates(BaseModel):
    messagesPerSecond: float
    messagesPerSecond10s: float


class StatsReport(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "messages": 3,
                    "readings": 2,
                    "raw": 1,
                    "rejected": 0,
                    "devices": 1,
                    "perDevice": {"robot1": 2},
                    "rawTopics": {"test/hello": 1},
                    "rejectedReasons": {},
                    "rates": {"messagesPerSecond": 0.0, "messagesPerSecond10s": 0.3},
                    "websocketClients": 1,
                    "framesSent": 2,
                    "commandsSent": 0,
                    "uptimeSeconds": 10.2,
                }
            ]
        }
    )
    messages: int
    readings: int
    raw: int
    rejected: int
    devices: int
    perDevice: dict[str, int]
    rawTopics: dict[str, int]
    rejectedReasons: dict[str, int]
    rates: Rates
    websocketClients: int
    framesSent: int
    commandsSent: int
    uptimeSeconds: float


class DeadLetter(BaseModel):
    topic: str
    reason: str
    detail: str
    size: int
    payload: str
    receivedAt: float


DEVICE_EXAMPLE = {"application/json": {"example": ROBOT}}
ERROR = {
    "description": "the reason",
    "content": {"application/json": {"example": {"detail": "..."}}},
}


def create_app(services: Services, cors_origins: list[str]) -> FastAPI:
    app = FastAPI(
        title="iotstream",
        version=__version__,
        description="Real-time coordinates of a robot fleet: REST, the `/coordinates` "
        "WebSocket, and commands to devices.",
    )
    app.add_middleware(
        CORSMiddleware, allow_origins=cors_origins, allow_methods=["*"], allow_headers=["*"]
    )

    @app.get("/api/health", response_model=HealthReport, responses={503: {"model": HealthReport}})
    async def health() -> JSONResponse:
        """Overall status and each component's; 503 when any component is down."""
        components = {name: part.health() for name, part in services.components.items()}
        ok = all(h.ok for h in components.values())
        body = {
            "status": "UP" if ok else "DOWN",
            "uptimeSeconds": round(time.time() - services.started_at, 3),
            "version": __version__,
            "components": {name: h.as_dict() for name, h in components.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/api/stats", response_model=StatsReport)
    async def stats() -> dict[str, Any]:
        """Message counts (total, per device, raw topic and rejection reason), rates, clients."""
        counters = await services.store.counters()
        return {
            "messages": counters.total,
            "readings": counters.readings,
            "raw": counters.raw,
            "rejected": counters.rejected,
            "devices": len(counters.per_device),
            "perDevice": counters.per_device,
            "rawTopics": counters.per_topic,
            "rejectedReasons": counters.per_reason,
            "rates": {
                "messagesPerSecond": round(services.rates.current, 1),
                "messagesPerSecond10s": round(services.rates.average, 1),
            },
            "websocketClients": len(services.hub.subscribers),
            "framesSent": services.hub.frames,
            "commandsSent": services.commands.sent,
            "uptimeSeconds": round(time.time() - services.started_at, 3),
        }

    @app.get(
        "/api/coordinates",
        responses={200: {"content": {"application/json": {"example": [ROBOT]}}}},
    )
    async def coordinates() -> list[dict[str, Any]]:
        """The latest state of every device."""
        return await services.store.devices()

    @app.get(
        "/api/devices/{device_id}",
        responses={200: {"content": DEVICE_EXAMPLE}, 404: ERROR},
    )
    async def device(device_id: str) -> dict[str, Any]:
        """The latest state of one device."""
        state = await services.store.device(device_id)
        if state is None:
            raise HTTPException(404, f"unknown device {device_id!r}")
        return state

    @app.get("/api/deadletters", response_model=list[DeadLetter])
    async def deadletters(
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        """The newest rejected MQTT messages with the reason, newest first."""
        return [rejected_as_dict(item) for item in await services.store.deadletters(limit)]

    @app.post(
        "/api/commands/{device_id}",
        status_code=202,
        response_model=CommandAccepted,
        responses={400: ERROR, 422: ERROR, 503: ERROR},
    )
    async def command(device_id: str, request: CommandRequest) -> dict[str, Any]:
        """Publish the command to ``orin/{device_id}/command`` (QoS 1)."""
        try:
            receipt = services.commands.send(device_id, request.command)
        except InvalidCommand as exc:
            raise HTTPException(400, str(exc)) from exc
        except CommandError as exc:
            raise HTTPException(503, str(exc)) from exc
        return {
            "id": receipt.id,
            "deviceId": receipt.device_id,
            "command": receipt.command,
            "topic": receipt.topic,
            "sentAt": receipt.sent_at,
        }

    @app.get("/swagger-ui.html", include_in_schema=False)
    async def swagger_ui() -> RedirectResponse:
        return RedirectResponse("/docs")

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        """Prometheus text exposition of the main counters."""
        counters = await services.store.counters()
        lines = [
            "# TYPE iotstream_messages_total counter",
            f'iotstream_messages_total{{kind="reading"}} {counters.readings}',
            f'iotstream_messages_total{{kind="raw"}} {counters.raw}',
            f'iotstream_messages_total{{kind="rejected"}} {counters.rejected}',
            "# TYPE iotstream_rejected_total counter",
            *(
                f'iotstream_rejected_total{{reason="{r}"}} {n}'
                for r, n in counters.per_reason.items()
            ),
            "# TYPE iotstream_devices gauge",
            f"iotstream_devices {len(counters.per_device)}",
            "# TYPE iotstream_websocket_clients gauge",
            f"iotstream_websocket_clients {len(services.hub.subscribers)}",
            "# TYPE iotstream_frames_total counter",
            f"iotstream_frames_total {services.hub.frames}",
            "# TYPE iotstream_component_up gauge",
            *(
                f'iotstream_component_up{{component="{name}"}} {int(part.health().ok)}'
                for name, part in services.components.items()
            ),
        ]
        return "\n".join(lines) + "\n"

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        """The live dashboard."""
        return FileResponse(DASHBOARD / "index.html")

    @app.websocket("/coordinates")
    async def coordinates_ws(
        websocket: WebSocket,
        since: int | None = None,
        devices: str | None = None,
        rect: str | None = None,
        epoch: str | None = None,
    ) -> None:
        """Snapshot, then coalesced updates. ``?since=seq&epoch=e`` resumes after that frame;
        ``?devices=a,b`` or ``?rect=x_min,y_min,x_max,y_max`` narrow what is sent."""
        await websocket.accept()
        try:
            view = View.parse(devices, rect)
        except ValueError as exc:
            await websocket.send_text(encode({"type": "error", "reason": str(exc)}))
            await websocket.close(code=1008, reason=str(exc)[:120])
            return
        with contextlib.suppress(WebSocketDisconnect):
            await services.hub.serve(
                websocket.send_text, websocket.receive_text, since, view, epoch
            )

    app.mount("/dashboard", StaticFiles(directory=DASHBOARD), name="dashboard")
    return app
