"""The analytics bench: its recorded set is what its generator makes, and a small run
measures everything its report shows (timings are the bench's business, not asserted)."""

from __future__ import annotations

from pathlib import Path

from bench.analytics import RECORDED, record, recorded_tracks, run_analytics
from bench.report import _analytics, evaluate_targets
from iotstream.analytics import MODELS


def test_the_recorded_set_is_what_the_generator_makes(tmp_path: Path) -> None:
    record(tmp_path / "again.csv.gz")
    assert (tmp_path / "again.csv.gz").read_bytes() == RECORDED.read_bytes()
    tracks = recorded_tracks()
    assert len(tracks) == 4
    for t, x, y in tracks.values():
        assert len(t) == len(x) == len(y) == 6001
        # It drives and it stops: some tenths of a second move, and some do not.
        steps = ((x[1:] - x[:-1]) ** 2 + (y[1:] - y[:-1]) ** 2) ** 0.5
        assert (steps > 0.05).mean() > 0.2
        assert (steps < 0.02).mean() > 0.1


def test_a_small_run_measures_what_the_report_shows(tmp_path: Path) -> None:
    result = run_analytics(tmp_path, devices=3, seconds=900, spark=False)
    assert result["lake"]["readings"] > 3 * 900 * 10 * 0.6
    [duckdb] = result["analyze"]
    assert duckdb["engine"] == "duckdb"
    assert "trips" in duckdb["wrote"] and "prediction_eval 18 rows" in duckdb["wrote"]
    assert result["spark"] == {"run": False, "reason": "not asked for"}
    assert result["queries"]["deviceDay"]["trips"] > 0
    assert result["queries"]["fleetHeatmap"]["cells"] > 0
    for paths in ("simulator", "recorded"):
        scores = result["prediction"][paths]
        assert [m["model"] for m in scores["models"]] == [m for m in MODELS for _ in (1, 3)]
        assert all(m["samples"] > 0 for m in scores["models"])
    found = {"name": "analytics", "kind": "analytics", "mode": "embedded", **result}
    results = {"scenarios": [found], "ceiling": None}
    text = "\n".join(_analytics(results))
    assert "## Analytics" in text and "kalman" in text
    targets = {t["target"]: t for t in evaluate_targets(results)}
    assert any("DuckDB" in name and t["value"] is not None for name, t in targets.items())
    assert any("Spark" in name and t["met"] is None for name, t in targets.items())
