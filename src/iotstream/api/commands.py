"""Commands to devices, tracked to their end (``iotstream.commands``):

- ``POST /api/devices/{device_id}/commands``: a new command (``Idempotency-Key`` makes a
  retried request return the command the first one made)
- ``GET /api/commands/{command_id}``, ``GET /api/devices/{device_id}/commands?status=``
- ``DELETE /api/commands/{command_id}``: cancel it while queued or sent
- ``POST /api/commands/{device_id}``: the reference system's route, a tracked command too
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query

from ..errors import CommandError, IdempotencyConflict, InvalidCommand, StoreError
from ..models import Command
from .dependencies import CommandsDep, DeviceIdPath, KnownDeviceIdPath, StoreDep
from .schemas import (
    ERROR,
    CommandAccepted,
    CommandRequest,
    CommandStatus,
    CommandView,
    TrackedCommandRequest,
)

router = APIRouter()

MAX_IDEMPOTENCY_KEY = 255


def _refused(exc: CommandError | StoreError) -> HTTPException:
    if isinstance(exc, InvalidCommand):
        return HTTPException(400, str(exc))
    if isinstance(exc, IdempotencyConflict):
        return HTTPException(422, str(exc))
    return HTTPException(503, str(exc))


def _unknown(command_id: str) -> HTTPException:
    return HTTPException(404, f"unknown command {command_id!r}")


@router.post(
    "/api/commands/{device_id}",
    status_code=202,
    response_model=CommandAccepted,
    responses={400: ERROR, 422: ERROR, 503: ERROR},
)
async def command(
    device_id: DeviceIdPath, request: CommandRequest, commands: CommandsDep
) -> CommandAccepted:
    """Publish the command to ``orin/{device_id}/command`` (QoS 1), tracked like any other:
    ``id`` is its id for ``GET /api/commands/{id}``."""
    try:
        made = await commands.submit(device_id, request.command)
    except (CommandError, StoreError) as exc:
        raise _refused(exc) from exc
    return CommandAccepted.of(made)


@router.post(
    "/api/devices/{device_id}/commands",
    status_code=202,
    response_model=CommandView,
    responses={400: ERROR, 422: ERROR, 503: ERROR},
)
async def create_command(
    device_id: DeviceIdPath,
    request: TrackedCommandRequest,
    commands: CommandsDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=MAX_IDEMPOTENCY_KEY,
            description="the same key with the same body returns the command the first "
            "request made; with another body it is a 422",
        ),
    ] = None,
) -> CommandView:
    """Send a command to the device now if it is online, else queue it until it returns
    (within ``ttl``). Its state moves on: poll ``GET /api/commands/{id}`` or watch the
    WebSocket's ``command`` frames."""
    try:
        made = await commands.submit(
            device_id, request.command, request.args, request.ttl, idempotency_key
        )
    except (CommandError, StoreError) as exc:
        raise _refused(exc) from exc
    return CommandView.of(made)


@router.get(
    "/api/commands/{command_id}",
    response_model=CommandView,
    responses={404: ERROR},
)
async def get_command(command_id: str, store: StoreDep) -> CommandView:
    found = await store.command(command_id)
    if found is None:
        raise _unknown(command_id)
    return CommandView.of(found)


@router.get(
    "/api/devices/{device_id}/commands",
    response_model=list[CommandView],
    responses={404: ERROR},
)
async def device_commands(
    device_id: KnownDeviceIdPath,
    store: StoreDep,
    status: CommandStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CommandView]:
    """The device's commands, newest first (only those in ``status``, if given)."""
    found: list[Command] = await store.device_commands(device_id, status, limit)
    return [CommandView.of(command) for command in found]


@router.delete(
    "/api/commands/{command_id}",
    response_model=CommandView,
    responses={404: ERROR, 409: ERROR, 503: ERROR},
)
async def cancel_command(command_id: str, commands: CommandsDep, store: StoreDep) -> CommandView:
    """Cancel a command that is still queued or sent (a sent one may have reached its
    device already: MQTT cannot take a message back); 409 once it is further."""
    try:
        canceled = await commands.cancel(command_id)
        if canceled is not None:
            return CommandView.of(canceled)
        found = await store.command(command_id)
    except StoreError as exc:
        raise HTTPException(503, str(exc)) from exc
    if found is None:
        raise _unknown(command_id)
    raise HTTPException(409, f"command {command_id!r} is {found.status}: too late to cancel")
