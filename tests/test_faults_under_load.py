"""The distributed pipeline under load, one fault at a time: Mosquitto, Kafka and Redis
restarted, the bridge, the processor, the archiver and an api killed with SIGKILL and
replaced. After each, it recovers by itself and nothing the broker accepted (QoS 1) is
missing from the latest state or the lake. The bench's scenario (``bench.faults``) runs it,
small: 1k msg/s and a second of load on either side of each fault; ``make bench`` measures
the recovery times at 5k msg/s."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.faults import FAULT_NAMES, Plan, run_faults

from .conftest import require

pytestmark = [pytest.mark.kafka, pytest.mark.redis, pytest.mark.e2e, pytest.mark.faults]

PLAN = Plan(devices=100, rate=10.0, before=1.0, after=1.0, patience=60.0)
REDELIVERED = {"mosquitto", "bridge"}
"""Faults after which the broker sends again what the bridge had put on Kafka but not yet
acknowledged (QoS 1 is at-least-once): the lake may hold those twice. After the others,
nothing is written twice (the archiver is exactly-once from Kafka on)."""


NOISE = ("Connection refused", "Connect to ipv4#")
"""What a Kafka client logs again and again while the broker is down: left out of the
tails, which it would fill."""


def logs(workdir: Path) -> str:
    """The tail of every role's log, without the clients' retries, for a failure message."""
    tails = []
    for log in sorted((workdir / "system").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        kept = [line for line in lines if not any(noise in line for noise in NOISE)]
        tails.append(f"--- {log.name} (retries left out: {len(lines) - len(kept)})")
        tails.extend(kept[-40:])
    return "\n".join(tails)


def test_each_fault_heals_by_itself_under_load_and_loses_nothing(tmp_path: Path) -> None:
    for program in ("mosquitto", "redis-server", "java", "mvn"):
        require(program)
    result = run_faults(tmp_path, PLAN)

    phases = {phase["fault"]: phase for phase in result["faults"]}
    assert list(phases) == list(FAULT_NAMES), f"{result['faults']}\n{logs(tmp_path)}"
    for name, phase in phases.items():
        # The messages read the logs only when they are shown.
        assert "error" not in phase, f"{name}: {phase}\n{logs(tmp_path)}"
        assert phase["recoverySeconds"] is not None, f"no recovery: {phase}\n{logs(tmp_path)}"
        assert phase["healthySeconds"] is not None, f"unhealthy: {phase}\n{logs(tmp_path)}"
        generator = phase["generator"]
        # Everything the devices sent was accepted in the end, so everything counts.
        assert generator["sent"] > 0 and generator["unacknowledged"] == 0, (name, generator)
        assert phase["lost"] == {"state": 0, "lake": 0}, f"lost: {phase}\n{logs(tmp_path)}"
        assert phase["lake"]["rows"] >= generator["sent"], (name, phase["lake"])
        if name not in REDELIVERED:
            assert phase["duplicated"] == {"lake": 0}, (name, phase)
    assert phases["mosquitto"]["generator"]["reconnects"] > 0  # the restart reached the devices
    assert result["archiverCaughtUp"] and result["lossFree"]
