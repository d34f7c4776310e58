"""The ``/coordinates`` WebSocket: a snapshot, then the hub's coalesced updates.

The handshake went through ``authorize`` (as every route does); a session whose token
expires is closed with 1008, and what the client sends is bounded by ``ClientMessages``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from ..auth import Principal
from ..hub import View, encode
from .dependencies import HubDep
from .limits import POLICY_VIOLATION, ClientMessages
from .security import subprotocol

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
    await websocket.accept(subprotocol=subprotocol(websocket))
    try:
        view = View.parse(devices, rect)
    except ValueError as exc:
        await websocket.send_text(encode({"type": "error", "reason": str(exc)}))
        await websocket.close(code=POLICY_VIOLATION, reason=str(exc)[:120])
        return
    principal: Principal | None = getattr(websocket.state, "principal", None)
    expires = None if principal is None else principal.expires
    messages = ClientMessages(websocket)
    refusal = None
    with contextlib.suppress(WebSocketDisconnect):
        try:
            async with asyncio.timeout(None if expires is None else expires - time.time()):
                await hub.serve(websocket.send_text, messages.receive, since, view, epoch)
        except TimeoutError:
            refusal = (POLICY_VIOLATION, "token expired")
        refusal = refusal or messages.refusal
        if refusal is not None:
            await websocket.close(code=refusal[0], reason=refusal[1])
