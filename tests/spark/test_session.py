"""The Spark session on the lake: Delta tables that delta-rs writes, Spark reads, and back,
at protocol reader 1 / writer 2; the bus's records as Spark decodes them; settings."""

from __future__ import annotations

import asyncio
import re
import sys
import uuid
from importlib.metadata import version
from pathlib import Path

import orjson
import pyspark
import pytest
from deltalake import DeltaTable
from pyspark.sql import SparkSession

import harness
from harness import engines
from iotstream.bus import kafka_codec
from iotstream.lake.delta import DeltaLake
from iotstream.models import Batch, DeviceId, RawMessage, Reading
from iotstream.spark import PACKAGES, SparkSettings, session, spark_conf, spark_session
from iotstream.spark.stream import readings, record_schema

pytestmark = pytest.mark.spark

READINGS = [
    Reading(
        DeviceId.parse("robot-1"),
        {"x": 1.0, "y": 2.0, "heading": 90},
        1_700_000_000.25,
        1_700_000_000.5,
    ),
    Reading(DeviceId.parse("robot-2"), {"x": -3.5, "y": 4.0}, 1_700_000_060.0, 1_700_000_060.125),
]


def _append(url: Path | str, readings: list[Reading]) -> None:
    async def run() -> None:
        async with DeltaLake(str(url)) as lake:
            await lake.append(Batch(readings=readings))

    asyncio.run(run())


def _protocol(path: Path) -> tuple[int, int]:
    protocol = DeltaTable(str(path)).protocol()
    return protocol.min_reader_version, protocol.min_writer_version


def test_spark_reads_the_readings_delta_rs_wrote(spark: SparkSession, tmp_path: Path) -> None:
    _append(tmp_path / "lake", READINGS)
    rows = (
        spark.read.format("delta")
        .load(str(tmp_path / "lake" / "readings"))
        .selectExpr("device_id", "unix_micros(ts) AS ts_us", "x", "y", "fields")
        .orderBy("ts_us")
        .collect()
    )
    assert [row.asDict() for row in rows] == [
        {
            "device_id": "robot-1",
            "ts_us": 1_700_000_000_250_000,
            "x": 1.0,
            "y": 2.0,
            "fields": '{"heading":90}',
        },
        {
            "device_id": "robot-2",
            "ts_us": 1_700_000_060_000_000,
            "x": -3.5,
            "y": 4.0,
            "fields": None,
        },
    ]


def test_spark_reads_what_compaction_wrote(spark: SparkSession, tmp_path: Path) -> None:
    """Compacted files (sorted, times delta-encoded, zstd) read by Spark's vectorized reader."""
    url = tmp_path / "lake"
    sent = [
        Reading(
            DeviceId.parse(f"r{n % 3}"), {"x": n / 8, "y": -n / 4, "n": n}, 1.7e9 + n, 1.7e9 + n
        )
        for n in range(600)
    ]

    async def run() -> None:
        async with DeltaLake(str(url), vacuum_retention_hours=0) as lake:
            for first in range(0, 600, 200):
                await lake.append(Batch(readings=sent[first : first + 200]))
            await lake.compact()

    asyncio.run(run())
    assert len(DeltaTable(str(url / "readings")).file_uris()) == 1
    rows = (
        spark.read.format("delta")
        .load(str(url / "readings"))
        .selectExpr(
            "device_id", "unix_micros(ts) AS ts_us", "x", "y", "get_json_object(fields, '$.n') AS n"
        )
        .orderBy("ts_us")
        .collect()
    )
    assert [(r.device_id, r.ts_us, r.x, r.y, int(r.n)) for r in rows] == [
        (str(r.device_id), round(r.timestamp * 1e6), r.fields["x"], r.fields["y"], r.fields["n"])
        for r in sent
    ]


def test_delta_rs_reads_a_table_spark_wrote_and_appends_to_it(
    spark: SparkSession, tmp_path: Path
) -> None:
    path = tmp_path / "spark_table"
    spark.createDataFrame(
        [("robot-1", 1.5), ("robot-2", 2.5)], "device STRING, speed DOUBLE"
    ).write.format("delta").save(str(path))
    assert _protocol(path) == (1, 2)
    table = DeltaTable(str(path))
    assert sorted(table.to_pyarrow_table().to_pylist(), key=lambda row: row["device"]) == [
        {"device": "robot-1", "speed": 1.5},
        {"device": "robot-2", "speed": 2.5},
    ]


def test_spark_appends_keep_the_lake_table_at_reader_1_writer_2(
    spark: SparkSession, tmp_path: Path
) -> None:
    lake = tmp_path / "lake"
    _append(lake, READINGS[:1])
    readings = str(lake / "readings")
    spark.read.format("delta").load(readings).write.format("delta").mode("append").save(readings)
    assert _protocol(lake / "readings") == (1, 2)
    _append(lake, READINGS[1:])
    assert DeltaTable(readings).to_pyarrow_table().num_rows == 3
    assert spark.read.format("delta").load(readings).count() == 3


def test_settings_from_the_environment() -> None:
    packaged = spark_conf(SparkSettings.from_env(env={}))
    assert packaged["spark.jars.packages"] == ",".join(PACKAGES)
    assert "spark.jars" not in packaged
    assert Path(packaged["spark.jars.ivySettings"]).is_file()  # Maven Central only
    cluster = SparkSettings.from_env(
        env={"IOTSTREAM_SPARK_MASTER": "spark://head:7077", "IOTSTREAM_SPARK_PACKAGES": "none"}
    )
    conf = spark_conf(cluster)
    assert conf["spark.master"] == "spark://head:7077"
    assert "spark.jars.packages" not in conf
    assert "spark.ui.enabled" not in conf  # the fast local settings are for local masters only
    s3 = spark_conf(
        SparkSettings.from_env(lake_url="s3://bucket/lake", env={}),
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "key"},
    )
    assert s3["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert s3["spark.hadoop.fs.s3a.access.key"] == "key"
    assert "org.apache.hadoop:hadoop-aws:3.5.0" in s3["spark.jars.packages"].split(",")
    assert s3["spark.jars.excludes"] == "software.amazon.awssdk:bundle"


def test_a_missing_pyspark_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)  # what `import` finds without it
    with pytest.raises(ImportError, match=re.escape("pip install 'iotstream[spark]'")):
        spark_session(SparkSettings())


def test_the_jars_are_built_for_the_installed_pyspark() -> None:
    assert pyspark.__version__ == session.SPARK_VERSION == engines.spark_version()
    assert engines.pom_version(engines.SPARK_POM, "delta.version") == session.DELTA_VERSION
    assert version("delta-spark") == session.DELTA_VERSION
    assert engines.pom_version(engines.SPARK_POM, "hadoop.version") == session.HADOOP_VERSION
    assert engines.pom_version(engines.SPARK_POM, "awssdk.version") == session.AWS_SDK_VERSION
    shipped = Path(pyspark.__file__).parent / "jars"
    assert (shipped / f"hadoop-client-api-{session.HADOOP_VERSION}.jar").is_file()


def test_spark_decodes_the_bus_records(spark: SparkSession) -> None:
    names = [f.name for f in record_schema().fields]
    assert names == [*kafka_codec.schema()["$defs"]["reading"]["properties"], "r", "c"]
    reading = Reading(DeviceId.parse("robot-1"), {"x": 1.5, "y": -2.0, "note": "hi"}, 1.000001, 2)
    packed = [
        Reading(DeviceId.parse("robot-4"), {"x": float(n), "y": 0.5}, 5.0 + n, 6.0)
        for n in range(3)
    ]
    [(_, pack, _)] = kafka_codec.encode_batch(Batch(readings=packed), partitions=1).live
    assert orjson.loads(pack)["k"] == kafka_codec.COLUMNS
    # As earlier bridges packed readings: one object each.
    earlier = orjson.dumps(
        {
            "k": kafka_codec.READINGS,
            "r": [{"id": "robot-5", "ts": 8.0, "at": 8.5, "f": {"x": 3.0, "y": 4.0}}],
        }
    )
    values = [
        kafka_codec.encode(reading)[1],
        kafka_codec.encode(Reading(DeviceId.parse("robot-2"), {"battery": 80}, 3.0, 3.0))[1],
        kafka_codec.encode(RawMessage("factory/door", b"open", 4.0))[1],
        b"not a record",
        b'{"k": "r", "id": "robot-3"}',
        pack,
        b'{"k": "R", "r": "not readings"}',
        earlier,
        b'{"k": "C", "c": {"id": "not columns"}}',
    ]
    records = spark.createDataFrame([(value,) for value in values], "value BINARY")
    rows = readings(records).selectExpr("device_id", "unix_micros(ts) AS us", "x", "y").collect()
    assert [row.asDict() for row in rows] == [
        {"device_id": "robot-1", "us": 1_000_001, "x": 1.5, "y": -2.0},
        {"device_id": "robot-2", "us": 3_000_000, "x": None, "y": None},
        {"device_id": "robot-4", "us": 5_000_000, "x": 0.0, "y": 0.5},
        {"device_id": "robot-4", "us": 6_000_000, "x": 1.0, "y": 0.5},
        {"device_id": "robot-4", "us": 7_000_000, "x": 2.0, "y": 0.5},
        {"device_id": "robot-5", "us": 8_000_000, "x": 3.0, "y": 4.0},
    ]


@pytest.mark.s3
def test_a_lake_on_s3(
    spark: SparkSession, s3_server: harness.Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The S3A settings ``spark_session`` derives from the ``AWS_*`` variables reach a lake
    on S3 (applied to the shared session here, as Spark does for ``spark.hadoop.*``)."""
    env = {
        "AWS_ACCESS_KEY_ID": harness.S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": harness.S3_SECRET_KEY,
        "AWS_REGION": harness.S3_REGION,
        "AWS_ENDPOINT_URL": harness.s3_endpoint(s3_server),
        "AWS_ALLOW_HTTP": "true",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bucket = f"spark-{uuid.uuid4().hex[:8]}"
    harness.s3_bucket(s3_server, bucket)
    url = f"s3://{bucket}/lake"
    conf = spark_conf(SparkSettings(lake_url=url))
    hadoop = {k.removeprefix("spark.hadoop."): v for k, v in conf.items() if "hadoop" in k}
    try:
        for key, value in hadoop.items():
            spark.conf.set(key, value)
        _append(url, READINGS)
        assert spark.read.format("delta").load(f"{url}/readings").count() == 2
        spark.range(3).write.format("delta").save(f"{url}/spark_table")
        assert DeltaTable(f"{url}/spark_table").to_pyarrow_table().num_rows == 3
    finally:
        for key in hadoop:
            spark.conf.unset(key)
