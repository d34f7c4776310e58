"""A managed ``mosquitto`` child process, restarted when it dies.

With ``accounts`` it refuses anonymous clients and checks every client against the password
and ACL files of ``iotstream.broker.accounts``; ``iotstream devices`` changes them and sends the
running broker SIGHUP (its pid is in ``mosquitto.pid``). With ``tls`` it also listens with TLS
1.2 or later on another port.
"""

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

from ..config import MqttEndpoint
from ..errors import BrokerError
from ..health import Health
from .accounts import CONFIG, PID_FILE, Accounts, Credentials
from .base import Broker, TlsListener, connect_host, wait_for_port

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
    def __init__(
        self,
        host: str,
        port: int,
        workdir: Path,
        binary: str | None = None,
        *,
        accounts: Accounts | None = None,
        tls: TlsListener | None = None,
    ) -> None:
        super().__init__(host, port)
        found = binary or mosquitto_binary()
        if found is None:
            raise BrokerError("mosquitto is not on PATH")
        self.binary = found
        self.workdir = workdir
        self.accounts = accounts
        self.tls = tls
        self.restarts = 0
        self._credentials: dict[str, Credentials] = {}
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

    def client_endpoint(self, account: str) -> MqttEndpoint:
        endpoint = MqttEndpoint(connect_host(self.host), self.port)
        credentials = self._credentials.get(account)
        if credentials is None:
            return endpoint
        return MqttEndpoint(
            endpoint.host, endpoint.port, credentials.username, credentials.password
        )

    def _listeners(self) -> list[str]:
        # Every listener declared, none implied: the plain one, then TLS.
        lines = [f"listener {self.port} {self.host}"]
        if self.tls is not None:
            lines += [
                f"listener {self.tls.port} {self.host}",
                f"certfile {self.tls.cert.resolve()}",
                f"keyfile {self.tls.key.resolve()}",
                "tls_version tlsv1.2",
            ]
        if self.accounts is None:
            return [*lines, "allow_anonymous true"]
        return [
            *lines,
            "allow_anonymous false",
            f"password_file {self.accounts.passwd.resolve()}",
            f"acl_file {self.accounts.acl.resolve()}",
        ]

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            # Accounts and anonymity hold for every listener alike.
            "per_listener_settings false",
            *self._listeners(),
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
        # Absolute: `iotstream devices` recognises the broker by it in /proc/<pid>/cmdline.
        config = (self.workdir / CONFIG).resolve()
        config.write_text("\n".join(lines) + "\n")
        return config

    def _check_port_free(self) -> None:
        # Otherwise the readiness probe below would take another server for mosquitto.
        ports = [self.port] if self.tls is None else [self.port, self.tls.port]
        for port in ports:
            with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.host, port))
                except OSError as exc:
                    raise BrokerError(
                        f"cannot start mosquitto on {self.host}:{port}: {exc.strerror}"
                    ) from exc

    async def _spawn(self) -> None:
        self._ready = False
        self._check_port_free()
        if self.accounts is not None:
            self._credentials = self.accounts.prepare()
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
        # For ``iotstream devices``, which signals it to reload the accounts.
        (self.workdir / PID_FILE).write_text(f"{process.pid}\n")
        log.info("mosquitto (pid %s) listening on %s:%s", process.pid, self.host, self.port)
        if self.tls is not None:
            log.info("mosquitto listening with TLS on %s:%s", self.host, self.tls.port)

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
        (self.workdir / PID_FILE).unlink(missing_ok=True)

    def health(self) -> Health:
        if self.pid is None:
            return Health(False, f"mosquitto is not running (restarts: {self.restarts})")
        tls = "" if self.tls is None else f" (TLS on {self.tls.port})"
        accounts = "" if self.accounts is None else ", accounts and ACLs checked"
        return Health(
            True,
            f"mosquitto pid {self.pid} on {self.host}:{self.port}{tls}{accounts}, "
            f"restarts: {self.restarts}",
        )
