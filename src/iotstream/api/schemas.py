"""What the HTTP API takes and answers (pydantic models), and its OpenAPI examples."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field

from ..commands import PREDEFINED, CommandReceipt
from ..models import Rejected

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
    id: str
    deviceId: str
    command: str
    topic: str
    sentAt: float
    status: str = "accepted"

    @classmethod
    def of(cls, receipt: CommandReceipt) -> Self:
        return cls(
            id=receipt.id,
            deviceId=receipt.device_id,
            command=receipt.command,
            topic=receipt.topic,
            sentAt=receipt.sent_at,
        )


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
