"""Lifecycles: components started and stopped with ``async with``, and background tasks
that log when they die and are cancelled as a group."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterable
from types import TracebackType
from typing import Any, Self

from .health import Health

log = logging.getLogger(__name__)


def _report(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task %s stopped", task.get_name(), exc_info=task.exception())


def settle_heap() -> None:
    """Make the collector's pauses rare once everything is started.

    The pipeline allocates a few short-lived objects per message; with the default
    thresholds the collector runs hundreds of times a second and its older generations,
    scanned now and then, pause the event loop for tens of milliseconds: the tail of the
    publish-to-WebSocket latency. Objects alive at start-up (modules, the app) are frozen
    out of collection, and collections run after 50,000 allocations instead of 700.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def spawn(coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
    """Start a background task whose failure is logged, not lost."""
    task = asyncio.create_task(coro, name=name)
    task.add_done_callback(_report)
    return task


async def cancel_all(tasks: Iterable[asyncio.Task[Any]]) -> None:
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def crashed(tasks: Iterable[asyncio.Task[Any]]) -> list[str]:
    """Names of the tasks that ended although nobody cancelled them."""
    return [t.get_name() for t in tasks if t.done() and not t.cancelled()]


class Component(ABC):
    """A long-running part of the pipeline: ``async with`` starts and stops it."""

    @abstractmethod
    async def start(self) -> None:
        """Start; returns once the component is ready."""

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    def health(self) -> Health: ...

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
