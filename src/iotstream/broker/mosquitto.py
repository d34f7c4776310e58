"""A managed ``mosquitto`` child process, restarted when it dies."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import getpass
import logging
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

from ..errors import BrokerError
from ..health import Health
from .base import Broker, wait_for_port

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0
MAX_BACKOFF = 5.0
PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the server dies, so no broker outlives a ``kill -9``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto")


class MosquittoBroker(Broker):
    def __init__(self, host: str, port: int, workdir: Path, binary: str | None = None) -> None:
        super().__init__(host, port)
        found = binary or mosquitto_binary()
        if found is None:
            raise BrokerError("mosquitto is not on PATH")
        self.binary = found
        self.workdir = workdir
        self.restarts = 0
        self._process: asyncio.subprocess.Process | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = False

    @property
    def pid(self) -> int | None:
        """The running mosquitto's, once it accepts connections."""
        process = self._process
        if process is None or process.returncode is not None or not self._ready:
            return None
        return process.pid

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.workdir.resolve()}/",
            # The ingest may fall behind during a burst: queue for it instead of dropping.
            "max_queued_messages 1000000",
            "max_inflight_messages 1000",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            # Run as root, mosquitto would switch to the 'mosquitto' user and lose the data dir.
            lines.append(f"user {getpass.getuser()}")
        config = self.workdir / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        return config

    def _check_port_free(self) -> None:
        # Otherwise the readiness probe below would take another server for mosquitto.
        with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise BrokerError(
                    f"cannot start mosquitto on {self.host}:{self.port}: {exc.strerror}"
                ) from exc

    async def _spawn(self) -> None:
        self._ready = False
        self._check_port_free()
        config = self._write_config()
        logfile = (self.workdir / "mosquitto.log").open("ab")
        try:
            self._process = await asyncio.create_subprocess_exec(
                self.binary,
                "-c",
                str(config),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logfile,
                stderr=logfile,
                preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            logfile.close()
        process = self._process
        waiter = asyncio.ensure_future(process.wait())
        ready = asyncio.ensure_future(wait_for_port(self.host, self.port, START_TIMEOUT))
        done, _ = await asyncio.wait({waiter, ready}, return_when=asyncio.FIRST_COMPLETED)
        if waiter in done:
            ready.cancel()
            raise BrokerError(
                f"mosquitto exited with code {process.returncode} at start; "
                f"see {self.workdir / 'mosquitto.log'} (is port {self.port} in use?)"
            )
        waiter.cancel()
        ready.result()
        self._ready = True
        log.info("mosquitto (pid %s) listening on %s:%s", process.pid, self.host, self.port)

    async def start(self) -> None:
        self._stopping = False
        await self._spawn()
        self._supervisor = asyncio.create_task(self._supervise(), name="mosquitto-supervisor")

    async def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping:
            assert self._process is not None
            code = await self._process.wait()
            if self._stopping:
                return
            log.error("mosquitto exited with code %s; restarting in %.1fs", code, backoff)
            await asyncio.sleep(backoff)
            try:
                await self._spawn()
            except BrokerError as exc:
                log.error("mosquitto restart failed: %s", exc)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            self.restarts += 1
            backoff = 0.5

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        process = self._process
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()

    def health(self) -> Health:
        if self.pid is None:
            return Health(False, f"mosquitto is not running (restarts: {self.restarts})")
        return Health(
            True, f"mosquitto pid {self.pid} on {self.host}:{self.port}, restarts: {self.restarts}"
        )
