"""Loopback ports and processes: pick free ports, look processes up, stop what was started.

Two ways to stop a process:

- ``stop_process(popen)``: a child of ours (``iotstream run``, ``mosquitto_sub``, ...):
  SIGTERM, wait, then SIGKILL.
- ``stop_process_group(pid)``: a process group by its leader's PID (an engine started in its own
  session, or one ``python -m harness up`` left running): SIGTERM to the group, wait until the
  leader is gone, then SIGKILL. Liveness is read from /proc, so this works for processes that
  are not our children, and it is Linux only.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

HOST = "127.0.0.1"
POLL_SECONDS = 0.1
STOP_TIMEOUT = 15.0


# --- ports ----------------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    with _bound_sockets(count) as socks:
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    return free_ports(1)[0]


@contextmanager
def _bound_sockets(count: int) -> Iterator[list[socket.socket]]:
    # All sockets stay bound until every port is picked, so the ports differ.
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in socks:
            sock.bind((HOST, 0))
        yield socks
    finally:
        for sock in socks:
            sock.close()


def port_accepts(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


# --- our children ---------------------------------------------------------------------------


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM a child, wait up to ``timeout``, then SIGKILL it. Safe when it already exited."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


# --- any process, by PID --------------------------------------------------------------------


def process_stat(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, or None if there is none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may contain spaces; the fixed fields follow the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


def pid_alive(pid: int) -> bool:
    # A zombie has exited and only waits to be reaped: by us for a child, by PID 1 (whenever it
    # gets to it) for what an earlier `up` left running.
    stat = process_stat(pid)
    return stat is not None and stat[0] != "Z"


def children(pid: int) -> list[int]:
    """The PIDs of the direct children of ``pid`` (none once it is gone)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def command_name(pid: int) -> str:
    """The executable's name of ``pid`` (``mosquitto``), or "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The process leads its own group, so this also reaches anything it forked.
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True


def stop_process_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL it if still there after ``timeout``."""
    if not pid_alive(pid):
        return
    _signal_group(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        _signal_group(pid, signal.SIGKILL)
        _wait_gone(pid, 5.0)


def kill_process_group(pid: int) -> None:
    """SIGKILL the process group led by ``pid`` without warning, as a crash would."""
    _signal_group(pid, signal.SIGKILL)
