"""``iotstream analyze``: every analysis of some whole UTC days, written to the lake's derived
Delta tables (``tables``) by the DuckDB engine or by Spark."""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from ..config import load_settings
from ..errors import ConfigError
from ..times import epoch_seconds
from . import ENGINES, create_engine
from .base import DEFAULT_CELL, DEFAULT_HORIZONS, DERIVED_TABLES, MotionParams, Window, whole_days

DESCRIPTION = (
    "Find trips, stops, per-device day summaries, heatmaps and prediction errors in the lake's "
    "readings of whole UTC days (the days --from and --to fall on), and write them to the "
    "lake's Delta tables trips, stops, device_days, heatmap and prediction_eval, replacing "
    "those days' rows (of --devices, when given), so that a rerun replaces what it wrote. "
    "Times are epoch seconds or ISO 8601 dates or times (UTC without a zone). The tables "
    "keep times as UTC timestamps, like readings."
)


def parse_time(name: str, text: str) -> float:
    """Epoch seconds from ``--name``'s epoch seconds or ISO 8601 text (UTC by default)."""
    try:
        return epoch_seconds(text)
    except ValueError as exc:
        raise ConfigError(f"--{name}: {text!r}: {exc}") from None


def _horizons(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of seconds") from None
    if not values or not all(math.isfinite(v) and v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: horizons are seconds above 0")
    return values


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The ``analyze`` sub-command."""
    defaults = MotionParams()
    command = commands.add_parser(
        "analyze",
        help="analyse whole days of the lake into derived tables",
        description=DESCRIPTION,
    )
    command.add_argument("--engine", choices=ENGINES, default="duckdb", help="default: duckdb")
    command.add_argument("--from", dest="start", required=True, help="the first day (a time in it)")
    command.add_argument("--to", dest="end", help="the last day (a time in it; default: --from)")
    command.add_argument("--devices", help="comma-separated device ids (default: every device)")
    command.add_argument("--config", type=Path, help="TOML file with settings (flags and env win)")
    command.add_argument("--lake-url", help="the lake: a directory or s3://bucket/prefix")
    command.add_argument("--data-dir", help="the lake is <data-dir>/lake without --lake-url")
    motion = command.add_argument_group("motion (metres, seconds)")
    for flag, value, text in (
        ("--start-speed", defaults.start_speed, "m/s above which a robot starts moving"),
        ("--stop-speed", defaults.stop_speed, "m/s below which it stops (<= --start-speed)"),
        ("--min-stop", defaults.min_stop, "a shorter still spell does not end a trip"),
        ("--max-gap", defaults.max_gap, "a longer silence ends a trip and is a gap"),
        ("--smoothing", defaults.smoothing, "speeds are averaged over blocks this long"),
    ):
        motion.add_argument(flag, type=float, default=value, help=f"{text} (default: {value:g})")
    motion.add_argument(
        "--cell",
        type=float,
        default=DEFAULT_CELL,
        help=f"heatmap cell side (default: {DEFAULT_CELL:g})",
    )
    motion.add_argument(
        "--horizons",
        type=_horizons,
        default=DEFAULT_HORIZONS,
        help="prediction horizons in seconds, comma-separated (default: 1,3)",
    )
    command.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    settings = load_settings(args.config, lake_url=args.lake_url, data_dir=args.data_dir)
    url = settings.lake.url or str(settings.data_dir / "lake")
    start = parse_time("from", args.start)
    end = parse_time("to", args.end) if args.end is not None else start
    if end < start:
        raise ConfigError(f"--to ({args.end}) is before --from ({args.start})")
    devices = [d for d in args.devices.split(",") if d] if args.devices else None
    try:
        params = MotionParams(
            args.start_speed, args.stop_speed, args.min_stop, args.max_gap, args.smoothing
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if not (math.isfinite(args.cell) and args.cell > 0):
        raise ConfigError("--cell must be above 0")
    days = whole_days(Window(start, end, devices))
    first = datetime.fromtimestamp(days.start, UTC).date()
    last = datetime.fromtimestamp(days.end, UTC).date()
    which = ", ".join(devices) if devices else "every device"
    print(
        f"analysing {first} to {last} of {url} ({which}) with {args.engine}",
        file=sys.stderr,
        flush=True,
    )
    began = time.monotonic()
    with create_engine(args.engine, url) as engine:
        rows = engine.analyze(days, params, args.cell, args.horizons)
    counts = ", ".join(f"{name} {rows[name]}" for name in DERIVED_TABLES)
    print(f"wrote {counts} rows in {time.monotonic() - began:.1f} s", flush=True)
