"""CPU and memory of processes, sampled from /proc while a scenario runs."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

PERIOD = 0.25
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of ``pid``, or ``None`` once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces and parentheses; the numbers follow the last ")".
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def machine_cpu() -> tuple[float, float]:
    """Seconds the machine's cores spent busy, and stolen by the hypervisor, since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq) / _TICKS, steal / _TICKS


def rss_bytes(pid: int) -> int | None:
    try:
        statm = Path(f"/proc/{pid}/statm").read_text()
    except OSError:
        return None
    return int(statm.split()[1]) * _PAGE


@dataclass
class _Track:
    pid: int
    cpu_start: float | None = None
    cpu_end: float | None = None
    rss_peak: int = 0
    rss_last: int = 0


@dataclass
class ResourceSampler:
    """Samples RSS of named processes every ``PERIOD`` and their CPU time between
    ``window_start()`` and ``window_end()``; CPU percent is of one core."""

    pids: dict[str, int]
    _tracks: dict[str, _Track] = field(default_factory=dict)
    _window: list[float] = field(default_factory=list)
    _machine: list[tuple[float, float]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self._tracks = {name: _Track(pid) for name, pid in self.pids.items()}

    def _sample(self) -> None:
        for track in self._tracks.values():
            rss = rss_bytes(track.pid)
            if rss:  # None once gone, 0 while it waits to be reaped
                track.rss_last = rss
                if self._window and len(self._window) == 1:
                    track.rss_peak = max(track.rss_peak, rss)

    def _run(self) -> None:
        while not self._stop.wait(PERIOD):
            self._sample()

    def window_start(self) -> None:
        for track in self._tracks.values():
            track.cpu_start = cpu_seconds(track.pid)
        self._window = [time.monotonic()]
        self._machine = [machine_cpu()]
        self._sample()

    def window_end(self) -> None:
        self._sample()
        for track in self._tracks.values():
            track.cpu_end = cpu_seconds(track.pid)
        self._window.append(time.monotonic())
        self._machine.append(machine_cpu())

    def sample_now(self) -> None:
        """Refresh the latest RSS (after the window, e.g. once the server settled)."""
        self._sample()

    def report(self) -> dict[str, dict[str, Any]]:
        """Per process: ``cpuPercent`` over the window, ``rssPeakMb`` in it, ``rssEndMb``."""
        elapsed = self._window[1] - self._window[0] if len(self._window) == 2 else 0.0
        out: dict[str, dict[str, Any]] = {}
        for name, track in self._tracks.items():
            cpu = None
            if elapsed > 0 and track.cpu_start is not None and track.cpu_end is not None:
                cpu = round((track.cpu_end - track.cpu_start) / elapsed * 100, 1)
            out[name] = {
                "pid": track.pid,
                "cpuPercent": cpu,
                "rssPeakMb": round(track.rss_peak / 2**20, 1),
                "rssEndMb": round(track.rss_last / 2**20, 1),
            }
        return out

    def machine(self) -> dict[str, Any]:
        """How busy the whole machine was in the window (percent of one core), how much of
        that the sampled processes do not explain (other work on a shared machine), and
        the CPU time the hypervisor kept for others (steal)."""
        if len(self._window) != 2:
            return {
                "cores": os.cpu_count(),
                "busyPercent": None,
                "unexplainedPercent": None,
                "stealPercent": None,
            }
        elapsed = self._window[1] - self._window[0]
        (busy0, steal0), (busy1, steal1) = self._machine
        busy = (busy1 - busy0) / elapsed * 100
        ours = sum(p["cpuPercent"] or 0.0 for p in self.report().values())
        return {
            "cores": os.cpu_count(),
            "busyPercent": round(busy, 1),
            "unexplainedPercent": round(max(0.0, busy - ours), 1),
            "stealPercent": round((steal1 - steal0) / elapsed * 100, 1),
        }

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def total(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sum of several processes' figures (CPU percent of one core, MB)."""

    def add(key: str) -> float | None:
        values = [p[key] for p in parts.values() if p[key] is not None]
        return round(sum(values), 1) if values else None

    return {
        "cpuPercent": add("cpuPercent"),
        "rssPeakMb": add("rssPeakMb"),
        "rssEndMb": add("rssEndMb"),
    }
