"""The embedded server (``iotstream run``) as ``make setup``, ``make run``, ``make restart``,
``make stop`` and ``make clean`` start and stop it::

    python -m harness.embedded start [iotstream run flags]  # in the background, once healthy
    python -m harness.embedded run [flags]                  # in the foreground (make run)
    python -m harness.embedded restart                      # stop, start again with its flags
    python -m harness.embedded stop
    python -m harness.embedded status                       # exit 1 unless it runs

Either way the server's PID, start time and command line are written to
``<data dir>/iotstream.pid`` (JSON), so ``restart`` and ``stop`` find the server ``make run``
or ``make setup`` started, and never another process that reused its PID. In the background
its output goes to ``<data dir>/iotstream.log``. ``start``, ``restart`` and ``stop`` print one
``PASS ...`` or ``FAIL ...`` line and exit 0 or 1.

The data dir and the HTTP port are the server's own settings: ``--data-dir`` /
``IOTSTREAM_DATA_DIR`` (``data``) and ``--http-port`` / ``IOTSTREAM_HTTP_PORT`` (8081).
Standard library only, so that ``make clean`` can stop the server without the venv.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .processes import HOST, POLL_SECONDS, pid_alive, process_stat, stop_process_group

PID_FILE = "iotstream.pid"
LOG_FILE = "iotstream.log"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


def _flag(args: Sequence[str], flag: str) -> str | None:
    """The value of ``flag`` in ``args`` (``--flag V`` or ``--flag=V``), the last one wins."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
    return value


def data_dir(args: Sequence[str] = ()) -> Path:
    return Path(_flag(args, "--data-dir") or os.environ.get("IOTSTREAM_DATA_DIR") or "data")


def health_url(args: Sequence[str] = ()) -> str:
    port = _flag(args, "--http-port") or os.environ.get("IOTSTREAM_HTTP_PORT") or "8081"
    return f"http://{HOST}:{port}/api/health"


@dataclass(frozen=True)
class Record:
    """What the PID file holds about a server started through this module."""

    pid: int
    start_time: int
    args: list[str]
    env: dict[str, str]
    """Its ``IOTSTREAM_*`` settings, which ``restart`` gives it again."""
    health: str
    log: str | None

    @classmethod
    def load(cls, directory: Path) -> Record | None:
        """The record in ``directory`` if that very process still runs."""
        try:
            record = cls(**json.loads((directory / PID_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        stat = process_stat(record.pid)
        # A matching start time tells the server from a later process that reused its PID.
        if stat is None or stat[0] == "Z" or stat[1] != record.start_time:
            return None
        return record

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / PID_FILE
        # Owner only, before anything is written: the settings may hold a password.
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def _record_of(pid: int, args: Sequence[str], log: Path | None) -> Record:
    stat = process_stat(pid)
    assert stat is not None, "the process was just started"
    env = {name: value for name, value in os.environ.items() if name.startswith("IOTSTREAM_")}
    return Record(pid, stat[1], list(args), env, health_url(args), str(log) if log else None)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Whether ``GET url`` answers 200 now."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return int(reply.status) == 200
    except OSError:  # refused, timed out, or an HTTP error status
        return False


def _argv(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "iotstream", "run", *args]


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start(args: Sequence[str], what: str = "setup", before: str = "") -> int:
    directory = data_dir(args)
    running = Record.load(directory)
    if running is not None:
        print(f"PASS {what}: iotstream run already runs (pid {running.pid}), {running.health}")
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / LOG_FILE
    with log.open("ab") as out:
        process = subprocess.Popen(
            _argv(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    record = _record_of(process.pid, args, log)
    record.save(directory)
    deadline = time.monotonic() + START_TIMEOUT
    while not http_ok(record.health):
        if process.poll() is not None or time.monotonic() > deadline:
            state = "not healthy" if process.poll() is None else f"exited {process.returncode}"
            _stop(record)
            (directory / PID_FILE).unlink(missing_ok=True)
            print(_tail(log), file=sys.stderr)
            print(f"FAIL {what}: {before}iotstream run {state} (log {log})")
            return 1
        time.sleep(POLL_SECONDS)
    print(
        f"PASS {what}: {before}iotstream run (pid {process.pid}) healthy at {record.health}, "
        f"log {log}"
    )
    return 0


def run(args: Sequence[str]) -> int:
    """Become ``iotstream run`` in the foreground, with a PID file."""
    directory = data_dir(args)
    running = Record.load(directory)
    if running is not None:
        print(f"iotstream run already runs (pid {running.pid}); make stop or make restart")
        return 1
    _record_of(os.getpid(), args, None).save(directory)
    # exec keeps the PID and start time, so the record names the server itself.
    os.execv(sys.executable, _argv(args))


def _stop(record: Record) -> None:
    try:
        leader = os.getpgid(record.pid) == record.pid
        if leader:
            # Started here, in a session of its own: the group also holds its Mosquitto.
            stop_process_group(record.pid, STOP_TIMEOUT)
            return
        # `make run` in a terminal: the server shares the group of make and the shell.
        os.kill(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while pid_alive(record.pid):
            if time.monotonic() > deadline:
                os.kill(record.pid, signal.SIGKILL)
            time.sleep(POLL_SECONDS)
    except ProcessLookupError:
        pass  # it exited meanwhile


def _stop_recorded(directory: Path) -> Record | None:
    """Stop the server recorded in ``directory``; its record, or None if none ran."""
    record = Record.load(directory)
    if record is not None:
        _stop(record)
    (directory / PID_FILE).unlink(missing_ok=True)
    return record


def stop(args: Sequence[str]) -> int:
    directory = data_dir(args)
    record = _stop_recorded(directory)
    if record is None:
        print(f"PASS stop: no iotstream run recorded in {directory / PID_FILE} runs")
    else:
        print(f"PASS stop: iotstream run (pid {record.pid}) stopped")
    return 0


def restart(args: Sequence[str]) -> int:
    record = _stop_recorded(data_dir(args))
    if record is None:
        return start(args, "restart", "none was running; ")
    # The same flags and settings as before, so the same data dir, ports and PID file.
    os.environ.update(record.env)
    return start(record.args, "restart", f"pid {record.pid} stopped; ")


def status(args: Sequence[str]) -> int:
    record = Record.load(data_dir(args))
    if record is None:
        print("iotstream run: not running")
        return 1
    health = "healthy" if http_ok(record.health) else "NOT HEALTHY"
    log = record.log or "on its terminal"
    print(f"iotstream run: pid {record.pid}, {health} ({record.health}), log {log}")
    return 0


COMMANDS = {"start": start, "run": run, "restart": restart, "stop": stop, "status": status}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.embedded",
        description="Start, stop and restart the embedded server (iotstream run).",
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("args", nargs=argparse.REMAINDER, help="flags of iotstream run")
    parsed = parser.parse_args(argv)
    return COMMANDS[parsed.command](parsed.args)


if __name__ == "__main__":
    sys.exit(main())
