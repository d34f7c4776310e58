"""What the bench ran on: the machine, the versions, and how busy it was."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _first_line(argv: list[str]) -> str | None:
    program = shutil.which(argv[0]) or shutil.which(argv[0], path="/usr/sbin:/sbin")
    if program is None:
        return None
    try:
        result = subprocess.run(
            [program, *argv[1:]], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (result.stdout + result.stderr).strip().splitlines()
    return lines[0].strip() if lines else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    return {
        "cpuModel": _cpu_model(),
        "cores": os.cpu_count(),
        "memoryMb": _memory_mb(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "mosquitto": _first_line(["mosquitto", "-h"]),
        "java": _first_line(["java", "-version"]),
        "packages": {
            name: _version(name)
            for name in (
                "iotstream",
                "gmqtt",
                "uvicorn",
                "fastapi",
                "websockets",
                "orjson",
                "uvloop",
            )
        },
    }


def source() -> dict[str, Any]:
    """The commit of the checkout the bench runs from and the tracked files changed in it:
    the server under test is the installed code, usually this checkout, which may change
    while the bench runs when others work in it."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            result = subprocess.run(
                ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    changes = git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": git("rev-parse", "HEAD"),
        # Porcelain lines are "XY path"; the status letters may start with a space.
        "changedFiles": None
        if changes is None
        else [line.split(maxsplit=1)[1] for line in changes.splitlines()],
    }


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]
