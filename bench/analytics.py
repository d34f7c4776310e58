"""Analytics on the lake: a fleet's day analysed by both engines, the API's on-demand queries,
and how well each model predicts where a robot will be.

- ``run_analytics``: ``devices`` robots x ``seconds`` at 10 Hz of varied motion (drives at
  0.5-1.5 m/s with turns, speed ramps and stops, odometry noise, two silences longer than a
  gap) are loaded into a fresh lake with ``DeltaLake.append`` (a fleet-hour a commit) and
  compacted. Then ``iotstream analyze`` runs as a subprocess, on DuckDB and on Spark
  (``local[2]``, when Java and the jars are there), each timed from start to exit; then the
  on-demand queries the API makes run on a ``DuckDBEngine`` in process, timed as medians of
  ``REPEATS`` after one untimed run: one device-day's trips and summary (in one call, and as
  two), and the fleet's heatmap of the day.
- ``prediction_errors``: ADE and FDE of every model at 1 s and 3 s on the simulator's paths
  (``iotstream.simulator.Fleet``) and on ``RECORDED``, a small set of varied motion kept in
  the repository (straight drives, turns, stops; ``record`` writes it again, the same).
"""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .errors import BenchError

RATE_HZ = 10.0
REPEATS = 7
HORIZONS = (1.0, 3.0)
RECORDED = Path(__file__).parent / "data" / "varied_motion.csv.gz"
"""Four robots, ten minutes each at 10 Hz, of ``varied_track`` (seed 11)."""
APPEND_SECONDS = 3600.0
TARGETS_MS = {
    "analyzeDuckdb": 15_000.0,
    "analyzeSpark": 90_000.0,
    "deviceDay": 300.0,
    "fleetHeatmap": 1_000.0,
}

Floats = npt.NDArray[np.float64]


FLOOR = (80.0, 50.0)
"""Metres: robots stay on a floor this size, steering back toward its middle near a wall."""


def varied_track(
    seconds: float, rng: np.random.Generator, rate: float = RATE_HZ, noise: float = 0.005
) -> tuple[Floats, Floats, Floats]:
    """Seconds since the start, x and y (metres, to the millimetre) of a robot on ``FLOOR``
    that stops for 5-90 s, drives for 10-120 s at 0.5-1.5 m/s (0.5 m/s² ramps) turning now
    and then (up to 0.6 rad/s for 2-15 s), and so on; position noise of ``noise`` metres."""
    n = int(seconds * rate) + 1
    speed = np.zeros(n)
    turn = np.zeros(n)
    k = 0
    driving = bool(rng.integers(2))
    while k < n:
        if not driving:
            k += int(rng.uniform(5, 90) * rate)
        else:
            steps = int(rng.uniform(10, 120) * rate)
            cruise = rng.uniform(0.5, 1.5)
            ramp = max(1, int(cruise / 0.5 * rate))
            profile = np.full(steps, cruise)
            head = min(ramp, steps // 2)
            profile[:head] = np.linspace(0, cruise, head, endpoint=False) + cruise / head
            profile[steps - head :] = np.linspace(cruise, 0, head, endpoint=False)
            speed[k : k + steps] = profile[: max(0, min(steps, n - k))]
            j = k
            while j < k + steps:
                span = int(rng.uniform(2, 15) * rate)
                turn[j : min(j + span, k + steps)] = (
                    0.0 if rng.random() < 0.5 else rng.uniform(-0.6, 0.6)
                )
                j += span
            k += steps
        driving = not driving
    x, y = _steer(speed.tolist(), turn.tolist(), rng.uniform(-math.pi, math.pi), 1.0 / rate)
    x = np.round(x + rng.normal(0, noise, n), 3)
    y = np.round(y + rng.normal(0, noise, n), 3)
    return np.arange(n) / rate, x, y


def _steer(
    speed: list[float], turn: list[float], heading: float, dt: float
) -> tuple[Floats, Floats]:
    """Positions from speeds and planned turn rates, from the floor's middle; within 5 m of a
    wall the robot turns toward the middle instead (at most 0.8 rad/s)."""
    width, height = FLOOR
    x, y = width / 2, height / 2
    xs, ys = [0.0] * len(speed), [0.0] * len(speed)
    for k, (v, w) in enumerate(zip(speed, turn, strict=True)):
        xs[k], ys[k] = x, y
        if v > 0 and not (5 < x < width - 5 and 5 < y < height - 5):
            error = math.remainder(math.atan2(height / 2 - y, width / 2 - x) - heading, math.tau)
            w = max(-0.8, min(0.8, 2 * error))
        heading += w * dt
        x += v * math.cos(heading) * dt
        y += v * math.sin(heading) * dt
    return np.array(xs), np.array(ys)


def record(path: Path = RECORDED) -> None:
    """Write the recorded set: four robots, ten minutes each."""
    rng = np.random.default_rng(11)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["device", "t", "x", "y"])
    for robot in range(4):
        t, x, y = varied_track(600, rng)
        for row in zip(t, x, y, strict=True):
            writer.writerow(
                [f"robot{robot + 1}", f"{row[0]:.1f}", f"{row[1]:.3f}", f"{row[2]:.3f}"]
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime 0: the same data makes the same file.
    path.write_bytes(gzip.compress(out.getvalue().encode(), mtime=0))


def recorded_tracks(path: Path = RECORDED) -> dict[str, tuple[Floats, Floats, Floats]]:
    columns: dict[str, tuple[list[float], list[float], list[float]]] = {}
    with gzip.open(path, "rt") as text:
        for row in csv.DictReader(text):
            t, x, y = columns.setdefault(row["device"], ([], [], []))
            t.append(float(row["t"]))
            x.append(float(row["x"]))
            y.append(float(row["y"]))
    return {d: (np.array(t), np.array(x), np.array(y)) for d, (t, x, y) in columns.items()}


def simulator_tracks(robots: int, seconds: float) -> dict[str, tuple[Floats, Floats, Floats]]:
    """The simulator's robots (seed 1, as ``iotstream run --simulate``) at 10 Hz, to the mm."""
    from iotstream.simulator import Fleet

    fleet = Fleet(robots, seed=1)
    n = int(seconds * RATE_HZ)
    xs, ys = np.zeros((robots, n)), np.zeros((robots, n))
    for k in range(n):
        fleet.step(1 / RATE_HZ)
        for i, robot in enumerate(fleet.robots):
            xs[i, k], ys[i, k] = robot.x, robot.y
    t = np.arange(n) / RATE_HZ
    return {
        robot.device_id: (t, np.round(xs[i], 3), np.round(ys[i], 3))
        for i, robot in enumerate(fleet.robots)
    }


def _scores(tracks: dict[str, tuple[Floats, Floats, Floats]]) -> dict[str, Any]:
    from iotstream.analytics.prediction import best_model, combine, evaluate_track

    scores = combine(evaluate_track(t, x, y, HORIZONS) for t, x, y in tracks.values())
    return {
        "tracks": len(tracks),
        "readings": sum(len(t) for t, _, _ in tracks.values()),
        "models": [
            {
                "model": s.model,
                "horizon": s.horizon,
                "ade": round(s.ade, 4),
                "fde": round(s.fde, 4),
                "samples": s.samples,
            }
            for s in scores
        ],
        "best": {str(h): best_model(scores, h) for h in HORIZONS},
    }


def prediction_errors(robots: int = 20, seconds: float = 1200) -> dict[str, Any]:
    return {
        "simulator": _scores(simulator_tracks(robots, seconds)),
        "recorded": _scores(recorded_tracks()),
    }


# --- the fleet-day ---------------------------------------------------------------------------


def _fleet(devices: int, seconds: float, start: float) -> Iterator[tuple[str, Any, Any, Any]]:
    rng = np.random.default_rng(21)
    for d in range(devices):
        s, x, y = varied_track(seconds - 1 / RATE_HZ, rng)
        keep = np.ones(len(s), dtype=bool)
        for _ in range(2):  # two silences longer than max_gap
            at = rng.uniform(0.1, 0.9) * seconds
            keep &= (s < at) | (s > at + 120)
        jitter = rng.integers(0, 4000, len(s)) / 1e6
        yield f"robot-{d + 1:04d}", (start + s + jitter)[keep], x[keep], y[keep]


async def _load(url: str, devices: int, seconds: float, start: float) -> dict[str, Any]:
    from iotstream.lake.delta import DeltaLake
    from iotstream.models import Batch, DeviceId, Reading

    tracks = list(_fleet(devices, seconds, start))
    began = time.monotonic()
    readings = 0
    async with DeltaLake(url) as lake:
        hour = start
        while hour < start + seconds:
            batch = []
            for device, ts, x, y in tracks:
                chosen = np.flatnonzero((ts >= hour) & (ts < hour + APPEND_SECONDS))
                name = DeviceId(device)
                batch += [
                    Reading(name, {"x": float(x[i]), "y": float(y[i])}, float(ts[i]),
                            float(ts[i]) + 0.02)
                    for i in chosen
                ]  # fmt: skip
            readings += len(batch)
            await lake.append(Batch(readings=batch))
            hour += APPEND_SECONDS
        loaded = time.monotonic() - began
        began = time.monotonic()
        await lake.compact()
        compacted = time.monotonic() - began
    return {
        "devices": devices,
        "seconds": seconds,
        "readings": readings,
        "loadSeconds": round(loaded, 1),
        "compactSeconds": round(compacted, 1),
    }


def _spark_unavailable() -> str | None:
    from harness import HarnessError, find_java, find_program

    try:
        find_java()
        find_program("mvn", "apt-get install -y maven")
        import pyspark  # noqa: F401
    except (HarnessError, ImportError) as exc:
        return str(exc)
    return None


def _analyze(engine: str, url: str, day: str, env: dict[str, str]) -> dict[str, Any]:
    """``iotstream analyze`` as a subprocess: wall seconds from start to exit, and its report."""
    command = [sys.executable, "-m", "iotstream", "analyze", "--engine", engine,
               "--lake-url", url, "--from", day]  # fmt: skip
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    seconds = time.perf_counter() - began
    if done.returncode != 0:
        raise BenchError(f"iotstream analyze --engine {engine} failed: {done.stderr[-2000:]}")
    target = TARGETS_MS["analyzeDuckdb" if engine == "duckdb" else "analyzeSpark"]
    return {
        "engine": engine,
        "seconds": round(seconds, 2),
        "wrote": done.stdout.strip(),
        "targetMs": target,
        "met": seconds * 1000 <= target,
    }


def _timed(fn: Callable[[int], Any], repeats: int = REPEATS) -> dict[str, Any]:
    """Median, min and max ms of ``fn(1)`` .. ``fn(repeats)`` after an untimed ``fn(0)``."""
    fn(0)
    times = []
    for n in range(1, repeats + 1):
        began = time.perf_counter()
        fn(n)
        times.append((time.perf_counter() - began) * 1000)
    return {
        "medianMs": round(statistics.median(times), 1),
        "minMs": round(min(times), 1),
        "maxMs": round(max(times), 1),
    }


def _queries(url: str, start: float, seconds: float) -> dict[str, Any]:
    from iotstream.analytics import DuckDBEngine, MotionParams, Window

    params = MotionParams()
    end = start + seconds - 1e-6

    def device(n: int) -> Window:
        # A window of its own each time (a microsecond apart): nothing is reused across runs.
        return Window(start, end - n * 1e-6, ["robot-0001"])

    fleet = Window(start, end)
    with DuckDBEngine(url) as engine:
        motion = engine.motion(device(0), params)
        together = _timed(lambda n: engine.motion(device(n), params))
        apart = _timed(
            lambda n: (engine.trips(device(n), params), engine.summaries(device(n), params))
        )
        cells = engine.heatmap(fleet, 0.5, params.max_gap)
        heatmap = _timed(lambda n: engine.heatmap(fleet, 0.5, params.max_gap))
    return {
        "deviceDay": {
            **together,
            "title": "one device-day: trips, stops and summary (one call)",
            "trips": len(motion.trips),
            "stops": len(motion.stops),
            "targetMs": TARGETS_MS["deviceDay"],
            "met": together["medianMs"] <= TARGETS_MS["deviceDay"],
        },
        "deviceDayTwoCalls": {
            **apart,
            "title": "one device-day: trips, then summary (two calls; the second reuses the first)",
        },
        "fleetHeatmap": {
            **heatmap,
            "title": "the fleet's day as a heatmap of 0.5 m cells",
            "cells": len(cells),
            "targetMs": TARGETS_MS["fleetHeatmap"],
            "met": heatmap["medianMs"] <= TARGETS_MS["fleetHeatmap"],
        },
    }


def run_analytics(
    workdir: Path, devices: int, seconds: float, spark: bool = True
) -> dict[str, Any]:
    """Load the fleet (from the start of yesterday), analyse it (on Spark too, when ``spark``
    and it can run here), time the queries, score the models."""
    day = 86_400.0
    start = (time.time() // day - 1) * day
    lake = workdir / "lake"
    if lake.exists():
        shutil.rmtree(lake)
    loaded = asyncio.run(_load(str(lake), devices, seconds, start))
    day_text = datetime.fromtimestamp(start, UTC).date().isoformat()
    env = dict(os.environ)
    runs = [_analyze("duckdb", str(lake), day_text, env)]
    reason = _spark_unavailable() if spark else "not asked for"
    if reason is None:
        from harness.engines import ensure_spark_jars

        env["IOTSTREAM_SPARK_JARS"] = str(ensure_spark_jars())
        env.setdefault("IOTSTREAM_SPARK_MASTER", "local[2]")
        env.setdefault("PYSPARK_PYTHON", sys.executable)
        runs.append(_analyze("spark", str(lake), day_text, env))
    return {
        "lake": loaded,
        "analyze": runs,
        "spark": {"run": reason is None, "reason": reason},
        "queries": _queries(str(lake), start, seconds),
        "prediction": prediction_errors(20, min(1200.0, seconds)),
    }


def summary_line(result: dict[str, Any]) -> str:
    """One line for the console."""
    runs = ", ".join(f"analyze {r['engine']} {r['seconds']} s" for r in result["analyze"])
    queries = result["queries"]
    best = result["prediction"]["simulator"]["best"]
    return (
        f"  {result['lake']['readings']:,} readings; {runs}; device-day "
        f"{queries['deviceDay']['medianMs']} ms, fleet heatmap "
        f"{queries['fleetHeatmap']['medianMs']} ms; best model {best}"
    )


if __name__ == "__main__":
    record()
