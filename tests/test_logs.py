"""Logs: ``--log-format json`` writes one JSON object per line on stderr, uvicorn's and the
libraries' lines included; the text format stays as it was."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from harness import free_port, stop_process
from iotstream import logs

from .conftest import require


@pytest.fixture
def stream() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of our own writing through the handler ``logs.configure`` makes; the root
    logger (pytest's capture) is left alone."""
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure("info", "json", "bridge")
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    logger = logging.getLogger("iotstream.commands")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield logger, out
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
        root.handlers[:], level = saved
        root.setLevel(level)


def parsed(out: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_a_json_line_has_the_fields_and_the_extras(
    stream: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = stream
    logger.warning("command %s failed", "c1", extra={"device_id": "r1", "command_id": "c1"})
    logger.info("sent", extra={"component": "sender"})
    first, second = parsed(out)
    assert first.pop("time").endswith("Z")
    assert first == {
        "level": "warning",
        "logger": "iotstream.commands",
        "message": "command c1 failed",
        "role": "bridge",
        "component": "commands",
        "device_id": "r1",
        "command_id": "c1",
    }
    assert (second["component"], second["message"]) == ("sender", "sent")
    assert "device_id" not in second


def test_an_exception_is_one_line_with_an_exc_field(
    stream: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, out = stream
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logger.exception("it failed")
    assert out.getvalue().count("\n") == 1
    [line] = parsed(out)
    assert line["message"] == "it failed"
    assert line["exc"].startswith("Traceback (most recent call last):")
    assert "ValueError: bad\nvalue" in line["exc"]


def test_iotstream_run_logs_json_lines_with_uvicorn_s(tmp_path: Path) -> None:
    require("mosquitto")
    http_port, mqtt_port = free_port(), free_port()
    stderr = tmp_path / "stderr.log"
    with stderr.open("wb") as err, (tmp_path / "stdout.log").open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "iotstream", "run", "--http-port", str(http_port),
             "--mqtt-port", str(mqtt_port), "--data-dir", str(tmp_path / "data"),
             "--log-format", "json"],
            stdout=out, stderr=err, env={**os.environ, "IOTSTREAM_LOG_LEVEL": "info"},
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{http_port}"
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, stderr.read_text()
            try:
                if httpx.get(base + "/api/health", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.1)
        subprocess.run(
            [require("mosquitto_pub"), "-h", "127.0.0.1", "-p", str(mqtt_port), "-q", "1",
             "-t", "sensors/r1/coordinates", "-m", "not json"],
            check=True, timeout=10,
        )  # fmt: skip
        # Not HTTP at all: uvicorn answers 400 and logs a warning.
        with socket.create_connection(("127.0.0.1", http_port), timeout=5) as client:
            client.sendall(b"\x00\x01 not an HTTP request\r\n\r\n")
            client.recv(1024)
        deadline = time.monotonic() + 20
        while b"iotstream.ingest" not in stderr.read_bytes() or b"uvicorn" not in (
            stderr.read_bytes()
        ):
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        stop_process(process)
    lines = [orjson.loads(line) for line in stderr.read_text().splitlines()]
    assert lines
    for line in lines:
        assert {"time", "level", "logger", "message", "role", "component"} <= set(line), line
        assert line["role"] == "api,archiver,bridge,processor"
    by_logger = {line["logger"]: line for line in lines}
    assert by_logger["iotstream.ingest"]["component"] == "ingest"
    assert "invalid_json" in by_logger["iotstream.ingest"]["message"]
    assert by_logger["uvicorn.error"]["level"] == "warning"
    assert by_logger["uvicorn.error"]["component"] == "error"
    # The banner stays on stdout, as text, for the person who started it.
    assert "iotstream is running" in (tmp_path / "stdout.log").read_text()
