"""The latest state of devices, and the MQTT messages refused on the way in."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from .dependencies import KnownDeviceIdPath, StoreDep, unknown_device
from .schemas import DEVICE_EXAMPLE, ERROR, ROBOT, DeadLetter

router = APIRouter()


@router.get(
    "/api/coordinates",
    responses={200: {"content": {"application/json": {"example": [ROBOT]}}}},
)
async def coordinates(store: StoreDep) -> list[dict[str, Any]]:
    """The latest state of every device."""
    return await store.devices()


@router.get(
    "/api/devices/{device_id}",
    responses={200: {"content": DEVICE_EXAMPLE}, 404: ERROR},
)
async def device(device_id: KnownDeviceIdPath, store: StoreDep) -> dict[str, Any]:
    """The latest state of one device."""
    state = await store.device(device_id)
    if state is None:
        raise unknown_device(device_id)
    return state


@router.get("/api/deadletters", response_model=list[DeadLetter])
async def deadletters(
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[DeadLetter]:
    """The newest rejected MQTT messages with the reason, newest first."""
    return [DeadLetter.of(item) for item in await store.deadletters(limit)]
