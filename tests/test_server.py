"""What the server does with its listening sockets before uvicorn gets them."""

from __future__ import annotations

import platform
import socket
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
