"""The dashboard page at / and its files under /dashboard (the browser tests in
tests/test_dashboard.py drive it; these check what is served)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

import iotstream

DASHBOARD = Path(iotstream.__file__).parent / "dashboard"
FILES = sorted(path.name for path in DASHBOARD.iterdir())


async def test_the_page_at_the_root(client: httpx.AsyncClient) -> None:
    response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.content == (DASHBOARD / "index.html").read_bytes()


async def test_what_the_page_links_to_is_served(client: httpx.AsyncClient) -> None:
    page = (await client.get("/")).text
    links = re.findall(r'(?:src|href)="(/[^"]*)"', page)
    assert "/dashboard/app.js" in links
    for link in links:
        assert (await client.get(link)).status_code == 200, link


@pytest.mark.parametrize("name", FILES)
async def test_every_file(client: httpx.AsyncClient, name: str) -> None:
    response = await client.get(f"/dashboard/{name}")
    assert response.status_code == 200
    assert response.content == (DASHBOARD / name).read_bytes()
    if name.endswith(".js"):
        assert "javascript" in response.headers["content-type"]


async def test_a_missing_file_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/dashboard/missing.js")).status_code == 404
