"""``iotstream analyze`` writing the derived tables, read back with deltalake."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from deltalake import DeltaTable

from iotstream.analytics import (
    DERIVED_TABLES,
    MODELS,
    DuckDBEngine,
    MotionParams,
    Window,
)
from iotstream.analytics.tables import SCHEMAS
from iotstream.cli import main

from .scenarios import DEVICES, MIDNIGHT, READINGS, T0, along, reference_heatmap, sample, write_lake

DAY_TEXT = datetime.fromtimestamp(T0, UTC).date().isoformat()


def table(lake: str, name: str) -> pa.Table:
    return DeltaTable(f"{lake}/{name}").to_pyarrow_table()


def rows(lake: str, name: str) -> list[dict[str, Any]]:
    key = ["device_id", "date"] + [
        c for c in ("start", "model", "horizon", "i", "j") if c in SCHEMAS[name].names
    ]
    return sorted(table(lake, name).to_pylist(), key=lambda r: tuple(str(r[k]) for k in key))


def analyze(lake: str, *args: str) -> None:
    main(["analyze", "--lake-url", lake, "--from", DAY_TEXT, *args])


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = write_lake(tmp_path_factory.mktemp("analyze") / "lake")
    analyze(url)
    return url


def test_every_table_is_written_at_protocol_1_2_with_its_schema(lake: str) -> None:
    for name in DERIVED_TABLES:
        delta = DeltaTable(f"{lake}/{name}")
        protocol = delta.protocol()
        assert (protocol.min_reader_version, protocol.min_writer_version) == (1, 2)
        assert delta.metadata().partition_columns == ["date"]
        assert delta.to_pyarrow_table().schema == SCHEMAS[name], name


def test_the_tables_hold_what_the_engine_finds(lake: str) -> None:
    day = Window(MIDNIGHT, MIDNIGHT + 86_400 - 1e-6)
    with DuckDBEngine(lake) as engine:
        motion = engine.motion(day, MotionParams())
    trips = rows(lake, "trips")
    assert [(r["device_id"], r["start"].timestamp()) for r in trips] == [
        (t.device_id, pytest.approx(t.start)) for t in motion.trips
    ]
    turner = [r for r in trips if r["device_id"] == "turner"]
    assert [(r["distance"], r["duration"], r["date"]) for r in turner] == [
        (pytest.approx(15), pytest.approx(25), date.fromisoformat(DAY_TEXT)),
        (pytest.approx(10), pytest.approx(10), date.fromisoformat(DAY_TEXT)),
    ]
    stops = rows(lake, "stops")
    assert len(stops) == len(motion.stops)
    assert {(r["device_id"], r["duration"]) for r in stops} >= {("pause", 50.0), ("gappy", 15.0)}
    days = {r["device_id"]: r for r in rows(lake, "device_days")}
    assert sorted(days) == list(DEVICES)
    for summary in motion.summaries:
        row = days[summary.device_id]
        assert row["readings"] == summary.readings
        assert row["moving_time"] == pytest.approx(summary.moving_time)
        assert row["stopped_time"] == pytest.approx(summary.stopped_time)
        assert row["distance"] == pytest.approx(summary.distance)
        assert row["gaps"] == summary.gaps


def test_the_heatmap_table_is_per_device_and_adds_up_to_the_fleet(lake: str) -> None:
    cells: dict[tuple[int, int], list[float]] = {}
    for r in rows(lake, "heatmap"):
        assert r["cell"] == 0.5
        total = cells.setdefault((r["i"], r["j"]), [0, 0.0])
        total[0] += r["readings"]
        total[1] += r["dwell"]
    expected = reference_heatmap(READINGS, DEVICES, 0.5, 60.0)
    assert sorted(cells) == sorted(expected)
    for key, (readings, dwell) in expected.items():
        assert cells[key] == [readings, pytest.approx(dwell, abs=1e-6)]


def test_prediction_errors_per_device_model_and_horizon(lake: str) -> None:
    found = rows(lake, "prediction_eval")
    assert {(r["device_id"], r["model"], r["horizon"]) for r in found} == {
        (d, m, h) for d in DEVICES for m in MODELS for h in (1.0, 3.0)
    }
    cruise = {(r["model"], r["horizon"]): r for r in found if r["device_id"] == "cruise"}
    assert cruise["last", 1.0]["ade"] == pytest.approx(0.55, abs=1e-6)
    assert cruise["velocity", 3.0]["fde"] == pytest.approx(0, abs=1e-5)


def test_a_rerun_replaces_its_days_and_devices(lake: str) -> None:
    before = {name: rows(lake, name) for name in DERIVED_TABLES}
    analyze(lake)
    assert {name: rows(lake, name) for name in DERIVED_TABLES} == before
    # Other motion parameters, for one device: its rows change, the others stay.
    analyze(lake, "--devices", "turner", "--min-stop", "4")
    trips = rows(lake, "trips")
    assert len([r for r in trips if r["device_id"] == "turner"]) == 3
    assert [r for r in trips if r["device_id"] != "turner"] == [
        r for r in before["trips"] if r["device_id"] != "turner"
    ]
    assert rows(lake, "heatmap") == before["heatmap"]
    analyze(lake, "--devices", "turner")
    assert rows(lake, "trips") == before["trips"]


def test_days_are_analysed_whole_and_trips_cross_midnight(tmp_path: Path) -> None:
    # Still 10 s, 60 s along x at 1 m/s across midnight, still 20 s.
    t = MIDNIGHT + 86_400 - 30 - T0
    path = along([(t, 0, 0), (t + 10, 0, 0), (t + 70, 60, 0), (t + 90, 60, 0)])
    lake = write_lake(tmp_path / "lake", sample("late", path, [(t, t + 90)]))
    first = datetime.fromtimestamp(T0, UTC).date()
    second = datetime.fromtimestamp(T0 + 86_400, UTC).date()
    main(["analyze", "--lake-url", lake, "--from", str(T0), "--to", f"{second}T12:00:00"])
    [trip] = rows(lake, "trips")
    assert (trip["date"], trip["distance"], trip["duration"]) == (first, pytest.approx(60), 60)
    days = rows(lake, "device_days")
    assert [(r["date"], r["moving_time"], r["readings"]) for r in days] == [
        (first, pytest.approx(20), 300),
        (second, pytest.approx(40), 601),
    ]
    assert sum(r["distance"] for r in days) == pytest.approx(60)
    # The second day alone: its trip starts at midnight.
    main(["analyze", "--lake-url", lake, "--from", str(second)])
    trips = rows(lake, "trips")
    assert [(r["date"], r["start"].timestamp() % 86_400) for r in trips] == [
        (first, pytest.approx(86_380)),
        (second, pytest.approx(0)),
    ]


def test_bad_arguments_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lake = str(tmp_path / "lake")
    for args in (
        ["--from", "2027-01-02", "--to", "2027-01-01"],
        ["--from", "yesterday"],
        ["--from", "2027-01-01", "--stop-speed", "1", "--start-speed", "0.5"],
        ["--from", "2027-01-01", "--cell", "0"],
    ):
        with pytest.raises(SystemExit) as exit:
            main(["analyze", "--lake-url", lake, *args])
        assert exit.value.code == 2
    assert "iotstream:" in capsys.readouterr().err
