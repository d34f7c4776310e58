"""The ``iotstream`` command line: ``run``, one sub-command per role, and ``simulate``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from . import logs
from .analytics import command as analyze_command
from .auth import command as auth_command
from .broker import command as devices_command
from .config import OPTIONS, MqttEndpoint, load_settings
from .errors import IotstreamError
from .server import ROLES, Role, default_metrics_port, role_names, serve

RUN_DETAIL = (
    "broker, pipeline, API and WebSocket. "
    "With --kafka-bootstrap and --redis-url it runs every role on those engines."
)
LAYERING = (
    "Every option can also be set as an IOTSTREAM_* environment variable or in a TOML "
    "file (--config); flags beat the environment, which beats the file."
)


def _add_settings_flags(parser: argparse.ArgumentParser, roles: Sequence[Role]) -> None:
    """One flag per setting, under its group; the help text comes from the setting."""
    parser.add_argument("--config", type=Path, help="TOML file with settings (flags and env win)")
    metrics_port = default_metrics_port(roles)
    shown_defaults: dict[str, object] = {
        "metrics_port": "the --http-port listener" if metrics_port is None else metrics_port
    }
    groups: dict[str, argparse._ArgumentGroup] = {}
    for option in OPTIONS.values():
        if option.title not in groups:
            groups[option.title] = parser.add_argument_group(option.title)
        default = shown_defaults.get(option.name, option.shown_default)
        shown = ",".join(default) if isinstance(default, list) else default
        groups[option.title].add_argument(
            option.flag,
            dest=option.name,
            metavar=option.name.split("_")[-1].upper(),
            default=None,
            help=f"{option.description} (default: {shown}; env {option.env})",
        )


def _serve(args: argparse.Namespace) -> None:
    overrides = {name: getattr(args, name) for name in OPTIONS}
    settings = load_settings(args.config, **overrides)
    logs.configure(settings.log_level, settings.log_format, role_names(args.roles))
    asyncio.run(serve(settings, args.roles))


def _simulate(args: argparse.Namespace) -> None:
    from .simulator import Fleet, simulate

    endpoint = MqttEndpoint.parse(args.mqtt_url)
    fleet = Fleet(args.devices, seed=args.seed)
    print(f"simulating {args.devices} robots at {args.rate} Hz on {endpoint}", flush=True)
    asyncio.run(simulate(fleet, endpoint, args.rate, args.duration))


def _spark_stream(args: argparse.Namespace) -> None:
    from .errors import ConfigError
    from .spark.stream import StreamSettings, run

    settings = load_settings(
        args.config,
        kafka_bootstrap=args.kafka_bootstrap,
        kafka_topic=args.kafka_topic,
        lake_url=args.lake_url,
        data_dir=args.data_dir,
        log_level=args.log_level,
    )
    logs.configure(settings.log_level, settings.log_format, "spark-stream")
    if settings.kafka.bootstrap is None:
        raise ConfigError("iotstream spark stream needs --kafka-bootstrap")
    stream = StreamSettings(
        kafka_bootstrap=settings.kafka.bootstrap,
        lake_url=settings.lake.url or str(settings.data_dir / "lake"),
        topic=settings.kafka.topic,
        checkpoint=args.checkpoint,
        watermark=args.watermark,
        trigger=args.trigger,
        max_records=args.max_records,
    )
    run(stream)


def _add_spark_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    spark = commands.add_parser("spark", help="Spark jobs on the bus and the lake")
    jobs = spark.add_subparsers(dest="job", required=True)
    stream = jobs.add_parser(
        "stream",
        help="per-device minutes from Kafka into the lake's device_minutes table",
        description="Spark Structured Streaming from the Kafka topic into the device_minutes "
        "Delta table of the lake, exactly once across restarts. Spark's jars come from "
        "IOTSTREAM_SPARK_JARS, else IOTSTREAM_SPARK_PACKAGES (Maven, at start); the cluster "
        f"from IOTSTREAM_SPARK_MASTER (default local[2]). {LAYERING}",
    )
    stream.add_argument("--config", type=Path, help="TOML file with settings (flags and env win)")
    stream.add_argument("--kafka-bootstrap", help="Kafka bootstrap servers (host:port,...)")
    stream.add_argument("--kafka-topic", help="topic of the bus's records (default: mqtt-messages)")
    stream.add_argument("--lake-url", help="the lake: a directory or s3://bucket/prefix")
    stream.add_argument("--data-dir", help="the lake is <data-dir>/lake without --lake-url")
    stream.add_argument(
        "--checkpoint",
        help="the query's checkpoint (default: <lake>/_checkpoints/device_minutes)",
    )
    stream.add_argument(
        "--watermark",
        type=float,
        default=60.0,
        help="seconds of device time a reading may come late and still count (default: 60)",
    )
    stream.add_argument(
        "--trigger", type=float, default=10.0, help="seconds between micro-batches (default: 10)"
    )
    stream.add_argument(
        "--max-records", type=int, default=None, help="at most this many records per micro-batch"
    )
    stream.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    stream.set_defaults(handler=_spark_stream)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="iotstream", description="Real-time coordinate streaming for fleets of IoT robots."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    # ``run`` is every role; then one sub-command per role, in the order data flows.
    processes = [("run", "Start the whole system in one process", RUN_DETAIL, ROLES)]
    for role in reversed(ROLES):
        if role.summary:
            needs = " and ".join(OPTIONS[name].flag for name in role.needs)
            processes.append(
                (role.name, role.summary, f"needs {needs}. {role.detail}".strip(), (role,))
            )
    for name, summary, detail, roles in processes:
        command = commands.add_parser(
            name, help=summary, description=f"{summary}: {detail} {LAYERING}"
        )
        _add_settings_flags(command, roles)
        command.set_defaults(handler=_serve, roles=roles)

    sim = commands.add_parser("simulate", help="publish smooth robot paths over MQTT")
    sim.add_argument("--devices", type=int, default=20, help="number of robots (default: 20)")
    sim.add_argument("--rate", type=float, default=5.0, help="updates per second per robot")
    sim.add_argument("--mqtt-url", default="mqtt://127.0.0.1:3123", help="broker to publish to")
    sim.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    sim.add_argument("--seed", type=int, default=None, help="seed for reproducible paths")
    sim.set_defaults(handler=_simulate)
    _add_spark_commands(commands)
    analyze_command.add_parser(commands)
    auth_command.add_parsers(commands)
    devices_command.add_parser(commands)
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
