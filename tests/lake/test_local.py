"""The Delta lake on a local directory against the shared lake suite, and how the settings
choose the lake."""

from __future__ import annotations

from pathlib import Path

import pytest

from iotstream.config import load_settings
from iotstream.lake import create_lake
from iotstream.lake.delta import DeltaLake

from .suite import LakeSuite, Location


class TestLocalLake(LakeSuite):
    @pytest.fixture
    def location(self, tmp_path: Path) -> Location:
        return str(tmp_path / "lake"), None


def test_the_lake_is_on_by_default_under_the_data_dir(tmp_path: Path) -> None:
    lake = create_lake(load_settings(data_dir=str(tmp_path)))
    assert isinstance(lake, DeltaLake) and lake.local
    assert lake.uri("readings") == str(tmp_path.absolute() / "lake" / "readings")
    assert create_lake(load_settings(lake="off")) is None
    remote = create_lake(load_settings(lake_url="s3://bucket/some/prefix/"))
    assert isinstance(remote, DeltaLake) and not remote.local
    assert remote.uri("rejected") == "s3://bucket/some/prefix/rejected"
    settings = load_settings(lake_retention="7", lake_compact_interval="60")
    assert (settings.lake.retention_days, settings.lake.compact_interval) == (7, 60)
