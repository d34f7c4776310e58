"""The Delta lake on a local directory against the shared lake suite, and how the settings
choose the lake."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from iotstream.config import load_settings
from iotstream.lake import create_lake
from iotstream.lake.base import READINGS, TABLES
from iotstream.lake.delta import SCHEMAS, DeltaLake
from iotstream.models import Batch

from .suite import EVERYTHING, T0, LakeSuite, Location, point


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


async def test_compacted_files_keep_times_as_deltas_and_nothing_spark_refuses(
    tmp_path: Path,
) -> None:
    async with DeltaLake(str(tmp_path / "lake"), vacuum_retention_hours=0) as lake:
        for n in range(3):
            batch = [point("r1", T0 + n * 100 + s / 10, s / 7, -s / 3) for s in range(1000)]
            await lake.append(Batch(readings=batch))
        await lake.compact()
        [path] = DeltaTable(lake.uri("readings")).file_uris()
    meta = pq.read_metadata(path)
    assert meta.num_rows == 3000
    encodings = {
        meta.row_group(0).column(i).path_in_schema: set(meta.row_group(0).column(i).encodings)
        for i in range(meta.num_columns)
    }
    assert "DELTA_BINARY_PACKED" in encodings["ts"]
    assert "DELTA_BINARY_PACKED" in encodings["received_at"]
    assert not any("BYTE_STREAM_SPLIT" in found for found in encodings.values())


async def test_tables_keep_their_log_as_long_as_set_and_the_positions_past_it(
    tmp_path: Path,
) -> None:
    """A table made before is set to the lake's log retention too; commits older than that
    go once a checkpoint older than that covers them (one a second of the archiver's would
    otherwise pile up for 30 days), and the positions recorded in them stay."""
    root = tmp_path / "lake"
    DeltaTable.create(str(root / READINGS), SCHEMAS[READINGS], partition_by=["date"])
    async with DeltaLake(str(root), log_retention_hours=1 / 3600) as lake:
        table = DeltaTable(lake.uri(READINGS))
        retention = table.metadata().configuration.get("delta.logRetentionDuration")
        assert retention == "interval 1 seconds"
        # Delta checkpoints every hundred commits: the first hundred are made an hour old
        # (the log's files' times are what it goes by), then a hundred more.
        log = root / READINGS / "_delta_log"
        for n in range(200):
            if n == 100:
                hour_ago = time.time() - 3600
                for path in log.iterdir():
                    os.utime(path, (hour_ago, hour_ago))
            await lake.append(Batch(readings=[point("r1", T0 + n, n, 0.0)]), {"g/p0": n})
        commits = sorted(int(path.name.split(".")[0]) for path in log.glob("*.json"))
        checkpoints = sorted(int(path.name.split(".")[0]) for path in log.glob("*.checkpoint*"))
        last = DeltaTable(lake.uri(READINGS)).version()
        assert await lake.versions(READINGS) == {"g/p0": 199}
        assert len(await lake.readings(EVERYTHING)) == 200
    assert len(checkpoints) == 2
    # Every commit before the older checkpoint is gone; the ones after it are all there.
    assert commits == list(range(checkpoints[0], last + 1))
    async with DeltaLake(str(root)) as lake:  # by default, an hour
        for name in TABLES:
            config = DeltaTable(lake.uri(name)).metadata().configuration
            assert config.get("delta.logRetentionDuration") == "interval 3600 seconds"
