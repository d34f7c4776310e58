"""The live dashboard (``GET /`` and its files under ``/dashboard``), and the Swagger UI
address the reference system's clients know."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

DASHBOARD = Path(__file__).resolve().parent.parent / "dashboard"

router = APIRouter()


@router.get("/swagger-ui.html", include_in_schema=False)
async def swagger_ui() -> RedirectResponse:
    return RedirectResponse("/docs")


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    """The live dashboard."""
    return FileResponse(DASHBOARD / "index.html")


def files() -> StaticFiles:
    """The dashboard's scripts and styles, to mount at ``/dashboard``."""
    return StaticFiles(directory=DASHBOARD)
