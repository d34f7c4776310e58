"""The benchmark: ``python -m bench`` from the repository root (``make bench``).

It starts the system under test itself on free loopback ports (``iotstream run``, and with
``--distributed`` the bridge, processor and api on Kafka and Redis), drives it with the load
generator, watches it with WebSocket clients, measures the same generator against a bare
Mosquitto (the ceiling), and writes ``results.json``, ``results.md`` and PNG plots.

Modules: ``command`` (CLI), ``scenarios`` (what is run and measured), ``generator``
(MQTT publishers), ``watchers`` (WebSocket clients), ``ceiling`` (bare broker and counting
subscriber), ``systems`` (the servers), ``resources`` (CPU and RSS from /proc),
``latency`` (histograms), ``machine`` (what it ran on), ``report`` (JSON, Markdown, PNG).
Engines and processes are started and stopped with the ``harness`` package, as in the tests.
Needs iotstream installed with the ``bench`` extra (numpy, matplotlib): ``.[dev]`` has it. It
is not part of the iotstream distribution.
"""

from .command import main, run

__all__ = ["main", "run"]
