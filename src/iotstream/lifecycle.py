"""Lifecycles: components started and stopped with ``async with``, and background tasks
that log when they die and are cancelled as a group."""

from __future__ import annotations

import asyncio
import contextlib
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
