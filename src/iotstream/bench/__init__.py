"""The benchmark: ``iotstream bench`` / ``python -m iotstream.bench``.

It starts the system under test itself on free loopback ports (``iotstream run``, and with
``--distributed`` the bridge, processor and api on Kafka and Redis), drives it with the load
generator, watches it with WebSocket clients, measures the same generator against a bare
Mosquitto (the ceiling), and writes ``results.json``, ``results.md`` and PNG plots.

Modules: ``command`` (CLI), ``scenarios`` (what is run and measured), ``generator``
(MQTT publishers), ``watchers`` (WebSocket clients), ``ceiling`` (bare broker and counting
subscriber), ``systems`` (the servers), ``resources`` (CPU and RSS from /proc),
``latency`` (histograms), ``machine`` (what it ran on), ``report`` (JSON, Markdown, PNG).
Needs the ``bench`` extra (numpy, matplotlib) besides iotstream itself.
"""

from .command import add_arguments, main, run

__all__ = ["add_arguments", "main", "run"]
