"""The ``iotstream`` command line: ``run`` and ``simulate``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import shlex
import sys
from pathlib import Path

from .config import MqttEndpoint, Settings, load_settings
from .errors import IotstreamError


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting; the help text comes from the setting's description."""
    parser.add_argument("--config", type=Path, help="TOML file with settings (flags and env win)")
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        env = f"IOTSTREAM_{name.upper()}"
        shown = ",".join(default) if isinstance(default, list) else default
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            dest=name,
            metavar=name.split("_")[-1].upper(),
            default=None,
            help=f"{info.description} (default: {shown}; env {env})",
        )


def _serve(args: argparse.Namespace) -> None:
    from .server import EMBEDDED, serve

    overrides = {name: getattr(args, name) for name in Settings.model_fields}
    settings = load_settings(args.config, **overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if settings.log_level != "debug":
        # gmqtt reports every connect and subscribe at INFO.
        logging.getLogger("gmqtt").setLevel(logging.WARNING)
    roles = EMBEDDED if args.command == "run" else frozenset({args.command})
    asyncio.run(serve(settings, roles))


def _simulate(args: argparse.Namespace) -> None:
    from .simulator import Fleet, simulate

    endpoint = MqttEndpoint.parse(args.mqtt_url)
    fleet = Fleet(args.devices, seed=args.seed)
    print(f"simulating {args.devices} robots at {args.rate} Hz on {args.mqtt_url}", flush=True)
    asyncio.run(simulate(fleet, endpoint, args.rate, args.duration))


def _bench(args: argparse.Namespace) -> None:
    from .bench import run

    raise SystemExit(run(args, "iotstream " + shlex.join(sys.argv[1:])))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iotstream", description="Real-time coordinate streaming for fleets of IoT robots."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    layering = (
        "Every option can also be set as an IOTSTREAM_* environment variable or in a TOML "
        "file (--config); flags beat the environment, which beats the file."
    )
    roles = {
        "run": "Start the whole system in one process: broker, pipeline, API and WebSocket. "
        "With --kafka-bootstrap and --redis-url it runs every role on those engines.",
        "bridge": "MQTT to Kafka: needs --mqtt-url and --kafka-bootstrap. A QoS 1 message is "
        "acknowledged only after Kafka confirmed it.",
        "processor": "Kafka to Redis: needs --kafka-bootstrap and --redis-url. Offsets are "
        "committed after the Redis writes.",
        "api": "REST, WebSocket and commands served from Redis: needs --redis-url and --mqtt-url.",
    }
    for name, description in roles.items():
        role = commands.add_parser(
            name, help=description.split(":")[0], description=f"{description} {layering}"
        )
        _add_settings_flags(role)
        role.set_defaults(handler=_serve)

    sim = commands.add_parser("simulate", help="publish smooth robot paths over MQTT")
    sim.add_argument("--devices", type=int, default=20, help="number of robots (default: 20)")
    sim.add_argument("--rate", type=float, default=5.0, help="updates per second per robot")
    sim.add_argument("--mqtt-url", default="mqtt://127.0.0.1:3123", help="broker to publish to")
    sim.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sim.add_argument("--seed", type=int, default=None, help="seed for reproducible paths")
    sim.set_defaults(handler=_simulate)

    from .bench import add_arguments as add_bench_arguments

    bench = commands.add_parser(
        "bench",
        help="measure throughput, loss, latency, CPU and memory",
        description="Start iotstream on free loopback ports, drive it with simulated robots, "
        "and write bench/results/ (see BENCHMARKS.md).",
    )
    add_bench_arguments(bench)
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except IotstreamError as exc:
        print(f"iotstream: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc
    except KeyboardInterrupt:
        pass
