"""The ``python -m bench`` command: run the scenarios, write the results.

Importing this module is cheap (no numpy or matplotlib): ``--help`` and a bad option answer at
once, and the scenarios are imported only when they run.
"""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import HarnessError

from .errors import BenchError

DEFAULT_OUT = Path("bench/results")
NAMES = [
    "ceiling",
    "rate-1k",
    "rate-10k",
    "rate-50k",
    "max-throughput",
    "fanout-100",
    "fanout-500",
    "memory-10k",
    "history",
    "analytics",
    "commands",
    "auth",
    "faults",
]
DISTRIBUTED_ONLY = ["faults"]
"""Scenarios of the distributed mode alone, run with --distributed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few-second smoke run with small loads (default scenarios: ceiling, rate-1k, "
        "max-throughput, fanout-100, memory-10k)",
    )
    parser.add_argument(
        "--scenarios",
        nargs="+",
        choices=NAMES,
        metavar="NAME",
        help=f"run only these, the ceiling first and the rest in this order "
        f"({', '.join(NAMES)}; default: all)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"where results.json, results.md and the plots go (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--distributed",
        action="store_true",
        help="also run rate-1k, rate-10k and max-throughput on bridge + processor + archiver + "
        "api with Kafka and Redis, then faults (each engine restarted and each role killed "
        "under load); of those, only the ones --scenarios names when it is given (reported as "
        "not run, with the reason, when java or mvn is missing)",
    )


def build_parser(prog: str = "python -m bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Start iotstream on free loopback ports, drive it with simulated robots, "
        "and write throughput, loss, latency, CPU and memory per scenario.",
    )
    add_arguments(parser)
    return parser


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _line(result: dict[str, Any]) -> str:
    if "error" in result:
        return f"  failed: {result['error']}"
    if result.get("kind") == "history":
        lake = result["lake"]
        timed = ", ".join(
            f"{q['name']} {q['points']:,} points {q['clientMs']['median']} ms "
            f"(server {q['serverMs']['median']} ms)"
            for q in result["queries"]
        )
        return f"  {lake['bytesPerReading']} bytes/reading on disk; {timed}"
    if result.get("kind") == "analytics":
        from .analytics import summary_line

        return summary_line(result)
    latency = result.get("latency") or {}
    generator = result.get("generator") or {}
    return (
        f"  {result.get('throughput') or 0:,} msg/s (generator {generator.get('achievedRate', 0):,}"
        f"{', SHORT' if generator.get('fellShort') else ''}), p99 {latency.get('p99Ms')} ms, "
        f"loss-free {result.get('lossFree')}, sustained {result.get('sustained')}"
        + (f" ({', '.join(result['problems'])})" if result.get("problems") else "")
        + (
            f", lake {result['lake']['missing']} lost / {result['lake']['duplicates']} dup"
            if "lake" in result
            else ""
        )
    )


def attempt_commands(work: Path) -> dict[str, Any]:
    """The tracked-command scenario (``bench.commands``); kept beside the throughput
    scenarios in results.json, under ``commands``."""
    from .commands import run_commands, summary_line

    _say("commands (embedded) ...")
    began = time.monotonic()
    try:
        result = run_commands(work / "commands")
    except (BenchError, HarnessError, OSError) as exc:
        _say(f"  failed: {exc}")
        return {"kind": "commands", "error": str(exc)}
    _say(summary_line(result) + f" [{time.monotonic() - began:.0f} s]")
    return result


def attempt_auth() -> dict[str, Any]:
    """What authentication costs (``bench.auth``): REST and WebSocket-handshake latency with
    auth off and on; kept in results.json under ``auth``."""
    from .auth import run_auth, summary_line

    _say("auth (in-process API) ...")
    began = time.monotonic()
    try:
        result = run_auth()
    except OSError as exc:
        _say(f"  failed: {exc}")
        return {"kind": "auth", "error": str(exc)}
    _say(summary_line(result) + f" [{time.monotonic() - began:.0f} s]")
    return result


def attempt_faults(work: Path, quick: bool) -> dict[str, Any]:
    """The pipeline under faults at load (``bench.faults``), on engines of its own; kept in
    results.json under ``faults``."""
    from .faults import FULL, QUICK, run_faults, summary_line

    _say("faults (distributed, each engine restarted and each role killed under load) ...")
    began = time.monotonic()
    try:
        result = run_faults(work / "faults", QUICK if quick else FULL)
    except (BenchError, HarnessError, OSError) as exc:
        _say(f"  failed: {exc}")
        return {"kind": "faults", "error": str(exc)}
    _say(summary_line(result) + f" [{time.monotonic() - began:.0f} s]")
    return result


def run(args: argparse.Namespace, command: str) -> int:
    """Run what ``args`` asks for and write the results; the exit status.

    SIGTERM stops the run like Ctrl-C: every process it started is stopped on the way out.
    """
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run(args, command)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _run(args: argparse.Namespace, command: str) -> int:
    from . import report
    from .machine import describe, load_average, source
    from .scenarios import (
        DISTRIBUTED,
        DISTRIBUTED_RUNS,
        KAFKA_WARMUP,
        QUICK_DEFAULT,
        failed,
        for_distributed,
        scenarios,
        warm_up,
    )
    from .scenarios import run as run_scenario
    from .systems import Engines, distributed_unavailable

    profile = scenarios(args.quick)
    names = args.scenarios or (QUICK_DEFAULT if args.quick else NAMES)
    results: dict[str, Any] = {
        "version": 1,
        "profile": "quick" if args.quick else "full",
        "command": command,
        "startedAt": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": describe(),
        "source": source(),
        "sourceAfter": None,
        "loadAverageBefore": load_average(),
        "ceiling": None,
        "scenarios": [],
        "distributed": {"run": False, "reason": "not asked for (--distributed)"},
    }
    ceiling: float | None = None
    with tempfile.TemporaryDirectory(prefix="iotstream-bench-") as scratch:
        work = Path(scratch)

        def attempt(name: str, mode: str, engines: Engines | None = None) -> dict[str, Any]:
            scenario = profile[name] if engines is None else for_distributed(profile[name])
            _say(f"{name} ({mode}) ...")
            began = time.monotonic()
            try:
                result = run_scenario(scenario, mode, work, ceiling, engines)
            except (BenchError, HarnessError, OSError) as exc:
                result = failed(scenario, mode, BenchError(str(exc)))
            _say(_line(result) + f" [{time.monotonic() - began:.0f} s]")
            return result

        if "ceiling" in names:
            results["ceiling"] = attempt("ceiling", "bare mosquitto")
            ceiling = results["ceiling"].get("throughput")
        for name in names:
            if name == "commands":
                results["commands"] = attempt_commands(work)
            elif name == "auth":
                results["auth"] = attempt_auth()
            elif name != "ceiling" and name not in DISTRIBUTED_ONLY:
                results["scenarios"].append(attempt(name, "embedded"))
        if args.distributed:
            reason = distributed_unavailable()
            shared = [n for n in DISTRIBUTED if args.scenarios is None or n in args.scenarios]
            if reason is not None:
                results["distributed"] = {"run": False, "reason": reason}
            elif shared:
                _say("starting Mosquitto, Redis and Kafka for the distributed mode ...")
                engines = Engines(work / "engines")
                try:
                    with engines:
                        results["distributed"] = {"run": True, "reason": None}
                        if not args.quick:
                            phases = ", ".join(
                                f"{w.duration:g} s at {w.messages_per_second:,.0f} msg/s"
                                for w in KAFKA_WARMUP
                            )
                            _say(f"warming Kafka up (a system each: {phases}) ...")
                            warm_up(engines, work)
                        for name in shared:
                            for _ in range(1 if args.quick else DISTRIBUTED_RUNS.get(name, 1)):
                                results["scenarios"].append(attempt(name, "distributed", engines))
                except HarnessError as exc:
                    results["distributed"] = {"run": False, "reason": f"engines failed: {exc}"}
            if reason is None and "faults" in names:
                if not shared:
                    results["distributed"] = {"run": True, "reason": None}
                results["faults"] = attempt_faults(work, args.quick)
            elif reason is None and not shared:
                results["distributed"] = {"run": False, "reason": "none of --scenarios is one"}
    results["finishedAt"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["loadAverageAfter"] = load_average()
    results["sourceAfter"] = source()
    results["targets"] = report.evaluate_targets(results)
    for path in report.write_all(results, args.out):
        _say(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None, prog: str = "python -m bench") -> int:
    arguments = sys.argv[1:] if argv is None else argv
    args = build_parser(prog).parse_args(arguments)
    try:
        return run(args, f"{prog} {shlex.join(arguments)}".strip())
    except KeyboardInterrupt:
        _say("interrupted; everything the bench started is stopped")
        return 130
    except (BenchError, HarnessError) as exc:
        _say(f"bench: {exc}")
        return 2
