"""A Prometheus server on loopback (Debian's ``prometheus``) scraping iotstream processes, for
the tests and for a look at the metrics of a local stack::

    config = scrape_config({"bridge": ["127.0.0.1:9081"]}, interval=1.0)
    with start_prometheus(free_port(), tmp_path / "prometheus", config) as prometheus:
        wait_scraped(prometheus, 2)
        query(prometheus, "iotstream_mqtt_connected")  # [{"metric": {...}, "value": [t, "1"]}]

From the repository root (``make prometheus``), in the foreground until Ctrl-C, scraping the
quick start's roles (README, Distributed mode) and evaluating ``deploy/prometheus/alerts.yml``::

    python -m harness.prometheus [--port 9090] [--interval 5] [JOB=HOST:PORT ...]

Standard library only, like the rest of the harness; the config is written as JSON, which
Prometheus reads as YAML.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .embedded import http_ok
from .engines import Service, find_program
from .errors import HarnessError
from .processes import HOST, POLL_SECONDS

REPO_ROOT = Path(__file__).resolve().parent.parent
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
# The quick start's roles on one machine: their --metrics-port defaults and the api's port.
LOCAL_TARGETS = {
    "bridge": ["127.0.0.1:9081"],
    "processor": ["127.0.0.1:9082"],
    "archiver": ["127.0.0.1:9083"],
    "api": ["127.0.0.1:8081"],
}


def scrape_config(
    targets: Mapping[str, Sequence[str]],
    *,
    interval: float = 15.0,
    rule_files: Sequence[Path] = (),
) -> str:
    """A Prometheus config scraping ``targets`` (job name -> ``host:port`` list) every
    ``interval`` seconds and evaluating ``rule_files`` as often."""
    every = f"{round(interval * 1000)}ms"
    config = {
        "global": {
            "scrape_interval": every,
            "scrape_timeout": every,
            "evaluation_interval": every,
        },
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(addresses)}]}
            for job, addresses in targets.items()
        ],
    }
    return json.dumps(config, indent=2) + "\n"


def _get(service: Service, path: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(f"http://{service.address}{path}", timeout=timeout) as reply:
        return json.load(reply) if reply.headers.get_content_type() == "application/json" else None


def ready_probe(service: Service) -> bool:
    return http_ok(f"http://{service.address}/-/ready", 1.0)


def start_prometheus(port: int, workdir: Path, config: str) -> Service:
    """Prometheus on ``127.0.0.1:port`` with ``config`` (``scrape_config(...)``), its TSDB under
    ``workdir/data``; ready once ``/-/ready`` answers."""
    program = find_program("prometheus", "apt-get install -y prometheus")
    workdir.mkdir(parents=True, exist_ok=True)
    path = (workdir / "prometheus.yml").resolve()
    path.write_text(config)
    argv = [
        program,
        f"--config.file={path}",
        f"--storage.tsdb.path={workdir.resolve() / 'data'}",
        f"--web.listen-address={HOST}:{port}",
        "--storage.tsdb.retention.time=1d",
        "--log.level=warn",
    ]
    service = Service("prometheus", (port,), workdir, argv, ready_probe, start_timeout=30.0)
    service.start()
    return service


def query(service: Service, expr: str) -> list[dict[str, Any]]:
    """The instant vector (or ``[scalar]``) ``expr`` evaluates to now; an invalid expression
    raises ``HarnessError`` with Prometheus' reason."""
    url = "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        body = _get(service, url)
    except urllib.error.HTTPError as exc:
        raise HarnessError(f"{expr!r}: {exc.read().decode(errors='replace')}") from exc
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]  # type: ignore[no-any-return]


def targets(service: Service) -> list[dict[str, Any]]:
    """The active scrape targets, each with its ``labels``, ``health`` and ``lastError``."""
    return _get(service, "/api/v1/targets?state=active")["data"]["activeTargets"]  # type: ignore[no-any-return]


def wait_scraped(service: Service, count: int, timeout: float = 30.0) -> None:
    """Return once ``count`` targets are up, or raise with the targets' errors."""
    deadline = time.monotonic() + timeout
    while True:
        active = targets(service)
        if sum(target["health"] == "up" for target in active) >= count:
            return
        if time.monotonic() > deadline:
            errors = [f"{t['scrapeUrl']}: {t['health']} {t['lastError']}" for t in active]
            raise HarnessError(f"{count} targets not up after {timeout:.0f} s: {errors}")
        time.sleep(POLL_SECONDS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.prometheus",
        description="Prometheus on 127.0.0.1 scraping iotstream roles, with the alert rules "
        "of deploy/prometheus/alerts.yml, until Ctrl-C.",
    )
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--interval", type=float, default=5.0, help="scrape every N seconds")
    parser.add_argument(
        "--dir", type=Path, default=REPO_ROOT / ".services" / "prometheus", help="its data"
    )
    parser.add_argument(
        "targets",
        nargs="*",
        metavar="JOB=HOST:PORT",
        help="default: " + " ".join(f"{job}={t[0]}" for job, t in LOCAL_TARGETS.items()),
    )
    args = parser.parse_args(argv)
    chosen: dict[str, list[str]] = {}
    for spec in args.targets:
        job, sep, address = spec.partition("=")
        if not sep or not job or not address:
            parser.error(f"expected JOB=HOST:PORT, got {spec!r}")
        chosen.setdefault(job, []).append(address)
    config = scrape_config(chosen or LOCAL_TARGETS, interval=args.interval, rule_files=[ALERTS])
    try:
        service = start_prometheus(args.port, args.dir, config)
    except HarnessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    # Prometheus runs in a session of its own: leaving the block stops it, on Ctrl-C or kill.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with service:
        print(f"prometheus: http://{service.address} (pid {service.pid}), log {service.log_path}")
        try:
            assert service.process is not None
            service.process.wait()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
