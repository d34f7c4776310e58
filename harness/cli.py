"""``python -m harness``: Mosquitto, Redis, Kafka and an S3 server (s3proxy) left running on
loopback for development.

From the repository root (``make services`` / ``make services-down``)::

    python -m harness up [mosquitto|redis|kafka|s3 ...]   # start, return once each is ready
    python -m harness status                          # exit 1 unless all run
    python -m harness down                            # stop what `up` started

``up`` leaves the servers running in the background and records them in the state dir; ``down``
stops them by recorded PID (after checking the PID still names the same process). Kafka's data
survives ``down``; delete the state dir for a clean broker.

Environment:
    IOTSTREAM_MQTT_PORT              3123
    IOTSTREAM_SERVICES_MQTT_AUTH     off; on: Mosquitto refuses anonymous clients and checks
                                     accounts and ACLs (the service account's --mqtt-url is
                                     written to <services dir>/mosquitto/mqtt-url)
    IOTSTREAM_REDIS_PORT             6379
    IOTSTREAM_KAFKA_PORT             9092
    IOTSTREAM_KAFKA_CONTROLLER_PORT  Kafka port + 1
    IOTSTREAM_S3_PORT                9000 (s3proxy; key iotstream / iotstream-secret,
                                     buckets are directories of <services dir>/s3/data)
    IOTSTREAM_SERVICES_DIR           <repo>/.services: one sub-directory per service with its
                                     config, data, `<name>.log` and `service.json` (PID record)
    IOTSTREAM_KAFKA_CACHE            where Kafka's jars are kept (see ``harness.engines``)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from .engines import (
    Service,
    kafka_libs_dir,
    kafka_version,
    mosquitto_url,
    start_kafka,
    start_mosquitto,
    start_redis,
    start_s3,
)
from .errors import HarnessError
from .processes import HOST, port_accepts, process_stat, stop_process_group

REPO_ROOT = Path(__file__).resolve().parent.parent
SERVICE_NAMES = ("mosquitto", "redis", "kafka", "s3")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def state_dir() -> Path:
    return Path(os.environ.get("IOTSTREAM_SERVICES_DIR") or REPO_ROOT / ".services")


def _record_path(name: str) -> Path:
    return state_dir() / name / "service.json"


@dataclass(frozen=True)
class Record:
    """What `up` writes down about a service it leaves running, for `status` and `down`."""

    pid: int
    start_time: int
    ports: list[int]
    log: str

    @classmethod
    def of(cls, service: Service) -> Record:
        stat = process_stat(service.pid)
        assert stat is not None, "a service just found ready has a /proc entry"
        return cls(service.pid, stat[1], list(service.ports), str(service.log_path))


def _save_record(name: str, record: Record) -> None:
    _record_path(name).write_text(json.dumps(asdict(record), indent=2) + "\n")


def _running_record(name: str) -> Record | None:
    """The record of a service `up` started, if that very process still runs."""
    try:
        record = Record(**json.loads(_record_path(name).read_text()))
    except FileNotFoundError:
        return None
    stat = process_stat(record.pid)
    # A matching start time tells our process from a later one that reused the PID.
    if stat is None or stat[0] == "Z" or stat[1] != record.start_time:
        return None
    return record


def _start(name: str) -> Service:
    workdir = state_dir() / name
    if name == "mosquitto":
        secured = os.environ.get("IOTSTREAM_SERVICES_MQTT_AUTH", "off") == "on"
        return start_mosquitto(_env_int("IOTSTREAM_MQTT_PORT", 3123), workdir, secured=secured)
    if name == "redis":
        return start_redis(_env_int("IOTSTREAM_REDIS_PORT", 6379), workdir)
    if name == "s3":
        return start_s3(_env_int("IOTSTREAM_S3_PORT", 9000), workdir)
    kafka_port = _env_int("IOTSTREAM_KAFKA_PORT", 9092)
    controller_port = _env_int("IOTSTREAM_KAFKA_CONTROLLER_PORT", kafka_port + 1)
    return start_kafka(kafka_port, controller_port, workdir)


def cmd_up(names: list[str]) -> int:
    for name in names:
        running = _running_record(name)
        if running is not None:
            print(f"{name}: already running (pid {running.pid}, ports {running.ports})")
            continue
        if name == "kafka" and not kafka_libs_dir().is_dir():
            print(f"kafka: fetching the Kafka {kafka_version()} jars with Maven (once) ...")
        began = time.monotonic()
        try:
            service = _start(name)
        except HarnessError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _save_record(name, Record.of(service))
        print(
            f"{name}: ready on {service.address} (pid {service.pid}, "
            f"{time.monotonic() - began:.1f} s), log {service.log_path}"
        )
        if name == "mosquitto" and mosquitto_url(service) != f"mqtt://{service.address}":
            print(
                f"mosquitto: accounts and ACLs on; --mqtt-url is in {service.workdir}/mqtt-url, "
                f"robots: iotstream devices add NAME --accounts-dir {service.workdir}"
            )
    return 0


def cmd_down(names: list[str]) -> int:
    for name in reversed(names):
        running = _running_record(name)
        if running is None:
            print(f"{name}: not running")
        else:
            stop_process_group(running.pid, 30.0)
            print(f"{name}: stopped (pid {running.pid})")
        _record_path(name).unlink(missing_ok=True)
    return 0


def cmd_status(names: list[str]) -> int:
    all_up = True
    for name in names:
        running = _running_record(name)
        if running is None:
            all_up = False
            print(f"{name:<10} not running")
            continue
        port = running.ports[0]
        answering = "answering" if port_accepts(port) else "NOT ANSWERING"
        print(f"{name:<10} pid {running.pid:<8} {HOST}:{port:<6} {answering:<13} {running.log}")
    return 0 if all_up else 1


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "up": cmd_up,
    "down": cmd_down,
    "status": cmd_status,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness",
        description="Mosquitto, Redis, Kafka and s3proxy on 127.0.0.1 for development, "
        "without Docker.",
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument(
        "services", nargs="*", help=f"any of {', '.join(SERVICE_NAMES)} (default: all)"
    )
    args = parser.parse_args(argv)
    unknown = set(args.services) - set(SERVICE_NAMES)
    if unknown:
        parser.error(f"unknown service(s): {', '.join(sorted(unknown))}")
    names = [name for name in SERVICE_NAMES if name in args.services] or list(SERVICE_NAMES)
    return COMMANDS[args.command](names)
