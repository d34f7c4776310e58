"""``POST /api/commands/{device_id}``: a command to one device, over MQTT."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException

from ..errors import CommandError, InvalidCommand
from .dependencies import CommandsDep, DeviceIdPath
from .schemas import ERROR, CommandAccepted, CommandRequest

router = APIRouter()


@router.post(
    "/api/commands/{device_id}",
    status_code=202,
    response_model=CommandAccepted,
    responses={400: ERROR, 422: ERROR, 503: ERROR},
)
async def command(
    device_id: DeviceIdPath, request: CommandRequest, commands: CommandsDep
) -> CommandAccepted:
    """Publish the command to ``orin/{device_id}/command`` (QoS 1)."""
    try:
        receipt = commands.send(device_id, request.command)
    except InvalidCommand as exc:
        raise HTTPException(400, str(exc)) from exc
    except CommandError as exc:
        raise HTTPException(503, str(exc)) from exc
    return CommandAccepted.of(receipt)
