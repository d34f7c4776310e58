"""What the server does with its listening sockets before uvicorn gets them, and what a
role's process loads."""

from __future__ import annotations

import json
import platform
import socket
import subprocess
import sys
from contextlib import AsyncExitStack

import pytest

from harness import free_port
from iotstream import heap
from iotstream.errors import ConfigError
from iotstream.server import _listen


async def test_connections_of_a_listener_send_small_frames_at_once() -> None:
    async with AsyncExitStack() as stack:
        sock = _listen(stack, "127.0.0.1", free_port(), "--http-port")
        sock.listen()
        client = socket.create_connection(sock.getsockname()[:2])
        accepted, _ = sock.accept()
        with client, accepted:
            # Nagle would hold WebSocket frames back until the client's delayed ACK.
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


async def test_a_busy_port_is_refused_with_the_flag_that_named_it() -> None:
    async with AsyncExitStack() as stack:
        taken = _listen(stack, "127.0.0.1", free_port(), "--http-port")
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port} \\(--metrics-port\\)"):
            _listen(stack, "127.0.0.1", port, "--metrics-port")


def test_glibc_keeps_freed_memory_for_the_next_batch() -> None:
    """The allocator tuning applies on glibc (Debian, the Docker image): mallopt accepts it."""
    assert platform.libc_ver()[0] == "glibc"
    assert heap.keep_freed_memory() is True


def test_a_role_without_the_api_loads_neither_duckdb_nor_numba() -> None:
    """The bridge, the processor and the archiver serve only the health app: the analyses'
    and the history's libraries (DuckDB, pandas, numba; 140 MB of a bridge's 250) stay out."""
    heavy = ["duckdb", "pandas", "numba", "iotstream.api.analytics", "iotstream.api.history"]
    script = (
        "import json, sys\n"
        "from iotstream.cli import build_parser\n"
        "from iotstream.api import create_health_app\n"
        "build_parser()\n"
        "create_health_app({})\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
    # The full app still has them.
    script = (
        "import json, sys\n"
        "from iotstream.api import ROUTERS\n"
        f"print(json.dumps([m for m in {heavy!r} if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == heavy
