"""The embedded store against the shared store suite."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from iotstream.store import MemoryStore

from .command_suite import CommandSuite
from .suite import DEADLETTER_LIMIT, DEDUPE_WINDOW, StoreSuite


class TestMemoryStore(StoreSuite, CommandSuite):
    @pytest.fixture
    async def store(self) -> AsyncIterator[MemoryStore]:
        async with MemoryStore(
            deadletter_limit=DEADLETTER_LIMIT, dedupe_window=DEDUPE_WINDOW
        ) as store:
            yield store
