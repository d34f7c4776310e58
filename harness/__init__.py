"""The one harness that starts engines and processes for the tests, the bench and
``make services`` (``python -m harness up|status|down``). Standard library only.

Modules: ``processes`` (free loopback ports, stopping a child or a
process group by PID, /proc look-ups), ``engines`` (Mosquitto, Redis and Kafka as ready
``Service`` objects), ``cli`` (``python -m harness``), ``errors`` (``HarnessError``).
"""

from .engines import Service, find_java, find_program, start_kafka, start_mosquitto, start_redis
from .errors import HarnessError
from .processes import (
    HOST,
    children,
    command_name,
    free_port,
    free_ports,
    port_accepts,
    stop_process,
    stop_process_group,
)

__all__ = [
    "HOST",
    "HarnessError",
    "Service",
    "children",
    "command_name",
    "find_java",
    "find_program",
    "free_port",
    "free_ports",
    "port_accepts",
    "start_kafka",
    "start_mosquitto",
    "start_redis",
    "stop_process",
    "stop_process_group",
]
