"""A smoke run of the bench (``--quick``), so it never rots. It checks that every result is
written and complete, never how fast anything was."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench import main
from bench.generator import PAYLOAD, payload, publish_packet
from bench.scenarios import _taken

from .conftest import require

MEASURED = {
    "devices", "rateHz", "targetRate", "timing", "loadAverage", "generator", "throughput",
    "windowRate", "counted", "drainSeconds", "loss", "lossFree", "resources", "sustained",
    "problems", "name", "title", "kind", "mode", "seconds", "ratioToCeiling",
}  # fmt: skip
GENERATOR = {
    "processes", "connections", "targetRate", "achievedRate", "planned", "sent", "seconds",
    "maxLagMs", "fellShort",
}  # fmt: skip
LATENCY = {"count", "p50Ms", "p90Ms", "p99Ms", "maxMs"}
STATE_LOSS = {"missing", "duplicates", "finalSeqMismatches"}
WS_LOSS = {
    "missedFrames", "resets", "seqRegressions", "finalSeqMismatches", "clientsBehind",
    "clientsClosed", "sizeMismatches",
}  # fmt: skip
RESOURCE = {"pid", "cpuPercent", "rssPeakMb", "rssEndMb"}
LAKE = {"rows", "sent", "missing", "duplicates", "unknownSeq", "countSeconds"}


def check_group(group: dict[str, Any], names: set[str]) -> None:
    assert set(group["processes"]) == names
    for figures in group["processes"].values():
        assert set(figures) == RESOURCE
    assert set(group["total"]) == {"cpuPercent", "rssPeakMb", "rssEndMb"}


def check_run(result: dict[str, Any]) -> None:
    assert "error" not in result, result.get("error")
    assert set(result) >= MEASURED
    assert set(result["generator"]) == GENERATOR
    assert result["generator"]["sent"] > 0
    # What the window took, but never more than was sent.
    achieved = result["generator"]["achievedRate"]
    assert result["throughput"] == min(result["windowRate"], round(achieved))
    assert set(result["resources"]["machine"]) == {
        "cores", "busyPercent", "unexplainedPercent", "stealPercent"
    }  # fmt: skip


def check_server_run(result: dict[str, Any]) -> None:
    check_run(result)
    assert set(result["latency"]) == LATENCY
    assert result["latency"]["count"] > 0
    # Every state the generator sent carries the server's receivedAt: both parts count it.
    parts = result["latencyParts"]
    assert list(parts) == ["toServer", "inServer"]
    assert parts["inServer"]["count"] == result["latency"]["count"]
    assert 0 < parts["toServer"]["count"] <= result["latency"]["count"]
    for part in parts.values():
        assert set(part) == LATENCY
        assert part["p50Ms"] <= result["latency"]["maxMs"]
    assert set(result["loss"]["state"]) == STATE_LOSS
    assert set(result["loss"]["websocket"]) == WS_LOSS
    assert result["websocket"]["clients"] == result["clients"]
    resources = result["resources"]
    check_group(resources["server"], {"server", "mosquitto"})
    assert set(resources["generator"]["processes"]) == {
        f"publisher-{p}" for p in range(result["generator"]["processes"])
    }
    assert resources["watchers"]["processes"]


def test_a_quick_bench_writes_every_result(tmp_path: Path) -> None:
    require("mosquitto")
    out = tmp_path / "results"
    assert main(["--quick", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {
        "results.json", "results.md", "latency.png", "throughput.png"
    }  # fmt: skip
    for png in ("latency.png", "throughput.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    results = json.loads((out / "results.json").read_text())
    assert results["profile"] == "quick"
    assert results["command"] == f"python -m bench --quick --out {out}"
    assert {"cpuModel", "cores", "memoryMb", "kernel", "python", "mosquitto"} <= set(
        results["machine"]
    )
    assert len(results["loadAverageBefore"]) == len(results["loadAverageAfter"]) == 3
    head = subprocess.run(
        ["git", "-C", str(Path(__file__).parent), "rev-parse", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    for source in (results["source"], results["sourceAfter"]):
        assert set(source) == {"commit", "changedFiles"}
        assert source["commit"] == head  # the checkout the bench ran from
    assert results["distributed"] == {"run": False, "reason": "not asked for (--distributed)"}

    ceiling = results["ceiling"]
    check_run(ceiling)
    assert ceiling["ratioToCeiling"] == 1.0
    check_group(ceiling["resources"]["broker"], {"mosquitto"})
    check_group(ceiling["resources"]["subscriber"], {"subscriber"})
    assert ceiling["steps"]

    by_name = {s["name"]: s for s in results["scenarios"]}
    assert list(by_name) == ["rate-1k", "max-throughput", "fanout-100", "memory-10k"]
    for result in by_name.values():
        assert result["mode"] == "embedded"
        check_server_run(result)
        assert result["ratioToCeiling"] is not None
    steps = by_name["max-throughput"]["steps"]
    assert steps and {"targetRate", "throughput", "latency", "latencyParts", "sustained"} <= set(
        steps[0]
    )

    for result in by_name.values():  # the archiver is on: the lake is counted after each run
        lake = result["lake"]
        assert set(lake) == LAKE and lake["sent"] == result["generator"]["sent"]
    assert "lake" in steps[0]

    targets = results["targets"]
    # Embedded 5, lake and history 6, analytics 4, distributed 6 (those two reported as not
    # measured in this run).
    assert [set(t) for t in targets] == [{"target", "limit", "value", "met"}] * 21
    markdown = (out / "results.md").read_text()
    for name in ("ceiling", *by_name):
        assert f"| {name} (" in markdown


def test_a_quick_history_bench_times_every_query(tmp_path: Path) -> None:
    require("mosquitto")
    out = tmp_path / "results"
    assert main(["--quick", "--scenarios", "history", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    [history] = results["scenarios"]
    assert "error" not in history, history.get("error")
    lake = history["lake"]
    assert lake["points"] == 6000 and lake["files"] == 1
    assert lake["bytesPerReading"] > 0 and {"ts", "x", "y"} <= set(lake["columnBytesPerReading"])
    names = [q["name"] for q in history["queries"]]
    assert names == ["hour-json", "day-simplified", "day-parquet", "day-json"]
    for query in history["queries"]:
        assert query["points"] > 0
        assert query["clientMs"]["median"] > 0 and query["serverMs"]["median"] > 0
        assert "lake" in query["serverTiming"]
    assert history["queries"][2]["points"] == 6000
    markdown = (out / "results.md").read_text()
    assert "## History" in markdown and "whole day as Parquet" in markdown


def test_the_auth_bench_times_each_way_of_authenticating() -> None:
    from bench.auth import run_auth

    result = run_auth(requests=20, handshakes=5)
    cases = {case["case"]: case for case in result["cases"]}
    assert list(cases) == ["auth off", "X-API-Key", "bearer token", "token as subprotocol"]
    assert cases["auth off"]["restOverheadUs"] == cases["auth off"]["wsOverheadUs"] == 0
    for case in cases.values():
        assert 0 < case["wsP50Us"] <= case["wsP99Us"]
    assert "restP50Us" not in cases["token as subprotocol"]  # a handshake-only way


def test_a_step_that_took_a_backlog_counts_no_more_than_was_sent() -> None:
    # A system behind when the window opened takes what it owed too: 83k msg/s in the window
    # of a step that sent 68k. It sustained 68k.
    assert _taken(83_101.4, {"achievedRate": 67_985}) == {
        "throughput": 67_985,
        "windowRate": 83_101,
    }
    assert _taken(63_912.6, {"achievedRate": 63_990})["throughput"] == 63_913


def test_the_publishers_send_what_the_payload_format_says() -> None:
    """The publishers build each message from parts formatted ahead; byte for byte what
    ``PAYLOAD`` formats, in a packet with the MQTT remaining length."""
    sent_at = 1_795_400_000.123456
    wall = b"%.6f" % sent_at
    for d in range(0, 1000, 37):
        for seq in range(0, 1300, 7):
            x, y = (d * 7 + seq) % 600 / 10, (d * 3 + seq) % 400 / 10
            assert payload(d, seq, wall) == PAYLOAD % (x, y, sent_at, seq, sent_at)
    head = b"\x00\x03a/b"  # 5 bytes
    for size, length in [
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        ((1 << 14) - 1, b"\xff\x7f"),
        (1 << 14, b"\x80\x80\x01"),
        (2_097_152, b"\x80\x80\x80\x01"),
    ]:
        body = b"p" * (size - len(head))
        assert publish_packet(head, body) == b"\x30" + length + head + body
