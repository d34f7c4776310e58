"""The scenarios and how each is measured.

Every scenario starts a fresh system (so state, memory and counters are its own), connects
its WebSocket watchers, then runs the generator for ``warmup + window`` seconds:

- throughput: the server's ``readings`` counter (``GET /api/stats``) over the window;
- loss at the state: per device, messages counted by the server against messages sent, and
  the last ``seq`` in ``GET /api/coordinates`` against the last one sent, once the server
  has drained (``drainSeconds`` after the generator's last write);
- loss at WebSocket clients: frame ``seq`` gaps, resets to a snapshot, a device ``seq``
  going back, and each device's last ``seq`` against the last one sent;
- latency: each device state in each update frame, at each client, from ``sent`` to the
  frame's arrival, for states sent after the warm-up, and in two parts (``LATENCY_PARTS``);
- CPU (percent of one core, over the window) and RSS of every process of the system, the
  generator and the watchers, sampled from /proc;
- loss in the lake (embedded mode, whose archiver is on): once the server has stopped, its
  ``readings`` table against what the generator sent, per device and ``seq``.

``history`` loads one device-day into a lake and times history requests (``bench.lake``).
``analytics`` loads a fleet's day into a lake, analyses it with ``iotstream analyze`` on
DuckDB and on Spark, times the API's on-demand analyses and scores the prediction models
(``bench.analytics``).

``max-throughput`` and ``ceiling`` ramp the rate: up in steps until a step is not
*sustained*, then halve the interval between the best sustained and the first failed rate.
A step is sustained when the generator reached its rate, nothing was lost, the system took at
least ``KEEP_UP`` of the sent rate in the window, drained within ``DRAIN_LIMIT`` and (not for
the ceiling, whose subscriber only counts) latency stayed within ``P50_LIMIT``/``P99_LIMIT``,
and (embedded) the lake holds every reading sent exactly once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .ceiling import BareBroker
from .errors import BenchError
from .generator import Generator, Load
from .latency import LATENCY_PARTS, Histogram
from .resources import ResourceSampler, total
from .systems import DistributedServer, EmbeddedServer, Engines, System
from .watchers import Watchers

Kind = Literal["ceiling", "fixed", "ramp", "fanout", "memory", "history", "analytics"]

P50_LIMIT = 0.1
P99_LIMIT = 0.5
"""A step whose median latency exceeds ``P50_LIMIT`` or whose p99 exceeds ``P99_LIMIT``
(seconds) has fallen behind: latency broke. Both are far above the latency targets on
purpose: a system that keeps up shows a median of one or two WebSocket intervals and short
pauses in the tail; one that does not builds a backlog, and every percentile grows with it."""
DRAIN_LIMIT = 1.0
"""A step that needs longer than this to drain after the load was queueing."""
KEEP_UP = 0.95
"""A step is sustained when the system took at least this share of what was sent in the
window (the share left to noise covers when the counter is read under load)."""
SETTLE_TIMEOUT = 60.0
STALL = 5.0
"""Draining stops when the count did not move for this long."""


@dataclass(frozen=True)
class Timing:
    warmup: float
    window: float

    @property
    def duration(self) -> float:
        return self.warmup + self.window


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: Kind
    title: str
    devices: int
    rate: float
    """Hz per device; for a ramp, the first step's."""
    clients: int
    watcher_processes: int
    timing: Timing
    max_steps: int = 1
    history_seconds: float = 0.0
    """``history``: seconds of one device at 10 Hz loaded into the lake; ``analytics``: of
    each of ``devices``."""


def scenarios(quick: bool) -> dict[str, Scenario]:
    """Every scenario by name, sized for a full run or a few-second smoke run."""
    if quick:
        t = Timing(0.5, 1.5)
        return {
            s.name: s
            for s in (
                Scenario("ceiling", "ceiling", "ceiling: bare Mosquitto", 100, 20, 0, 0, t),
                Scenario("rate-1k", "fixed", "1k msg/s", 100, 10, 5, 1, t),
                Scenario("rate-10k", "fixed", "10k msg/s", 100, 20, 5, 1, t),
                Scenario("rate-50k", "fixed", "50k msg/s", 100, 50, 5, 1, t),
                Scenario("max-throughput", "ramp", "max sustained", 100, 20, 2, 1, t),
                Scenario("fanout-100", "fanout", "fan-out 100 clients", 100, 10, 10, 2, t),
                Scenario("fanout-500", "fanout", "fan-out 500 clients", 100, 10, 20, 2, t),
                Scenario("memory-10k", "memory", "10k devices", 1000, 1, 2, 1, t),
                Scenario(
                    "history",
                    "history",
                    "history: 10 device-minutes",
                    1,
                    10,
                    0,
                    0,
                    t,
                    history_seconds=600,
                ),
                Scenario(
                    "analytics",
                    "analytics",
                    "analytics: 10 devices x 10 minutes",
                    10,
                    10,
                    0,
                    0,
                    t,
                    history_seconds=600,
                ),
            )
        }
    fixed, ramp = Timing(2, 8), Timing(2, 5)
    return {
        s.name: s
        for s in (
            Scenario(
                "ceiling", "ceiling", "ceiling: bare Mosquitto", 1000, 40, 0, 0, Timing(1, 4), 10
            ),
            Scenario("rate-1k", "fixed", "1k msg/s", 1000, 1, 4, 1, fixed),
            Scenario("rate-10k", "fixed", "10k msg/s", 1000, 10, 4, 1, fixed),
            Scenario("rate-50k", "fixed", "50k msg/s", 1000, 50, 4, 1, fixed),
            Scenario("max-throughput", "ramp", "max sustained", 1000, 10, 4, 1, ramp, 8),
            Scenario("fanout-100", "fanout", "fan-out 100 clients", 1000, 10, 100, 2, fixed),
            Scenario("fanout-500", "fanout", "fan-out 500 clients", 1000, 10, 500, 4, fixed),
            Scenario("memory-10k", "memory", "10k devices", 10_000, 1, 4, 1, fixed),
            Scenario(
                "history",
                "history",
                "history: one device-day at 10 Hz",
                1,
                10,
                0,
                0,
                fixed,
                history_seconds=86_400,
            ),
            Scenario(
                "analytics",
                "analytics",
                "analytics: 10 devices x one day at 10 Hz",
                10,
                10,
                0,
                0,
                fixed,
                history_seconds=86_400,
            ),
        )
    }


QUICK_DEFAULT = ["ceiling", "rate-1k", "max-throughput", "fanout-100", "memory-10k"]
DISTRIBUTED = ["rate-1k", "rate-10k", "max-throughput"]
DISTRIBUTED_RUNS = {"rate-1k": 3, "rate-10k": 3}
"""Fixed rates run three times in the distributed mode: the spread is part of the figure."""
DISTRIBUTED_WARMUP = 10.0
"""Each distributed scenario creates its Kafka topics and consumer groups: the first seconds
measure their creation, not the steady state."""
KAFKA_WARMUP = (
    Load("bench-kafka-warmup", 1000, 10.0, 15.0),
    Load("bench-kafka-warmup", 1000, 10.0, 15.0),
    Load("bench-kafka-warmup", 1000, 1.0, 15.0),
)
"""What runs through a fresh Kafka before any distributed scenario, each load through a
throwaway distributed system of its own: its JVM compiles its hot paths as they are called (a
C2 compiler thread took 28 % of a core), which is Kafka's start, not what a running
deployment costs. After a minute at 1k msg/s, C2 still took 10 % of a core in the first
measured run; 30 s at 10k msg/s through one system left 6 %, and the run after it 1 %: every
system creates its topics and consumer groups, whose paths a second system warms as well.
After those two at 10k msg/s, C2 still took 13-14 % of a core in the first run at 1k msg/s
(a third at 10k: the same), 2 % in the next: the last system goes at 1k msg/s."""


def warm_up(engines: Engines, workdir: Path) -> None:
    """``KAFKA_WARMUP`` through throwaway distributed systems on ``engines``, one after the
    other."""
    for n, warmup in enumerate(KAFKA_WARMUP):
        load = replace(warmup, prefix=_prefix(f"kafka-warmup-{n}"))
        with (
            _system("distributed", workdir / load.prefix, engines, load.prefix) as system,
            Generator(system.mqtt_port, load) as generator,
        ):
            generator.start()
            generator.go(time.time() + 0.5)
            generator.finish()


def for_distributed(scenario: Scenario) -> Scenario:
    timing = Timing(max(scenario.timing.warmup, DISTRIBUTED_WARMUP), scenario.timing.window)
    return replace(scenario, timing=timing)


def _sleep_until(wall: float) -> None:
    time.sleep(max(0.0, wall - time.time()))


def _prefix(name: str) -> str:
    return f"bench-{name}-{uuid.uuid4().hex[:6]}"


def _read(count: Callable[[], int]) -> tuple[float, int]:
    """A counter and when it was read: the middle of a request that may wait on a busy server."""
    before = time.time()
    value = count()
    return (before + time.time()) / 2, value


def _group(report: dict[str, dict[str, Any]], names: list[str]) -> dict[str, Any]:
    parts = {name: report[name] for name in names if name in report}
    return {"processes": parts, "total": total(parts)}


def _settle(count: Callable[[], int], expected: int, last_write: float) -> tuple[int, float | None]:
    """Wait until ``count()`` reaches ``expected`` or stops moving; the final count and how
    long after ``last_write`` it got there (``None`` when it never did)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    seen, moved = count(), time.monotonic()
    while seen < expected and time.monotonic() < deadline and time.monotonic() - moved < STALL:
        time.sleep(0.05)
        now = count()
        if now != seen:
            seen, moved = now, time.monotonic()
    if seen < expected:
        return seen, None
    return seen, round(max(0.0, time.time() - last_write), 3)


def _websocket(
    reports: list[dict[str, Any]], sent: dict[str, int], seconds: float
) -> tuple[dict[str, Any], Histogram, dict[str, Any]]:
    """What the watchers saw, their latency histogram, and its parts (``LATENCY_PARTS``)."""
    histogram = Histogram()
    parts = {name: Histogram() for name in LATENCY_PARTS}
    final_mismatches = 0
    for report in reports:
        histogram.merge(report["latency"])
        for name, part in parts.items():
            part.merge(report[name])
        last = report["lastSeq"]
        final_mismatches += sum(1 for d, n in sent.items() if last.get(d) != n - 1)
    clients = sum(r["clients"] for r in reports)
    loss = {
        "missedFrames": sum(r["missedFrames"] for r in reports),
        "resets": sum(r["resets"] for r in reports),
        "seqRegressions": sum(r["seqRegressions"] for r in reports),
        "finalSeqMismatches": final_mismatches,
        "clientsBehind": sum(r["clientsBehind"] for r in reports),
        "clientsClosed": sum(r["clientsClosed"] for r in reports),
        "sizeMismatches": sum(r["sizeMismatches"] for r in reports),
    }
    sent_total = sum(sent.values())
    states = max((r["states"] - r["duplicateStates"] for r in reports), default=0)
    stream = {
        "clients": clients,
        "deflate": any(r["deflate"] for r in reports),
        "updateFrames": max((r["frames"] for r in reports), default=0),
        "statesDelivered": states,
        # Coalescing keeps only a device's newest state per frame: skipped states are not lost.
        "coalescedShare": round(1 - states / sent_total, 4) if sent_total else None,
        "megabytesPerClientPerSecond": round(
            sum(r["bytes"] for r in reports) / max(clients, 1) / max(seconds, 1e-9) / 2**20, 3
        ),
        "duplicateStates": sum(r["duplicateStates"] for r in reports),
        "quietAfterSeconds": max((r["quietAfter"] for r in reports), default=None),
        "loss": loss,
    }
    return stream, histogram, {name: part.summary() for name, part in parts.items()}


def measure(system: System, scenario: Scenario, load: Load) -> dict[str, Any]:
    """One run of ``load`` against a started ``system`` with the scenario's watchers."""
    timing = scenario.timing
    patience = timing.duration * 2 + SETTLE_TIMEOUT + 120
    watchers = Watchers(system.ws_url, scenario.clients, scenario.watcher_processes, patience)
    generator = Generator(system.mqtt_port, load)
    with watchers, generator:
        watchers.start(timeout=60)
        generator.start()
        server = system.pids()
        with ResourceSampler({**server, **generator.pids, **watchers.pids}) as sampler:
            before = int(system.stats()["readings"])
            start = time.time() + 0.3
            generator.go(start)
            _sleep_until(start + timing.warmup)
            begin, first = _read(lambda: int(system.stats()["readings"]))
            sampler.window_start()
            _sleep_until(start + timing.duration)
            sampler.window_end()
            end, last = _read(lambda: int(system.stats()["readings"]))
            sent_summary, sent = generator.finish()
            counted, drain = _settle(
                lambda: int(system.stats()["readings"]) - before,
                sent_summary["sent"],
                start + sent_summary["seconds"],
            )
            sampler.sample_now()
            resources = sampler.report()
            machine = sampler.machine()
        stats = system.stats()
        states = {s["deviceId"]: s for s in system.states()}
        reports = watchers.finish((start + timing.warmup, float("inf")), timeout=30)
    per_device = stats["perDevice"]
    state_loss = {
        "missing": sum(max(0, n - per_device.get(d, 0)) for d, n in sent.items()),
        "duplicates": sum(max(0, per_device.get(d, 0) - n) for d, n in sent.items()),
        "finalSeqMismatches": sum(
            1 for d, n in sent.items() if states.get(d, {}).get("seq") != n - 1
        ),
    }
    stream, histogram, latency_parts = _websocket(reports, sent, timing.duration)
    latency = histogram.summary()
    throughput = (last - first) / (end - begin)
    lossless = not any(state_loss.values()) and not any(stream["loss"].values())
    problems = _problems(sent_summary, lossless, drain, throughput, latency)
    taken = _taken(throughput, sent_summary)
    return {
        "devices": load.devices,
        "rateHz": load.rate,
        "targetRate": round(load.messages_per_second),
        "clients": scenario.clients,
        "timing": {"warmupSeconds": timing.warmup, "windowSeconds": timing.window},
        "loadAverage": round(os.getloadavg()[0], 2),
        "generator": sent_summary,
        **taken,
        "counted": counted,
        "drainSeconds": drain,
        "loss": {"state": state_loss, "websocket": stream.pop("loss")},
        "lossFree": lossless,
        "latency": latency,
        "latencyParts": latency_parts,
        "websocket": stream,
        "resources": {
            "server": _group(resources, list(server)),
            "generator": _group(resources, list(generator.pids)),
            "watchers": _group(resources, list(watchers.pids)),
            "machine": machine,
        },
        "sustained": not problems,
        "problems": problems,
        "sentPerDevice": sent,
    }


def _problems(
    sent: dict[str, Any],
    lossless: bool,
    drain: float | None,
    throughput: float,
    latency: dict[str, Any] | None = None,
) -> list[str]:
    """Why a run is not sustained (empty when it is); the ceiling has no latency to judge."""
    problems = []
    if sent["fellShort"]:
        problems.append("generator fell short")
    if not lossless:
        problems.append("loss")
    if drain is None or drain > DRAIN_LIMIT:
        problems.append("did not drain" if drain is None else f"drained in {drain:.1f} s")
    if latency is not None:
        if latency["p50Ms"] is None or latency["p50Ms"] > P50_LIMIT * 1000:
            problems.append("p50 above limit")
        if latency["p99Ms"] is None or latency["p99Ms"] > P99_LIMIT * 1000:
            problems.append("p99 above limit")
    if throughput < KEEP_UP * sent["achievedRate"]:
        problems.append("fell behind in the window")
    return problems


def _taken(window_rate: float, sent: dict[str, Any]) -> dict[str, int]:
    """A run's ``throughput``: what the system took in the window, but never more than the
    generator sent. A system behind at the window's start takes its backlog too (a step of
    68k msg/s once took 83k in its window): the window's own rate is ``windowRate``."""
    return {
        "throughput": round(min(window_rate, sent["achievedRate"])),
        "windowRate": round(window_rate),
    }


def measure_ceiling(broker: BareBroker, scenario: Scenario, load: Load) -> dict[str, Any]:
    """One run of ``load`` into the bare broker and its counting subscriber."""
    timing = scenario.timing
    with Generator(broker.port, load) as generator:
        generator.start()
        with ResourceSampler({**broker.pids, **generator.pids}) as sampler:
            before = broker.received
            start = time.time() + 0.3
            generator.go(start)
            _sleep_until(start + timing.warmup)
            begin, first = time.time(), broker.received
            sampler.window_start()
            _sleep_until(start + timing.duration)
            sampler.window_end()
            end, last = time.time(), broker.received
            sent_summary, _ = generator.finish()
            counted, drain = _settle(
                lambda: broker.received - before,
                sent_summary["sent"],
                start + sent_summary["seconds"],
            )
            resources = sampler.report()
            machine = sampler.machine()
    throughput = (last - first) / (end - begin)
    missing = max(0, sent_summary["sent"] - counted)
    problems = _problems(sent_summary, not missing, drain, throughput)
    taken = _taken(throughput, sent_summary)
    return {
        "devices": load.devices,
        "rateHz": load.rate,
        "targetRate": round(load.messages_per_second),
        "timing": {"warmupSeconds": timing.warmup, "windowSeconds": timing.window},
        "loadAverage": round(os.getloadavg()[0], 2),
        "generator": sent_summary,
        **taken,
        "counted": counted,
        "drainSeconds": drain,
        "loss": {"subscriber": {"missing": missing}},
        "lossFree": not missing,
        "resources": {
            "broker": _group(resources, ["mosquitto"]),
            "subscriber": _group(resources, ["subscriber"]),
            "generator": _group(resources, list(generator.pids)),
            "machine": machine,
        },
        "sustained": not problems,
        "problems": problems,
    }


def ramp(
    step: Callable[[float], dict[str, Any]],
    start: float,
    increment: float,
    resolution: float,
    cap: float,
    max_steps: int,
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Raise the rate (msg/s) until a step is not sustained, then bisect; the best sustained
    step and every step in the order run."""
    steps: list[dict[str, Any]] = []
    best: float | None = None
    failed: float | None = None
    rate = start
    while len(steps) < max_steps:
        result = step(rate)
        steps.append(result)
        if result["sustained"]:
            best = rate if best is None else max(best, rate)
        else:
            failed = rate if failed is None else min(failed, rate)
        if failed is None:
            rate += increment
            if rate > cap:
                break
            continue
        low = best or 0.0
        if failed - low <= resolution:
            break
        rate = round((low + failed) / 2 / 1000) * 1000
        if rate in (low, failed):
            break
    sustained = [s for s in steps if s["sustained"]]
    return max(sustained, key=lambda s: s["throughput"], default=None), steps


def _load(scenario: Scenario, rate: float | None = None) -> Load:
    per_device = scenario.rate if rate is None else rate / scenario.devices
    return Load(_prefix(scenario.name), scenario.devices, per_device, scenario.timing.duration)


@contextmanager
def _system(mode: str, workdir: Path, engines: Engines | None, prefix: str) -> Iterator[System]:
    system: EmbeddedServer | DistributedServer
    if mode == "embedded":
        system = EmbeddedServer(workdir)
    else:
        assert engines is not None
        system = DistributedServer(workdir, engines)
    with system:
        system.start(prefix)
        yield system


def run_fixed(
    scenario: Scenario,
    mode: str,
    workdir: Path,
    engines: Engines | None = None,
    rate: float | None = None,
) -> dict[str, Any]:
    """A fresh system of ``mode`` under the scenario's load (or ``rate`` msg/s in total)."""
    load = _load(scenario, rate)
    with _system(mode, workdir / load.prefix, engines, load.prefix) as system:
        result = measure(system, scenario, load)
        sent = result.pop("sentPerDevice")
    # The system has stopped, and its archiver (either mode runs one) wrote what it held.
    # Count the lake.
    from .lake import count_lake

    lake = count_lake(workdir / load.prefix / "data" / "lake", sent)
    result["lake"] = lake
    if lake["missing"] or lake["duplicates"]:
        result["problems"].append("lake loss")
        result["sustained"] = False
    return result


def run_ceiling(scenario: Scenario, workdir: Path) -> dict[str, Any]:
    with BareBroker(workdir / "ceiling", patience=3600) as broker:
        initial = scenario.devices * scenario.rate
        best, steps = ramp(
            lambda rate: measure_ceiling(broker, scenario, _load(scenario, rate)),
            start=initial,
            increment=initial / 2,
            resolution=initial / 8,
            cap=initial * 6,
            max_steps=scenario.max_steps,
        )
    return _ramp_result(scenario, best, steps)


def run_ramp(
    scenario: Scenario,
    workdir: Path,
    ceiling: float | None,
    mode: str = "embedded",
    engines: Engines | None = None,
) -> dict[str, Any]:
    """Max sustained throughput of ``mode``, stepped in tenths of the ceiling (from 3 of
    them embedded, from 1 distributed)."""
    unit = ceiling / 10 if ceiling else 10_000.0
    lowest = 3 * unit if mode == "embedded" else unit
    first = scenario.devices * scenario.rate if scenario.max_steps == 1 else max(10_000.0, lowest)
    best, steps = ramp(
        lambda rate: run_fixed(scenario, mode, workdir, engines, rate=rate),
        start=round(first / 1000) * 1000,
        increment=round(unit / 1000) * 1000,
        resolution=unit / 2,
        cap=(ceiling or 200_000.0) * 1.2,
        max_steps=scenario.max_steps,
    )
    return _ramp_result(scenario, best, steps)


def _ramp_result(
    scenario: Scenario, best: dict[str, Any] | None, steps: list[dict[str, Any]]
) -> dict[str, Any]:
    summary = [
        {
            "targetRate": s["targetRate"],
            "throughput": s["throughput"],
            "windowRate": s.get("windowRate"),
            "generatorRate": s["generator"]["achievedRate"],
            "latency": s.get("latency"),
            **({"latencyParts": s["latencyParts"]} if "latencyParts" in s else {}),
            "drainSeconds": s["drainSeconds"],
            "cpuPercent": {
                name: group["total"]["cpuPercent"]
                for name, group in s["resources"].items()
                if name != "machine"
            },
            "machine": s["resources"]["machine"],
            "sustained": s["sustained"],
            "problems": s["problems"],
            **({"lake": s["lake"]} if "lake" in s else {}),
        }
        for s in steps
    ]
    result: dict[str, Any] = (
        dict(best) if best is not None else {"throughput": None, "sustained": False}
    )
    result["steps"] = summary
    if best is None:
        result["problems"] = ["no step was sustained"]
    return result


def run(
    scenario: Scenario, mode: str, workdir: Path, ceiling: float | None, engines: Engines | None
) -> dict[str, Any]:
    """One scenario in one mode, with its name, kind and the throughput's ratio to the ceiling."""
    started = time.time()
    if scenario.kind == "ceiling":
        result = run_ceiling(scenario, workdir)
    elif scenario.kind == "ramp":
        result = run_ramp(scenario, workdir, ceiling, mode, engines)
    elif scenario.kind == "history":
        from .lake import run_history

        result = run_history(workdir / "history", scenario.history_seconds)
    elif scenario.kind == "analytics":
        from .analytics import run_analytics

        result = run_analytics(workdir / "analytics", scenario.devices, scenario.history_seconds)
    else:
        result = run_fixed(scenario, mode, workdir, engines)
    throughput = result.get("throughput")
    header = {
        "name": scenario.name,
        "title": scenario.title,
        "kind": scenario.kind,
        "mode": "bare mosquitto" if scenario.kind == "ceiling" else mode,
        "seconds": round(time.time() - started, 1),
        "ratioToCeiling": round(throughput / ceiling, 3) if throughput and ceiling else None,
    }
    if scenario.kind == "ceiling" and throughput:
        header["ratioToCeiling"] = 1.0
    return {**header, **result}


def failed(scenario: Scenario, mode: str, error: BenchError) -> dict[str, Any]:
    return {
        "name": scenario.name,
        "title": scenario.title,
        "kind": scenario.kind,
        "mode": mode,
        "error": str(error),
    }
