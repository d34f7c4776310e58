"""The ``/coordinates`` WebSocket: a snapshot, then the hub's coalesced updates."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..hub import View, encode
from .dependencies import HubDep

router = APIRouter()


@router.websocket("/coordinates")
async def coordinates_ws(
    websocket: WebSocket,
    hub: HubDep,
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
        await hub.serve(websocket.send_text, websocket.receive_text, since, view, epoch)
