"""What the HTTP API takes and answers (pydantic models), and its OpenAPI examples."""

from __future__ import annotations

from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from ..commands import MAX_COMMAND, PREDEFINED, command_topic
from ..models import SENT, Command, Rejected

ROBOT = {
    "deviceId": "robot1",
    "x": 123.45,
    "y": 67.89,
    "timestamp": 1691234567.0,
    "receivedAt": 1691234567.012,
}
DEVICE_EXAMPLE = {"application/json": {"example": ROBOT}}
ERROR: dict[str, Any] = {
    "description": "the reason",
    "content": {"application/json": {"example": {"detail": "..."}}},
}


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
    """The reference system's answer, with ``id`` the tracked command's
    (``GET /api/commands/{id}``)."""

    id: str
    deviceId: str
    command: str
    topic: str
    sentAt: float
    status: str = "accepted"

    @classmethod
    def of(cls, command: Command) -> Self:
        sent = [t.at for t in command.transitions if t.status == SENT]
        return cls(
            id=command.id,
            deviceId=command.device_id,
            command=command.payload,
            topic=command_topic(command.device_id),
            sentAt=sent[-1] if sent else command.created_at,
        )


class TrackedCommandRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"command": "goto", "args": [3.5, 2.0], "ttl": 30}, {"command": "slam"}]
        },
    )
    command: str = Field(
        description=f"{', '.join(PREDEFINED)} or a custom word (1-{MAX_COMMAND} printable "
        "characters); the device receives it and its args separated by spaces",
        min_length=1,
        max_length=MAX_COMMAND,
        strict=True,
    )
    args: list[StrictStr | StrictInt | StrictFloat] = Field(
        default_factory=list, max_length=32, description="words or numbers after the command"
    )
    ttl: StrictFloat | StrictInt | None = Field(
        default=None,
        gt=0,
        description="seconds the command may wait for its device (default --command-ttl, at "
        "most --command-max-ttl); it is never carried out later",
    )


CommandStatus = Literal[
    "queued", "sent", "delivered", "succeeded", "failed", "rejected", "expired", "canceled"
]


class CommandTransition(BaseModel):
    status: CommandStatus
    at: float


class CommandView(BaseModel):
    """A tracked command: its state, every transition, and how it ended."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "5f0c8e0f6a1b4f7e9d2c3b4a5f6e7d8c",
                    "deviceId": "robot1",
                    "command": "goto",
                    "args": [3.5, 2.0],
                    "payload": "goto 3.5 2.0",
                    "ttl": 60.0,
                    "status": "succeeded",
                    "delivery": "confirmed",
                    "closed": True,
                    "reason": "succeeded",
                    "message": "the device carried the command out",
                    "result": {"x": 3.5, "y": 2.0},
                    "attempts": 1,
                    "createdAt": 1691234567.0,
                    "expiresAt": 1691234627.0,
                    "closedAt": 1691234570.2,
                    "transitions": [
                        {"status": "queued", "at": 1691234567.0},
                        {"status": "sent", "at": 1691234567.01},
                        {"status": "delivered", "at": 1691234567.05},
                        {"status": "succeeded", "at": 1691234570.2},
                    ],
                    "idempotencyKey": None,
                }
            ]
        }
    )

    id: str
    deviceId: str
    command: str
    args: list[str | int | float]
    payload: str = Field(description="the text published to orin/{deviceId}/command")
    ttl: float
    status: CommandStatus
    delivery: Literal["confirmed", "unconfirmed"] | None = Field(
        description="confirmed once the device answered; unconfirmed when its TTL passed first"
    )
    closed: bool = Field(description="true once nothing more is expected of it")
    reason: str | None = Field(description="why it ended: a code, on every closed command")
    message: str | None
    result: Any = Field(description="what the device answered with its outcome")
    attempts: int = Field(description="times it was published")
    createdAt: float
    expiresAt: float
    closedAt: float | None
    transitions: list[CommandTransition]
    idempotencyKey: str | None

    @classmethod
    def of(cls, command: Command) -> Self:
        return cls.model_validate(command.to_json())


class ComponentHealth(BaseModel):
    status: str
    detail: str


class DeviceFreshness(BaseModel):
    """The devices the store knows, and how many of them are silent: their last reading is
    older than ``silentAfterSeconds`` (``--silent-after``)."""

    known: int
    silent: int
    silentAfterSeconds: float


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
                    "pipelineLagSeconds": {"processor": 0.004, "archiver": 0.6},
                    "consumerLag": {"processor": 0, "archiver": 1200},
                    "devices": {"known": 20, "silent": 1, "silentAfterSeconds": 60.0},
                }
            ]
        }
    )
    status: str
    uptimeSeconds: float
    version: str
    components: dict[str, ComponentHealth]
    pipelineLagSeconds: dict[str, float] = Field(
        default_factory=dict,
        description="per consumer group of this process: age in seconds of the oldest event "
        "it took from the bus and has not finished; 0 when idle (left out for a caller "
        "without credentials when they are required, as are consumerLag and devices)",
    )
    consumerLag: dict[str, int] = Field(
        default_factory=dict,
        description="per consumer group of this process: events on the bus it has not "
        "committed (Kafka: end offsets - committed offsets of its partitions)",
    )
    devices: DeviceFreshness | None = Field(
        default=None,
        description="devices known and silent (a process with the API only; left out for "
        "a caller without credentials when they are required)",
    )


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

    @classmethod
    def of(cls, rejected: Rejected) -> Self:
        """A rejected MQTT message as the API shows it: the kept payload bytes as text,
        undecodable bytes replaced."""
        return cls(
            topic=rejected.topic,
            reason=rejected.reason,
            detail=rejected.detail,
            size=rejected.size,
            payload=rejected.payload.decode("utf-8", "replace"),
            receivedAt=rejected.received_at,
        )


# --- analytics ----------------------------------------------------------------------------
# Times are epoch seconds (device time), distances metres, speeds metres per second.

_WINDOW: dict[str, Any] = {"from": 1764115200.0, "to": 1764165600.0}
_PARAMS: dict[str, Any] = {
    "startSpeed": 0.2,
    "stopSpeed": 0.1,
    "minStop": 10.0,
    "maxGap": 60.0,
    "smoothing": 2.0,
}


_PARAMS_TEXT = (
    "the motion parameters of the analysis; null when the answer comes from the tables "
    "`iotstream analyze` wrote (with its own)"
)


class Motion(BaseModel):
    """When a robot counts as moving (the parameters the analysis ran with)."""

    startSpeed: float
    stopSpeed: float
    minStop: float
    maxGap: float
    smoothing: float


class Trip(BaseModel):
    start: float
    end: float
    startX: float
    startY: float
    endX: float
    endY: float
    distance: float
    duration: float
    avgSpeed: float
    maxSpeed: float


class Stop(BaseModel):
    start: float
    end: float
    duration: float
    x: float
    y: float


class Summary(BaseModel):
    start: float
    """Device time of the first reading in the window."""
    end: float
    """Device time of the last reading in the window."""
    distance: float
    movingTime: float
    stoppedTime: float
    maxSpeed: float
    readings: int
    gaps: int


class AnalysisWindow(BaseModel):
    """What every analytics answer starts with: the window and where its numbers come from."""

    start: float = Field(serialization_alias="from")
    end: float = Field(serialization_alias="to")
    source: str = Field(
        description="`on-demand` (computed from the readings for this request) or `derived` "
        "(read from the tables `iotstream analyze` writes)"
    )


class DeviceTrips(AnalysisWindow):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deviceId": "robot3",
                    **_WINDOW,
                    "source": "on-demand",
                    "params": _PARAMS,
                    "trips": [
                        {
                            "start": 1764151200.0,
                            "end": 1764151260.5,
                            "startX": 1.0,
                            "startY": 2.0,
                            "endX": 25.5,
                            "endY": 2.0,
                            "distance": 24.5,
                            "duration": 60.5,
                            "avgSpeed": 0.405,
                            "maxSpeed": 0.52,
                        }
                    ],
                }
            ]
        },
    )
    deviceId: str
    params: Motion | None = Field(description=_PARAMS_TEXT)
    trips: list[Trip]


class DeviceStops(AnalysisWindow):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deviceId": "robot3",
                    **_WINDOW,
                    "source": "on-demand",
                    "params": _PARAMS,
                    "stops": [
                        {"start": 1764151260.5, "end": 1764151320.0, "duration": 59.5,
                         "x": 25.5, "y": 2.0}
                    ],
                }
            ]
        },
    )  # fmt: skip
    deviceId: str
    params: Motion | None = Field(description=_PARAMS_TEXT)
    stops: list[Stop]


class DeviceSummary(AnalysisWindow):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deviceId": "robot3",
                    **_WINDOW,
                    "source": "on-demand",
                    "params": _PARAMS,
                    "summary": {
                        "start": 1764115200.1,
                        "end": 1764165599.9,
                        "distance": 1520.5,
                        "movingTime": 3600.0,
                        "stoppedTime": 46000.0,
                        "maxSpeed": 1.2,
                        "readings": 250000,
                        "gaps": 1,
                    },
                }
            ]
        },
    )
    deviceId: str
    params: Motion | None = Field(description=_PARAMS_TEXT)
    summary: Summary | None = Field(description="null when the device has no reading in the window")


class HeatCell(BaseModel):
    i: int
    j: int
    readings: int
    dwell: float = Field(description="seconds")


class Heatmap(AnalysisWindow):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    **_WINDOW,
                    "source": "on-demand",
                    "devices": None,
                    "cell": 1.0,
                    "maxGap": 60.0,
                    "cells": [{"i": 3, "j": -1, "readings": 120, "dwell": 12.0}],
                }
            ]
        },
    )
    devices: list[str] | None
    cell: float = Field(description="metres: cell (i, j) covers i*cell <= x < (i+1)*cell, "
                        "j*cell <= y < (j+1)*cell")  # fmt: skip
    maxGap: float | None = Field(
        description="a reading's dwell is the time to the next, capped here; null when the "
        "answer comes from the tables `iotstream analyze` wrote"
    )
    cells: list[HeatCell]


class Position(BaseModel):
    timestamp: float
    x: float
    y: float


class Basis(Position):
    """The newest reading the prediction starts from, and how many recent readings it used."""

    readings: int


class PredictionError(BaseModel):
    horizon: float = Field(description="the evaluated horizon nearest the one asked for")
    ade: float = Field(description="average displacement error, metres")
    fde: float = Field(description="final displacement error, metres")
    samples: int
    source: str = Field(
        description="`prediction_eval` (the table `iotstream analyze` writes) or `on-demand` "
        "(evaluated on the device's recent history for this request)"
    )


class DevicePrediction(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "deviceId": "robot3",
                    "horizon": 2.0,
                    "model": "velocity",
                    "prediction": {"timestamp": 1764165602.0, "x": 13.3, "y": 3.25},
                    "basis": {"timestamp": 1764165600.0, "x": 12.5, "y": 3.25, "readings": 300},
                    "error": {"horizon": 2.0, "ade": 0.06, "fde": 0.11, "samples": 1800,
                              "source": "on-demand"},
                }
            ]
        }
    )  # fmt: skip
    deviceId: str
    horizon: float
    model: str | None = Field(description="the model that predicted; null without a prediction")
    prediction: Position | None = Field(
        description="where the device is predicted at `basis.timestamp + horizon`; null when "
        "it has no recent reading with a position"
    )
    basis: Basis | None
    error: PredictionError | None = Field(
        description="the model's evaluated error; null when there is too little history to "
        "evaluate it"
    )
