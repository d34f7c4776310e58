"""Spark on the lake: a configured SparkSession (``spark_session``) and the streaming job
that keeps per-device minutes in the ``device_minutes`` Delta table (``iotstream.spark.stream``).

Needs the ``spark`` extra (``pip install 'iotstream[spark]'``) and Java 17; this package
imports without them, and ``spark_session`` says which extra is missing.
"""

from __future__ import annotations

from .session import (
    DELTA_PACKAGE,
    KAFKA_PACKAGE,
    PACKAGES,
    SparkNotInstalled,
    SparkSettings,
    spark_conf,
    spark_session,
    stop_session,
)

__all__ = [
    "DELTA_PACKAGE",
    "KAFKA_PACKAGE",
    "PACKAGES",
    "SparkNotInstalled",
    "SparkSettings",
    "spark_conf",
    "spark_session",
    "stop_session",
]
