"""``iotstream spark stream``: per-device minutes of the Kafka topic, kept in the lake.

Spark Structured Streaming reads the bus's topic (``mqtt-messages``), decodes each record
value with ``record_schema()`` (the Spark form of ``iotstream/bus/kafka_record.schema.json``),
keeps the readings (``"k": "r"``, and those packed in ``"k": "C"`` or ``"R"``) and groups them by
device and UTC minute of the device time. A minute is appended to the ``device_minutes``
Delta table of the lake once the watermark (the newest device time seen, less
``watermark`` seconds) has passed its end; readings that arrive later than that are left
out.

``device_minutes`` (partitioned by ``date``, protocol reader 1 / writer 2 like the lake's
other tables, so delta-rs and DuckDB read it too):

================  =========  ===============================================================
column            type       meaning
================  =========  ===============================================================
``device_id``     string     the device
``minute``        timestamp  start of the UTC minute (device time)
``readings``      long       readings of the device in the minute
``positions``     long       those of them with numeric ``x`` and ``y``
``distance``      double     path length through the minute's positions in time order
``avg_speed``     double     ``distance`` over the time from first to last position (null
                             when that is 0)
``max_speed``     double     fastest step between consecutive positions (null without one)
``min_x`` ...     double     bounding box of the positions: ``min_x``, ``min_y``, ``max_x``,
                             ``max_y`` (null without positions)
``first_ts``      timestamp  first reading's device time in the minute
``last_ts``       timestamp  last reading's device time in the minute
``date``          date       UTC day of ``minute``
================  =========  ===============================================================

Distances and speeds are in the units of ``x`` and ``y`` (metres for the simulator) and per
second; the step from a minute's last position to the next minute's first is in neither.

Each minute is written exactly once, across crashes and restarts: the query's checkpoint
(default ``<lake>/_checkpoints/device_minutes``) records the Kafka offsets and the window
state of every micro-batch, and the Delta sink commits each batch with its id, so a batch
that is run again after a crash is not written twice.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from ..bus.kafka_codec import schema as record_json_schema

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.streaming.query import StreamingQuery
    from pyspark.sql.types import DataType, StructType

log = logging.getLogger(__name__)

DEVICE_MINUTES = "device_minutes"
READING_KIND = "r"
COLUMNS_KIND = "C"
READINGS_KIND = "R"
PACKED = "r"
"""The readings of a record of readings one object each."""
COLUMNS = "c"
"""The readings of a record of readings in columns."""
COORDINATES = ("x", "y", "z")
QUERY_NAME = "iotstream-device-minutes"
POLL_SECONDS = 1
"""How often ``run`` looks for a stop signal while the query runs."""


@dataclass(frozen=True, slots=True)
class StreamSettings:
    """Where the job reads and writes, and how eagerly."""

    kafka_bootstrap: str
    lake_url: str
    topic: str = "mqtt-messages"
    checkpoint: str | None = None
    """The query's checkpoint; ``None``: ``<lake>/_checkpoints/device_minutes``."""
    watermark: float = 60.0
    """Seconds of device time a reading may arrive after a later one and still count."""
    trigger: float = 10.0
    """Seconds between micro-batches."""
    max_records: int | None = None
    """At most this many Kafka records per micro-batch (``None``: all there are)."""
    kafka_options: Mapping[str, str] | None = None
    """More options of Spark's Kafka source (``kafka.security.protocol``, ...)."""

    @property
    def lake(self) -> str:
        """The lake's URL, a local path made absolute (Spark resolves it from the JVM's cwd)."""
        url = self.lake_url
        if "://" not in url:
            url = str(Path(url).absolute())
        return url.rstrip("/")

    @property
    def table(self) -> str:
        return f"{self.lake}/{DEVICE_MINUTES}"

    @property
    def checkpoint_location(self) -> str:
        if self.checkpoint is not None:
            local = "://" not in self.checkpoint
            return str(Path(self.checkpoint).absolute()) if local else self.checkpoint
        return f"{self.lake}/_checkpoints/{DEVICE_MINUTES}"


# --- the record format ------------------------------------------------------------------


def _spark_type(node: Mapping[str, Any], defs: Mapping[str, Any]) -> DataType:
    """The Spark type of a JSON Schema node; an object without properties (a reading's
    fields ``f``) as the coordinates the job uses, as numbers (they hold any JSON values)."""
    from pyspark.sql.types import (
        ArrayType,
        DoubleType,
        LongType,
        StringType,
        StructField,
        StructType,
    )

    ref = node.get("$ref")
    if isinstance(ref, str):
        return _spark_type(defs[ref.removeprefix("#/$defs/")], defs)
    kind = node.get("type")
    if "const" in node or kind == "string":
        return StringType()
    if kind == "number":
        return DoubleType()
    if kind == "integer":
        return LongType()
    if kind == "array":
        return ArrayType(_spark_type(node["items"], defs))
    if kind == "object" and "properties" in node:
        return _struct(node, defs)
    if kind == "object":
        return StructType([StructField(axis, DoubleType()) for axis in COORDINATES])
    raise ValueError(f"no Spark type for JSON Schema {dict(node)}")


def _struct(definition: Mapping[str, Any], defs: Mapping[str, Any]) -> StructType:
    from pyspark.sql.types import StructField, StructType

    return StructType(
        [
            StructField(name, _spark_type(node, defs), nullable=True)
            for name, node in definition["properties"].items()
        ]
    )


def record_schema(document: Mapping[str, Any] | None = None) -> StructType:
    """The Spark schema of a reading's record value, derived from the bus's JSON Schema
    (``kafka_codec.schema()``): every member of its ``reading``, then ``r``, the readings of
    a packed record one object each (its ``readings``), and ``c``, those of a packed record
    in columns (its ``columns``). ``from_json`` with it ignores the members it does not
    name, so records of other kinds parse with a different ``k``."""
    document = record_json_schema() if document is None else document
    defs = document["$defs"]
    schema = _struct(defs["reading"], defs)
    for name, definition in ((PACKED, defs["readings"]), (COLUMNS, defs["columns"])):
        schema = schema.add(name, _spark_type(definition["properties"][name], defs))
    return schema


# --- the query --------------------------------------------------------------------------


def readings(records: DataFrame) -> DataFrame:
    """``device_id``, ``ts`` (microsecond timestamp), ``x``, ``y`` of each reading among the
    Kafka source's ``records``; other kinds and values that are not records are dropped."""
    from pyspark.sql import functions as F

    schema = record_schema()
    record = F.from_json(F.col("value").cast("string"), schema)
    parsed = records.select(record.alias("r"))
    # A reading's record is one reading, a packed record several: each becomes a row. The
    # columns are zipped into the packed objects' type (a cast between structs goes by
    # position: id, ts, at, f in both).
    names = ("id", "ts", "at", "f")
    one = F.array(F.struct(*(F.col(f"r.{name}").alias(name) for name in names)))
    zipped = F.arrays_zip(*(F.col(f"r.{COLUMNS}.{name}") for name in names))
    each = F.explode(
        F.when(F.col("r.k") == READING_KIND, one)
        .when(F.col("r.k") == COLUMNS_KIND, zipped.cast(schema[PACKED].dataType))
        .when(F.col("r.k") == READINGS_KIND, F.col(f"r.{PACKED}"))
    )
    return (
        parsed.select(each.alias("e"))
        .where(F.col("e.id").isNotNull() & F.col("e.ts").isNotNull())
        .select(
            F.col("e.id").alias("device_id"),
            # Rounded to the microsecond as the lake keeps times.
            F.timestamp_micros(F.round(F.col("e.ts") * 1_000_000).cast("long")).alias("ts"),
            F.col("e.f.x").alias("x"),
            F.col("e.f.y").alias("y"),
        )
    )


_STEPS = """
    zip_with(
        slice(points, 1, greatest(size(points) - 1, 0)),
        slice(points, 2, greatest(size(points) - 1, 0)),
        (a, b) -> named_struct(
            'd', hypot(b.x - a.x, b.y - a.y),
            's', (b.us - a.us) / 1e6))
"""


def device_minutes(points: DataFrame, watermark: float) -> DataFrame:
    """One row per device and minute of ``readings(...)`` (see the module docstring)."""
    from pyspark.sql import functions as F

    positioned = F.col("x").isNotNull() & F.col("y").isNotNull()
    minutes = (
        points.withWatermark("ts", f"{int(watermark * 1000)} milliseconds")
        .groupBy(F.col("device_id"), F.window("ts", "1 minute").alias("w"))
        .agg(
            F.count(F.lit(1)).alias("readings"),
            # Sorted by time (the struct's first member) once the minute is complete.
            F.collect_list(
                F.when(positioned, F.struct(F.unix_micros("ts").alias("us"), "x", "y"))
            ).alias("points"),
            F.min(F.when(positioned, F.col("x"))).alias("min_x"),
            F.min(F.when(positioned, F.col("y"))).alias("min_y"),
            F.max(F.when(positioned, F.col("x"))).alias("max_x"),
            F.max(F.when(positioned, F.col("y"))).alias("max_y"),
            F.min("ts").alias("first_ts"),
            F.max("ts").alias("last_ts"),
        )
        .withColumn("points", F.array_sort("points"))
        .withColumn("steps", F.expr(_STEPS))
        .withColumn("distance", F.expr("aggregate(steps, 0D, (total, step) -> total + step.d)"))
        .withColumn(
            "span",
            F.expr("(element_at(points, -1).us - element_at(points, 1).us) / 1e6"),
        )
    )
    return minutes.select(
        "device_id",
        F.col("w.start").alias("minute"),
        "readings",
        F.size("points").cast("long").alias("positions"),
        "distance",
        F.when(F.col("span") > 0, F.col("distance") / F.col("span")).alias("avg_speed"),
        F.expr(
            "array_max(transform(filter(steps, step -> step.s > 0), step -> step.d / step.s))"
        ).alias("max_speed"),
        "min_x",
        "min_y",
        "max_x",
        "max_y",
        "first_ts",
        "last_ts",
        F.to_date(F.col("w.start")).alias("date"),
    )


def start(spark: SparkSession, settings: StreamSettings) -> StreamingQuery:
    """Start the query that appends ``device_minutes`` (see the module docstring)."""
    source = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", settings.topic)
        # Only the first run: later ones go on from the checkpoint's offsets.
        .option("startingOffsets", "earliest")
        # Records the topic's retention deleted before they were read are skipped, not fatal.
        .option("failOnDataLoss", "false")
    )
    if settings.max_records is not None:
        source = source.option("maxOffsetsPerTrigger", str(settings.max_records))
    for key, value in (settings.kafka_options or {}).items():
        source = source.option(key, value)
    minutes = device_minutes(readings(source.load()), settings.watermark)
    return (
        minutes.writeStream.format("delta")
        .queryName(QUERY_NAME)
        .outputMode("append")
        .partitionBy("date")
        .option("checkpointLocation", settings.checkpoint_location)
        .trigger(processingTime=f"{int(settings.trigger * 1000)} milliseconds")
        .start(settings.table)
    )


def run(settings: StreamSettings, spark: SparkSession | None = None) -> None:
    """Run the job until SIGTERM or Ctrl-C, then stop the query (and the session it made)."""
    from .session import spark_session, stop_session

    stopping = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        # Only a flag: an exception raised inside a py4j call would break its connection.
        stopping.set()

    own_session = spark is None
    session = spark_session(lake_url=settings.lake) if spark is None else spark
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    query: StreamingQuery | None = None
    try:
        query = start(session, settings)
        log.info(
            "streaming %s from %s into %s (checkpoint %s)",
            settings.topic,
            settings.kafka_bootstrap,
            settings.table,
            settings.checkpoint_location,
        )
        while not stopping.is_set() and not query.awaitTermination(POLL_SECONDS):
            pass
        log.info("stopping")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if query is not None and query.isActive:
            query.stop()
        if own_session:
            stop_session(session)
