"""Worker processes of the bench (publishers, subscribers, WebSocket watchers).

Each worker is a spawned process with a pipe to the bench. The conversation is always
the same: the worker sends ``("ready", info)`` once it is connected, gets one message
from the bench (a start time, or a stop order), and answers ``("report", report)``.
Every wait has a timeout, and leaving the ``with`` block kills whatever still runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import time
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess
from types import TracebackType
from typing import Any, Self

from .errors import BenchError

# Spawned, not forked: the bench's parent holds threads and sockets a fork would copy.
CONTEXT = multiprocessing.get_context("spawn")
STOP_TIMEOUT = 5.0


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run a worker's coroutine on uvloop when it is installed (uvicorn[standard] brings it)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


class StopOnExit:
    """``with`` gives the object itself and calls its ``stop()`` on the way out."""

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class Worker:
    """One spawned process running ``target(pipe, *args)``."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        self.name = name
        self.pipe, child = CONTEXT.Pipe()
        self.process: SpawnProcess = CONTEXT.Process(
            target=target, args=(child, *args), name=name, daemon=True
        )
        self._child = child

    @property
    def pid(self) -> int:
        if self.process.pid is None:
            raise BenchError(f"{self.name} is not started")
        return self.process.pid

    def start(self) -> None:
        self.process.start()
        # The child's end lives on in the child; closing ours lets recv() see its death.
        self._child.close()

    def send(self, *message: Any) -> None:
        self.pipe.send(message)

    def expect(self, kind: str, deadline: float) -> Any:
        """The payload of the worker's next message, which must be ``kind``."""
        while True:
            if self.pipe.poll(max(0.0, min(0.2, deadline - time.monotonic()))):
                try:
                    got, payload = self.pipe.recv()
                except EOFError:
                    raise BenchError(f"{self.name} exited ({self.process.exitcode})") from None
                if got == "error":
                    raise BenchError(f"{self.name} failed: {payload}")
                if got != kind:
                    raise BenchError(f"{self.name} sent {got!r}, expected {kind!r}")
                return payload
            if not self.process.is_alive():
                raise BenchError(f"{self.name} exited ({self.process.exitcode}) before {kind!r}")
            if time.monotonic() >= deadline:
                raise BenchError(f"{self.name} sent no {kind!r} in time")

    def stop(self) -> None:
        if self.process.pid is None:
            return
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(STOP_TIMEOUT)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(STOP_TIMEOUT)
        self.pipe.close()


class WorkerGroup(StopOnExit):
    """Workers started together, told the same thing, and stopped together."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers

    @property
    def pids(self) -> dict[str, int]:
        return {worker.name: worker.pid for worker in self.workers}

    def start(self, timeout: float) -> list[Any]:
        """Start every worker and return what each said when ready."""
        for worker in self.workers:
            worker.start()
        deadline = time.monotonic() + timeout
        return [worker.expect("ready", deadline) for worker in self.workers]

    def tell(self, *message: Any) -> None:
        for worker in self.workers:
            worker.send(*message)

    def reports(self, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        return [worker.expect("report", deadline) for worker in self.workers]

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


async def next_message(pipe: Connection, timeout: float) -> tuple[Any, ...]:
    """The bench's next message to this worker, read without blocking the event loop."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[tuple[Any, ...]] = loop.create_future()

    def readable() -> None:
        if got.done():
            return
        try:
            got.set_result(pipe.recv())
        except (EOFError, OSError) as exc:  # the bench is gone
            got.set_exception(exc)

    loop.add_reader(pipe.fileno(), readable)
    try:
        return await asyncio.wait_for(got, timeout)
    finally:
        loop.remove_reader(pipe.fileno())
        # uvloop leaves a watched descriptor non-blocking; a large report would then fail.
        os.set_blocking(pipe.fileno(), True)


def run_worker(pipe: Connection, main: Coroutine[Any, Any, None]) -> None:
    """A worker process's body: ``main`` on ``run_async``; a failure is told to the bench
    (``report_failure``) before it ends the process."""
    try:
        run_async(main)
    except Exception as exc:
        report_failure(pipe, exc)
        raise


def report_failure(pipe: Connection, exc: BaseException) -> None:
    """Tell the bench why a worker gave up, so it fails with the reason, not a timeout."""
    with contextlib.suppress(OSError, EOFError):  # the bench already left
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
