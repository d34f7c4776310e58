"""The DuckDB engine against the shared analytics suite, and what is its own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from iotstream.analytics import AnalyticsError, DuckDBEngine, MotionParams, Window, create_engine

from .scenarios import T0, write_lake
from .suite import AnalyticsSuite


@pytest.fixture(scope="module")
def engine(lake_url: str) -> Iterator[DuckDBEngine]:
    with DuckDBEngine(lake_url) as engine:
        yield engine


class TestDuckDBEngine(AnalyticsSuite):
    pass


def test_a_lake_without_readings_has_nothing_to_analyse(tmp_path: Path) -> None:
    with create_engine("duckdb", str(tmp_path / "nothing")) as engine:
        everything = Window(0, 4e9)
        assert engine.trips(everything, MotionParams()) == []
        assert engine.heatmap(everything, 1.0, 60.0) == []


def test_a_broken_table_is_an_analytics_error(tmp_path: Path) -> None:
    url = write_lake(tmp_path / "lake")
    for path in (tmp_path / "lake" / "readings").rglob("*.parquet"):
        path.write_bytes(b"not parquet")
    with DuckDBEngine(url) as engine, pytest.raises(AnalyticsError, match="finding trips"):
        engine.trips(Window(T0, T0 + 100), MotionParams())


def test_unknown_engines_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        create_engine("pandas", str(tmp_path))


def test_a_motion_analysis_is_reused_briefly_for_the_same_window(lake_url: str) -> None:
    window = Window(T0, T0 + 100, ["straight"])
    with DuckDBEngine(lake_url) as engine:
        first = engine.trips(window, MotionParams())
        first.clear()
        assert len(engine.trips(window, MotionParams())) == 1
        assert len(engine.stops(window, MotionParams())) == 2
        engine.reuse = 0.0
        assert len(engine.trips(window, MotionParams(min_stop=100.0))) == 1
