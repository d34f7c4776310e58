"""The DuckDB engine against the shared analytics suite, and what is its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from iotstream.analytics import AnalyticsError, DuckDBEngine, MotionParams, Window, create_engine
from iotstream.analytics.duckdb import next_reading_dwell
from iotstream.analytics.engine import SqlEngine
from iotstream.lake.delta import DeltaLake
from iotstream.models import DeviceId, Reading

from .scenarios import DAY, MIDNIGHT, READINGS, T0, reference_heatmap, write_lake
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


# --- the heatmap over compacted days ---------------------------------------------------------


def reference_dwell(device: list[int], us: list[int], max_gap: int) -> list[int]:
    """The time to each reading's device's next reading, by the definition."""
    out = []
    for k, (d, t) in enumerate(zip(device, us, strict=True)):
        later = [u for e, u in zip(device[k + 1 :], us[k + 1 :], strict=True) if e == d]
        out.append(min(later[0] - t, max_gap) if later else 0)
    return out


def test_the_dwell_of_sorted_runs_is_the_time_to_the_device_s_next_reading() -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        device, us = [], []
        for day in range(int(rng.integers(1, 4))):
            # Some devices of the fleet report on a day, each in time order, ties included.
            for d in sorted(rng.choice(5, size=int(rng.integers(1, 5)), replace=False)):
                times = np.sort(rng.integers(0, 1000, int(rng.integers(1, 6))))
                device += [int(d)] * len(times)
                us += (day * 1000 + times).tolist()
        got = next_reading_dwell(np.array(device), np.array(us), 300)
        assert got.tolist() == reference_dwell(device, us, 300)
    assert next_reading_dwell(np.array([]), np.array([], np.int64), 10).tolist() == []


@pytest.fixture(scope="module")
def two_days(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, list[Reading]]:
    """The scenarios' robots; the same robots renamed, at 5 Hz, from 100 s before the next
    midnight (the longer tracks cross it); and the first 500 readings twice (ties in time);
    compacted: one sorted file a day."""
    shift = MIDNIGHT + DAY - 100 - T0
    later = [
        Reading(DeviceId(f"{r.device_id}-late"), r.fields, r.timestamp + shift, r.received_at)
        for r in READINGS
    ]
    readings = READINGS + later[::2] + READINGS[:500]
    url = write_lake(tmp_path_factory.mktemp("two-days") / "lake", readings)

    async def compact() -> None:
        async with DeltaLake(url) as lake:
            await lake.compact()

    asyncio.run(compact())
    return url, readings


def test_the_heatmap_of_compacted_days_is_every_reading(
    two_days: tuple[str, list[Reading]],
) -> None:
    url, readings = two_days
    names = sorted({r.device_id for r in readings if r.device_id != "sensor"})
    windows = [
        (MIDNIGHT, MIDNIGHT + 2 * DAY - 1e-6, None),  # both days
        (MIDNIGHT + DAY - 50, MIDNIGHT + DAY + 100, None),  # across midnight
        (MIDNIGHT, MIDNIGHT + 2 * DAY - 1e-6, ["cruise-late", "straight"]),
    ]
    with DuckDBEngine(url) as engine:
        for start, end, devices in windows:
            window = Window(start, end, devices)
            with engine._run(window, "checking", ordered=True) as run:
                assert run is not None and run.ordered  # the sort-free way is the one taken
            inside = [r for r in readings if start <= r.timestamp <= end]
            expected = reference_heatmap(inside, devices or names, 0.5, 60.0)
            got = engine.heatmap(window, 0.5, 60.0)
            assert [(c.i, c.j) for c in got] == sorted(expected)
            for c in got:
                count, dwell = expected[c.i, c.j]
                assert c.readings == count
                assert c.dwell == pytest.approx(dwell, abs=1e-6)
            assert got == SqlEngine.heatmap(engine, window, 0.5, 60.0)
