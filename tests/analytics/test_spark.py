"""The Spark engine against the shared analytics suite, and both engines side by side: the
same readings give the same results, to the contract's tolerance, and ``analyze`` writes the
same rows whichever engine runs it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from deltalake import DeltaTable

from iotstream.analytics import (
    DERIVED_TABLES,
    TOLERANCE,
    DuckDBEngine,
    MotionParams,
    Window,
)

from .scenarios import T0, write_lake
from .suite import EVERYTHING, AnalyticsSuite

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from iotstream.analytics.spark import SparkEngine

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def engine(lake_url: str, spark: SparkSession) -> Iterator[SparkEngine]:
    from iotstream.analytics.spark import SparkEngine

    with SparkEngine(lake_url, session=spark) as engine:
        yield engine


class TestSparkEngine(AnalyticsSuite):
    pass


def same(a: Any, b: Any) -> bool:
    """Equal, numbers to ``TOLERANCE`` (relative; absolute near zero)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def rows(results: list[Any]) -> list[tuple[Any, ...]]:
    return [astuple(r) for r in results]


@pytest.mark.parametrize(
    "params",
    [MotionParams(), MotionParams(min_stop=4.0, smoothing=1.0), MotionParams(smoothing=0.0)],
)
def test_both_engines_find_the_same_motion(
    engine: SparkEngine, lake_url: str, params: MotionParams
) -> None:
    with DuckDBEngine(lake_url) as duck:
        for window in (EVERYTHING, Window(T0 + 25, T0 + 140, ["turner", "gappy", "noisy"])):
            mine, theirs = engine.motion(window, params), duck.motion(window, params)
            assert mine.trips and mine.stops
            assert same(rows(mine.trips), rows(theirs.trips))
            assert same(rows(mine.stops), rows(theirs.stops))
            assert same(rows(mine.summaries), rows(theirs.summaries))


def test_both_engines_draw_the_same_heatmap_and_score_the_same(
    engine: SparkEngine, lake_url: str
) -> None:
    with DuckDBEngine(lake_url) as duck:
        for cell in (0.5, 3.0):
            assert rows(engine.heatmap(EVERYTHING, cell, 60.0)) == rows(
                duck.heatmap(EVERYTHING, cell, 60.0)
            )
        assert same(
            rows(engine.evaluate(EVERYTHING, [1, 3])), rows(duck.evaluate(EVERYTHING, [1, 3]))
        )


def test_both_engines_write_the_same_tables(spark: SparkSession, tmp_path: Path) -> None:
    from iotstream.analytics.spark import SparkEngine

    by_engine = {}
    day = Window(T0, T0)
    for name in ("duckdb", "spark"):
        lake = write_lake(tmp_path / name)
        with DuckDBEngine(lake) if name == "duckdb" else SparkEngine(lake, session=spark) as engine:
            engine.analyze(day, MotionParams())
            written = engine.analyze(day, MotionParams())  # a rerun replaces
        tables = {}
        for table in DERIVED_TABLES:
            delta = DeltaTable(f"{lake}/{table}")
            protocol = delta.protocol()
            assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
            found = delta.to_pyarrow_table()
            assert found.num_rows == written[table]
            key = [c for c in found.schema.names if c not in ("readings", "dwell")]
            tables[table] = sorted(
                (tuple(r.values()) for r in found.to_pylist()),
                key=lambda r: tuple(str(v) for v in r[: len(key)]),
            )
        by_engine[name] = tables
    for table in DERIVED_TABLES:
        assert by_engine["spark"][table], table
        assert same(by_engine["spark"][table], by_engine["duckdb"][table]), table
    # Spark reads what either wrote.
    assert spark.read.format("delta").load(f"{tmp_path / 'duckdb'}/trips").count() == len(
        by_engine["duckdb"]["trips"]
    )


def test_iotstream_analyze_on_spark_joins_the_running_session(
    spark: SparkSession, tmp_path: Path
) -> None:
    from iotstream.cli import main

    lake = write_lake(tmp_path / "lake")
    main(["analyze", "--engine", "spark", "--lake-url", lake, "--from", str(T0)])
    assert DeltaTable(f"{lake}/trips").to_pyarrow_table().num_rows > 0
    # The session it used is still running for the rest of the tests.
    assert spark.range(3).count() == 3
