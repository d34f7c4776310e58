"""The results of a bench run: ``results.json``, ``results.md`` and two PNG plots.

The JSON holds everything measured; the Markdown and the plots are views of it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson

from .faults import markdown_lines
from .latency import LATENCY_PARTS

JSON = "results.json"
MARKDOWN = "results.md"
LATENCY_PNG = "latency.png"
THROUGHPUT_PNG = "throughput.png"
CEILING_SHARE = 0.75
HISTORY_TARGETS = [
    ("hour-json", "one device-hour (36,000 points) as JSON", 50),
    ("day-simplified", "one device-day simplified to 0.05 m", 200),
    ("day-parquet", "one device-day (864,000 points) as Parquet", 300),
]


def _find(results: dict[str, Any], name: str, mode: str = "embedded") -> dict[str, Any] | None:
    for scenario in results["scenarios"]:
        if scenario["name"] == name and scenario["mode"] == mode and "error" not in scenario:
            found: dict[str, Any] = scenario
            return found
    return None


def _appends_line(appends: dict[str, Any] | None) -> list[str]:
    if appends is None:
        return []
    return [
        f"- {appends['appends']} appends like the archiver's ({_n(appends['rowsPerAppend'])} "
        "readings and a transaction each) into a fresh lake: CPU of one append (four tables' "
        f"commits), median of the first ten {appends['firstCpuMs']} ms, of the last ten "
        f"{appends['lastCpuMs']} ms"
    ]


def _find_all(results: dict[str, Any], name: str, mode: str) -> list[dict[str, Any]]:
    return [
        scenario
        for scenario in results["scenarios"]
        if scenario["name"] == name and scenario["mode"] == mode and "error" not in scenario
    ]


def _distributed_targets(
    results: dict[str, Any], ceiling: float | None
) -> list[tuple[str, str, float | None, float, bool]]:
    """The distributed mode's targets, each over every run of its scenario (the worst)."""
    rows: list[tuple[str, str, float | None, float, bool]] = []
    runs = {name: _find_all(results, name, "distributed") for name in ("rate-1k", "rate-10k")}
    for name, label, bound in (("rate-1k", "1k", 75), ("rate-10k", "10k", 150)):
        p99s = [run["latency"]["p99Ms"] for run in runs[name]]
        worst = None if not p99s or None in p99s else max(p99s)
        rows.append(
            (
                f"distributed p99 at {label} msg/s, worst run (ms)",
                f"<= {bound}",
                worst,
                bound,
                False,
            )
        )
    fixed = runs["rate-1k"] + runs["rate-10k"]
    failing = sum(1 for run in fixed if not run["sustained"]) if fixed else None
    rows.append(
        ("distributed fixed-rate runs not sustained or with loss", "<= 0", failing, 0, False)
    )
    kafka = [
        run["resources"]["server"]["processes"]["kafka"]["cpuPercent"] for run in runs["rate-1k"]
    ]
    rows.append(
        (
            "Kafka CPU at 1k msg/s, worst run (% of a core)",
            "<= 25",
            max(kafka) if kafka else None,
            25,
            False,
        )
    )
    best = _find(results, "max-throughput", "distributed")
    sustained = best["throughput"] if best is not None and best.get("sustained") else None
    share = sustained / ceiling if sustained and ceiling else None
    rows.append(
        ("distributed max sustained, as a share of the ceiling", ">= 0.4", share, 0.4, True)
    )
    every = _find_all(results, "max-throughput", "distributed") + fixed
    lake = [run["lake"] for run in every if "lake" in run]
    lost = sum(entry["missing"] + entry["duplicates"] for entry in lake) if lake else None
    rows.append(("distributed readings lost or duplicated in the lake", "<= 0", lost, 0, False))
    return rows


def _rss(scenario: dict[str, Any] | None) -> float | None:
    if scenario is None:
        return None
    value: float | None = scenario["resources"]["server"]["total"]["rssPeakMb"]
    return value


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets for the embedded mode; ``met`` is ``None`` when not measured."""
    ceiling = (results.get("ceiling") or {}).get("throughput")
    best = _find(results, "max-throughput")
    sustained = best["throughput"] if best is not None and best.get("sustained") else None
    ratio = sustained / ceiling if sustained and ceiling else None
    rate_10k = _find(results, "rate-10k")
    fanout = _find(results, "fanout-500")
    memory = _find(results, "memory-10k")

    def p99(scenario: dict[str, Any] | None) -> float | None:
        return None if scenario is None else scenario["latency"]["p99Ms"]

    rows = [
        (
            "sustained throughput, no loss, as a share of the ceiling",
            ">= 0.75",
            ratio,
            CEILING_SHARE,
            True,
        ),
        ("sustained throughput, no loss (msg/s)", ">= 50000", sustained, 50_000, True),
        ("p99 latency at 10k msg/s, 1000 devices x 10 Hz (ms)", "<= 25", p99(rate_10k), 25, False),
        (
            "p99 latency, fan-out 500 clients x 1000 devices x 10 Hz (ms)",
            "<= 100",
            p99(fanout),
            100,
            False,
        ),
        (
            "peak RSS with 10k devices, server + its mosquitto (MB)",
            "<= 200",
            _rss(memory),
            200,
            False,
        ),
    ]
    lake_loss = None
    if best is not None and "lake" in best:
        lake_loss = best["lake"]["missing"] + best["lake"]["duplicates"]
    rows += [
        (
            "max sustained with the archiver on, as a share of the ceiling",
            ">= 0.7",
            ratio,
            0.7,
            True,
        ),
        ("readings lost or duplicated in the lake at max sustained", "<= 0", lake_loss, 0, False),
    ]
    history = _find(results, "history")
    timed = {q["name"]: q for q in history["queries"]} if history is not None else {}
    for name, label, bound in HISTORY_TARGETS:
        query = timed.get(name)
        value = None if query is None else query["clientMs"]["median"]
        rows.append((f"{label}, client median (ms)", f"<= {bound}", value, bound, False))
    per_reading = None if history is None else history["lake"]["tsXyBytesPerReading"]
    rows.append(
        ("bytes on disk per reading for ts, x, y after compaction", "<= 8", per_reading, 8, False)
    )
    rows += _analytics_targets(_find(results, "analytics"))
    rows += _distributed_targets(results, ceiling)
    return [
        {
            "target": target,
            "limit": limit,
            "value": round(value, 3) if isinstance(value, float) else value,
            "met": None if value is None else (value >= bound if at_least else value <= bound),
        }
        for target, limit, value, bound, at_least in rows
    ]


def write_json(results: dict[str, Any], out: Path) -> None:
    # Written aside and renamed, so a reader never sees half a file.
    scratch = out / (JSON + ".tmp")
    scratch.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2) + b"\n")
    os.replace(scratch, out / JSON)


# -- Markdown --------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _state_loss(scenario: dict[str, Any]) -> str:
    loss = scenario["loss"]
    if "subscriber" in loss:
        return str(loss["subscriber"]["missing"])
    state = loss["state"]
    parts = [f"{state['missing']} missing"] if state["missing"] else []
    if state["finalSeqMismatches"]:
        parts.append(f"{state['finalSeqMismatches']} stale")
    if state["duplicates"]:
        parts.append(f"{state['duplicates']} dup")
    return ", ".join(parts) or "0"


def _ws_loss(scenario: dict[str, Any]) -> str:
    ws = scenario["loss"].get("websocket")
    if ws is None:
        return "-"
    labels = {
        "missedFrames": "frames missed",
        "resets": "resets",
        "seqRegressions": "seq back",
        "finalSeqMismatches": "stale at end",
        "clientsBehind": "clients behind",
        "clientsClosed": "clients closed",
        "sizeMismatches": "frames differ",
    }
    parts = [f"{ws[key]} {label}" for key, label in labels.items() if ws[key]]
    return ", ".join(parts) or "0"


def _resources(scenario: dict[str, Any]) -> tuple[str, str]:
    resources = scenario["resources"]
    parts = resources.get("server") or {
        "processes": {
            **resources["broker"]["processes"],
            **resources["subscriber"]["processes"],
        }
    }
    processes = parts["processes"]
    cpu = " + ".join(f"{name} {_n(p['cpuPercent'])}" for name, p in processes.items())
    rss = " + ".join(f"{name} {_n(p['rssPeakMb'])}" for name, p in processes.items())
    return cpu, rss


def _row(scenario: dict[str, Any]) -> str:
    name = f"{scenario['name']} ({scenario['mode']})"
    if "error" in scenario:
        return f"| {name} | failed: {scenario['error'].splitlines()[0]} |" + " |" * 12
    if scenario.get("throughput") is None:
        return f"| {name} | no sustained step |" + " |" * 12
    latency = scenario.get("latency") or {}
    generator = scenario["generator"]
    short = " ⚠ short" if generator["fellShort"] else ""
    cpu, rss = _resources(scenario)
    machine = scenario["resources"]["machine"]
    ratio = scenario.get("ratioToCeiling")
    cells = [
        name,
        f"{scenario['devices']:,} x {scenario['rateHz']:g} Hz",
        str(scenario.get("clients", "-")),
        _n(scenario["targetRate"]),
        _n(generator["achievedRate"]) + short,
        _n(scenario["throughput"]),
        f"{ratio:.2f}" if ratio is not None else "-",
        _state_loss(scenario),
        _ws_loss(scenario),
        " / ".join(_n(latency.get(k), 1) for k in ("p50Ms", "p90Ms", "p99Ms", "maxMs")),
        cpu,
        rss,
        f"{_n(machine['busyPercent'])} ({_n(machine['unexplainedPercent'])})",
    ]
    return "| " + " | ".join(cells) + " |"


def _steps(scenario: dict[str, Any]) -> list[str]:
    lines = [
        f"### {scenario['title']} ({scenario['mode']}): steps",
        "",
        "| target msg/s | generator msg/s | achieved msg/s | p50 ms | p50 ms to / in server "
        "| p99 ms | drain s | CPU % (server: with its Mosquitto) | machine busy % | sustained |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in scenario["steps"]:
        latency = step.get("latency") or {}
        parts = step.get("latencyParts") or {}
        split = " / ".join(_n((parts.get(name) or {}).get("p50Ms"), 1) for name in LATENCY_PARTS)
        verdict = "yes" if step["sustained"] else "no: " + ", ".join(step["problems"])
        cpu = ", ".join(f"{name} {_n(value)}" for name, value in step["cpuPercent"].items())
        lines.append(
            f"| {_n(step['targetRate'])} | {_n(step['generatorRate'])} | {_n(step['throughput'])} "
            f"| {_n(latency.get('p50Ms'), 1)} | {split} | {_n(latency.get('p99Ms'), 1)} "
            f"| {_n(step['drainSeconds'], 2)} | {cpu} "
            f"| {_n(step['machine']['busyPercent'])} | {verdict} |"
        )
    return [*lines, ""]


def _lake(results: dict[str, Any]) -> list[str]:
    """Lake loss per embedded scenario, and the history scenario's figures."""
    lines: list[str] = []
    counted = [
        s
        for s in results["scenarios"]
        if "lake" in s and "error" not in s and s["kind"] not in ("history", "analytics")
    ]
    if counted:
        lines += [
            "## The lake after each run (archiver on)",
            "",
            "| scenario | readings sent | rows in the lake | lost | duplicated |",
            "|---|---|---|---|---|",
        ]
        for s in counted:
            lake = s["lake"]
            lines.append(
                f"| {s['name']} ({s['mode']}) | {_n(lake['sent'])} | {_n(lake['rows'])} "
                f"| {_n(lake['missing'])} | {_n(lake['duplicates'])} |"
            )
        lines.append("")
    history = _find(results, "history")
    failed = [s for s in results["scenarios"] if s["name"] == "history" and "error" in s]
    if history is None:
        if failed:
            lines += ["## History", "", f"Failed: {failed[0]['error']}", ""]
        return lines
    lake = history["lake"]
    columns = ", ".join(f"{k} {v}" for k, v in lake["columnBytesPerReading"].items())
    lines += [
        "## History",
        "",
        f"- {_n(lake['points'])} readings of one device at 10 Hz, loaded in "
        f"{lake['loadSeconds']} s, compacted in {lake['compactSeconds']} s into "
        f"{lake['files']} file(s): {_n(lake['bytesOnDisk'])} bytes, "
        f"{lake['bytesPerReading']} bytes per reading ({lake['tsXyBytesPerReading']} for ts, x, "
        f"y); per column: {columns}",
        *_appends_line(lake.get("archiverAppends")),
        "- client: request to last byte over loopback; server: `Server-Timing` total, what the "
        "server did before the first byte (*streamed*: the body was still being encoded "
        "after it). Medians of "
        f"{history['queries'][0]['repeats']} requests after one untimed request.",
        "",
        "| query | points | bytes | client ms (min-max) | first byte ms | server ms "
        "| server parts ms | target ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for q in history["queries"]:
        client, server = q["clientMs"], q["serverMs"]
        parts = ", ".join(f"{k} {v}" for k, v in q["serverTiming"].items() if k != "total")
        target = "-" if q["targetMs"] is None else f"{q['targetMs']:g}"
        if q["met"] is not None:
            target += " (met)" if q["met"] else " (**not met**)"
        lines.append(
            f"| {q['title']} | {_n(q['points'])} | {_n(q['bytes'])} "
            f"| {client['median']} ({client['min']}-{client['max']}) "
            f"| {q['firstByteMs']['median']} | {server['median']}"
            f"{' streamed' if q['serverStreamed'] else ''} | {parts} | {target} |"
        )
    return [*lines, ""]


def _analytics_targets(found: dict[str, Any] | None) -> list[tuple[str, str, Any, float, bool]]:
    """The analytics scenario's targets: seconds of ``iotstream analyze``, query medians."""
    analyze = {r["engine"]: r["seconds"] for r in found["analyze"]} if found else {}
    queries = found["queries"] if found else {}
    fleet = (
        f"{found['lake']['devices']} devices x {found['lake']['seconds'] / 3600:g} h"
        if found
        else "a fleet-day"
    )
    return [
        (f"iotstream analyze, DuckDB, {fleet} (s)", "<= 15", analyze.get("duckdb"), 15, False),
        (
            f"iotstream analyze, Spark local[2], {fleet} (s)",
            "<= 90",
            analyze.get("spark"),
            90,
            False,
        ),
        (
            "trips, stops and summary of one device-day, DuckDB, median (ms)",
            "<= 300",
            queries.get("deviceDay", {}).get("medianMs"),
            300,
            False,
        ),
        (
            "heatmap of the fleet's day, DuckDB, median (ms)",
            "<= 1000",
            queries.get("fleetHeatmap", {}).get("medianMs"),
            1000,
            False,
        ),
    ]


def _analytics(results: dict[str, Any]) -> list[str]:
    """The analytics scenario: its lake, ``iotstream analyze`` per engine, the on-demand
    queries, and the prediction errors per model."""
    found = _find(results, "analytics")
    failed = [s for s in results["scenarios"] if s["name"] == "analytics" and "error" in s]
    if found is None:
        return ["## Analytics", "", f"Failed: {failed[0]['error']}", ""] if failed else []
    lake = found["lake"]
    lines = [
        "## Analytics",
        "",
        f"- {_n(lake['readings'])} readings ({lake['devices']} devices x {lake['seconds']:g} s "
        f"at 10 Hz of drives, turns, stops and silences), loaded in {lake['loadSeconds']} s, "
        f"compacted in {lake['compactSeconds']} s.",
        "- `iotstream analyze` (every derived table of the day), start to exit: "
        + ", ".join(f"{r['engine']} {r['seconds']} s ({r['wrote']})" for r in found["analyze"])
        + ("" if found["spark"]["run"] else f"; Spark not run: {found['spark']['reason']}")
        + ".",
        "",
        "| on-demand query (DuckDB, in process) | median ms (min-max) | target ms |",
        "|---|---|---|",
    ]
    for query in found["queries"].values():
        target = "-" if "targetMs" not in query else f"{query['targetMs']:g}"
        if "met" in query:
            target += " (met)" if query["met"] else " (**not met**)"
        lines.append(
            f"| {query['title']} | {query['medianMs']} ({query['minMs']}-{query['maxMs']}) "
            f"| {target} |"
        )
    lines += [
        "",
        "Prediction error (metres; ADE: mean over the horizon, FDE: at its end) on held-out "
        "later time of each track:",
        "",
        "| paths | model | ADE 1 s | FDE 1 s | ADE 3 s | FDE 3 s | samples |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, title in (("simulator", "simulator"), ("recorded", "recorded varied motion")):
        scores = found["prediction"][name]
        by = {(m["model"], m["horizon"]): m for m in scores["models"]}
        for model in dict.fromkeys(m["model"] for m in scores["models"]):
            one, three = by[model, 1.0], by[model, 3.0]
            lines.append(
                f"| {title} ({scores['tracks']} tracks) | {model} | {one['ade']} | {one['fde']} "
                f"| {three['ade']} | {three['fde']} | {one['samples']} |"
            )
    return [*lines, ""]


def _source(results: dict[str, Any]) -> str:
    before, after = results["source"], results["sourceAfter"]
    text = f"- source: commit {before['commit']}"
    if before["changedFiles"]:
        text += f" with local changes to {', '.join(before['changedFiles'])}"
    if after != before:
        changed = ", ".join(after["changedFiles"] or []) or "none"
        text += (
            f"; **the checkout changed during the run** (at the end: commit {after['commit']}, "
            f"local changes to {changed})"
        )
    return text


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    lines = [
        f"# iotstream bench ({results['profile']} profile)",
        "",
        f"- run: {results['startedAt']} → {results['finishedAt']}, `{results['command']}`",
        _source(results),
        f"- machine: {machine['cores']} cores ({machine['cpuModel']}), "
        f"{_n(machine['memoryMb'])} MB, Linux {machine['kernel']}",
        f"- Python {machine['python']}, {machine['mosquitto']}, {packages}",
        f"- load average (1/5/15 min) before: {results['loadAverageBefore']}, "
        f"after: {results['loadAverageAfter']}",
        "- CPU is percent of one core over the measured window; RSS is the peak in it. "
        "Machine busy is all cores together (200 = two cores); (other) is the part no process "
        "of the bench or the system under test explains: other work on a shared machine.",
        "- latency p50 / p90 / p99 / max in ms: publish → WebSocket receive of each device "
        "state at each client.",
        "",
        "| scenario | load | clients | target msg/s | generator msg/s | achieved msg/s "
        "| x ceiling | state loss | WebSocket loss | latency ms | CPU % | RSS MB "
        "| machine busy % (other) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = [results["ceiling"]] if results.get("ceiling") else []
    served = [s for s in results["scenarios"] if s["kind"] not in ("history", "analytics")]
    lines += [_row(s) for s in [*rows, *served]]
    lines += ["", "## Targets (embedded mode)", "", "| target | limit | measured | met |"]
    lines.append("|---|---|---|---|")
    for t in results["targets"]:
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        value = t["value"]
        shown = (
            "-" if value is None else (f"{value:.2f}" if isinstance(value, float) else f"{value:,}")
        )
        lines.append(f"| {t['target']} | {t['limit']} | {shown} | {met} |")
    lines.append("")
    lines += _lake(results)
    lines += _analytics(results)
    lines += markdown_lines(results.get("faults"))
    for scenario in [*rows, *results["scenarios"]]:
        if scenario.get("steps") and len(scenario["steps"]) > 1:
            lines += _steps(scenario)
    short = [
        f"{s['name']} ({s['mode']})"
        for s in [*rows, *results["scenarios"]]
        if "generator" in s and s["generator"]["fellShort"]
    ]
    lines.append(
        "Generator fell short of its target in: " + ", ".join(short) + "."
        if short
        else "The generator reached its target rate in every scenario."
    )
    distributed = results["distributed"]
    if not distributed["run"]:
        lines += ["", f"Distributed mode not run: {distributed['reason']}"]
    return "\n".join(lines) + "\n"


# -- plots -----------------------------------------------------------------


def _latency_points(results: dict[str, Any], mode: str) -> list[tuple[float, dict[str, Any], bool]]:
    """(achieved msg/s, latency, sustained) of the runs of ``mode`` with 1000 devices and a
    few clients (not fan-out, not memory), by rate."""
    points = []
    for scenario in results["scenarios"]:
        if (
            scenario["mode"] != mode
            or "error" in scenario
            or scenario["kind"] in ("fanout", "memory", "history", "analytics")
        ):
            continue
        if scenario["kind"] == "ramp":
            points += [
                (s["throughput"], s["latency"], s["sustained"])
                for s in scenario["steps"]
                if s.get("latency")
            ]
        elif scenario.get("latency"):
            points.append((scenario["throughput"], scenario["latency"], scenario["sustained"]))
    return sorted((p for p in points if p[1]["count"]), key=lambda p: p[0])


PERCENTILES = (("p50Ms", "tab:green"), ("p90Ms", "tab:orange"), ("p99Ms", "tab:red"))


def plot_latency(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_rate, by_clients) = plt.subplots(1, 2, figsize=(12, 4.5))
    for mode, style in (("embedded", "-o"), ("distributed", "--s")):
        points = _latency_points(results, mode)
        kept = [p for p in points if p[2]]
        broke = [p for p in points if not p[2]]
        for key, color in PERCENTILES:
            label = f"{mode} {key[:3]}"
            by_rate.plot([p[0] for p in kept], [p[1][key] for p in kept], style, color=color,
                         label=label)  # fmt: skip
            if broke:
                # One legend entry says what the crosses are; the colour says which percentile.
                shown = f"{mode}, not sustained" if key == "p99Ms" else "_nolegend_"
                by_rate.plot([p[0] for p in broke], [p[1][key] for p in broke], "x",
                             color=color, label=shown)  # fmt: skip
    by_rate.set(xlabel="achieved msg/s", ylabel="latency (ms)", yscale="log",
                title="publish → WebSocket latency per rate")  # fmt: skip
    by_rate.grid(True, which="both", alpha=0.3)
    if by_rate.lines:
        by_rate.legend(fontsize=7)
    names = ("rate-10k", "fanout-100", "fanout-500")
    fan = sorted(
        (
            s
            for s in results["scenarios"]
            if s["mode"] == "embedded" and "error" not in s and s["name"] in names
            and s["latency"]["count"]
        ),
        key=lambda s: s["clients"],
    )  # fmt: skip
    if fan:
        clients = [s["clients"] for s in fan]
        for key, color in PERCENTILES:
            by_clients.plot(clients, [s["latency"][key] for s in fan], "-o", color=color,
                            label=key[:3])  # fmt: skip
    by_clients.set(xlabel="WebSocket clients (1000 devices x 10 Hz)", ylabel="latency (ms)",
                   yscale="log", title="fan-out (embedded)")  # fmt: skip
    by_clients.grid(True, which="both", alpha=0.3)
    if by_clients.lines:
        by_clients.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_throughput(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ceiling = (results.get("ceiling") or {}).get("throughput")
    bars: list[tuple[str, float]] = []
    if ceiling:
        bars.append(("ceiling\n(bare mosquitto)", ceiling))
    best = _find(results, "max-throughput")
    if best is not None and best.get("throughput"):
        bars.append(("embedded\nmax sustained", best["throughput"]))
    # The distributed mode's bar is its ramped maximum when one step was sustained, else the
    # highest fixed rate it carried without loss, whatever its latency.
    ramped = _find(results, "max-throughput", "distributed")
    distributed = [
        s
        for s in results["scenarios"]
        if s["mode"] == "distributed"
        and s["kind"] == "fixed"
        and "error" not in s
        and s["lossFree"]
        and not s["generator"]["fellShort"]
    ]
    if ramped is not None and ramped.get("sustained"):
        bars.append(("distributed\nmax sustained", ramped["throughput"]))
    elif distributed:
        top = max(distributed, key=lambda s: s["throughput"])
        bars.append((f"distributed {top['name']}\n(highest rate run)", top["throughput"]))
    figure, axes = plt.subplots(figsize=(7, 4.5))
    if bars:
        labels, values = zip(*bars, strict=True)
        drawn = axes.bar(labels, values, color=["tab:gray", "tab:blue", "tab:purple"][: len(bars)])
        ratios = [
            f"{v:,.0f}" + (f"\n{v / ceiling:.2f} x ceiling" if ceiling else "") for v in values
        ]
        axes.bar_label(drawn, ratios, fontsize=8)
    if ceiling:
        axes.axhline(CEILING_SHARE * ceiling, color="tab:red", linestyle="--", linewidth=1,
                     label=f"target {CEILING_SHARE} x ceiling")  # fmt: skip
        axes.legend(fontsize=8)
    axes.set(ylabel="msg/s without loss", title="throughput per mode")
    axes.margins(y=0.2)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_all(results: dict[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    write_json(results, out)
    (out / MARKDOWN).write_text(markdown(results))
    plot_latency(results, out / LATENCY_PNG)
    plot_throughput(results, out / THROUGHPUT_PNG)
    return [out / name for name in (JSON, MARKDOWN, LATENCY_PNG, THROUGHPUT_PNG)]
