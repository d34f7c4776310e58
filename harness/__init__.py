"""The one harness that starts engines and processes for the tests, the bench and
``make services`` (``python -m harness up|status|down``). Standard library only.

Modules: ``processes`` (free loopback ports, stopping a child or a
process group by PID, /proc look-ups), ``engines`` (Mosquitto, Redis, Kafka and s3proxy as ready
``Service`` objects), ``cli`` (``python -m harness``), ``errors`` (``HarnessError``).
"""

from .engines import (
    S3_ACCESS_KEY,
    S3_REGION,
    S3_SECRET_KEY,
    Service,
    find_java,
    find_program,
    s3_bucket,
    s3_endpoint,
    start_kafka,
    start_mosquitto,
    start_redis,
    start_s3,
)
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
    "S3_ACCESS_KEY",
    "S3_REGION",
    "S3_SECRET_KEY",
    "HarnessError",
    "Service",
    "children",
    "command_name",
    "find_java",
    "find_program",
    "free_port",
    "free_ports",
    "port_accepts",
    "s3_bucket",
    "s3_endpoint",
    "start_kafka",
    "start_mosquitto",
    "start_redis",
    "start_s3",
    "stop_process",
    "stop_process_group",
]
