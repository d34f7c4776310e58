"""The lake every engine's suite reads: the robots of ``scenarios``, written once."""

from __future__ import annotations

import pytest

from .scenarios import write_lake


@pytest.fixture(scope="session")
def lake_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_lake(tmp_path_factory.mktemp("analytics") / "lake")
