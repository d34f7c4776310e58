"""Schemathesis against ``iotstream run --auth on``: every operation, every check, as each
role, for a fixed time per role. Fails on any 5xx and on any answer the OpenAPI document
does not describe (status code, schema, content type, headers), and on an operation that
answers without the credentials it documents.

Each role logs in for a bearer token: an admin fuzzer may revoke API keys and remove users
as it pleases, and a token outlives both for its lifetime. All three log in before any
fuzzing, since the fuzzer's failed logins throttle logins from its address. Two checks are
left out for what the schema cannot say: ``positive_data_acceptance`` (a history cursor is
a string in the schema but only one the API gave is valid) and ``allow_header_conformance``
(Starlette answers 405 with the methods of the first route of a path, not all of them). A
third, ``use_after_free``, would fail by design: ``DELETE /api/commands/{id}`` cancels a
command, which stays readable.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from harness import stop_process

from .conftest import Server, start_server

pytestmark = pytest.mark.schemathesis

ROLES = ("viewer", "operator", "admin")
SECONDS_PER_ROLE = 5
EXCLUDED = "positive_data_acceptance,allow_header_conformance,use_after_free"


@pytest.fixture(scope="module")
def secured_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("schemathesis"), "--auth", "on")
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture(scope="module")
def tokens(secured_server: Server) -> dict[str, str]:
    return {role: token(secured_server, role) for role in ROLES}


def token(server: Server, role: str) -> str:
    name, password = f"fuzz-{role}", f"{role}-password"
    subprocess.run(
        [sys.executable, "-m", "iotstream", "users", "add", name, "--role", role,
         "--password-stdin", "--data-dir", str(server.data_dir)],
        input=password.encode(), check=True, timeout=60, capture_output=True,
    )  # fmt: skip
    response = httpx.post(
        server.http + "/api/auth/token", data={"username": name, "password": password}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.mark.parametrize("role", ROLES)
def test_schemathesis(
    secured_server: Server, tokens: dict[str, str], role: str, tmp_path: Path
) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert binary is not None, "schemathesis is in the dev extra"
    result = subprocess.run(
        [binary, "run", f"{secured_server.http}/openapi.json",
         "--checks", "all", "--exclude-checks", EXCLUDED,
         "--header", f"Authorization: Bearer {tokens[role]}",
         "--max-time", str(SECONDS_PER_ROLE), "--workers", "1", "--seed", "12",
         "--report", "junit", "--report-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=SECONDS_PER_ROLE + 120, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-20_000:] + result.stderr[-5_000:]
