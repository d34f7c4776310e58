"""A SparkSession for the lake: Delta Lake's extensions and catalog, the jars, and settings.

Where the jars come from (``SparkSettings.from_env``):

- ``IOTSTREAM_SPARK_JARS``: jar files or directories of jars, comma-separated, put on the
  classpath as ``spark.jars`` (nothing is downloaded at session start). The repository's
  ``python -m harness.spark`` fetches them with Maven once and prints their directory.
- otherwise ``IOTSTREAM_SPARK_PACKAGES`` (default ``PACKAGES``, plus ``S3_PACKAGES`` for an
  ``s3://`` lake): Maven coordinates that Spark resolves with Ivy as
  ``spark.jars.packages`` at session start from Maven Central (``ivysettings.xml``), cached
  in ``IOTSTREAM_SPARK_IVY`` (default ``${XDG_CACHE_HOME:-~/.cache}/iotstream/ivy``). On a
  cluster, where ``spark-submit`` or the cluster's defaults may already provide them, set
  ``IOTSTREAM_SPARK_PACKAGES=none``.

``IOTSTREAM_SPARK_MASTER`` (default ``local[2]``) picks the cluster. A local master gets
settings that start and answer fast on a small machine (``LOCAL_CONF``).

Tables stay at Delta protocol reader 1 / writer 2, which delta-rs (the lake's writer) reads
and writes: new tables get no deletion vectors, column mapping or other table features.

For an ``s3://`` lake the ``AWS_*`` variables delta-rs reads (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``, ``AWS_ENDPOINT_URL``)
configure Hadoop's S3A file system, which serves ``s3://`` URLs too.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPARK_VERSION = "4.2.0"
"""The pyspark release of the ``spark`` extra; the jars must be built for it."""
DELTA_VERSION = "4.4.0"
SCALA_VERSION = "2.13"
HADOOP_VERSION = "3.5.0"
"""The Hadoop client pyspark ships; hadoop-aws must be the same release."""

DELTA_PACKAGE = f"io.delta:delta-spark_{SCALA_VERSION}:{DELTA_VERSION}"
KAFKA_PACKAGE = f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_VERSION}:{SPARK_VERSION}"
AWS_SDK_VERSION = "2.35.4"
"""The AWS SDK v2 release hadoop-aws is built with."""
HADOOP_AWS_PACKAGE = f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}"
PACKAGES = (DELTA_PACKAGE, KAFKA_PACKAGE)
S3_PACKAGES = (
    HADOOP_AWS_PACKAGE,
    *(
        f"software.amazon.awssdk:{name}:{AWS_SDK_VERSION}"
        for name in ("s3", "s3-transfer-manager", "sts")
    ),
)
"""S3A for an ``s3://`` lake: hadoop-aws and the parts of the AWS SDK it uses."""
S3_EXCLUDES = ("software.amazon.awssdk:bundle",)
"""hadoop-aws depends on the SDK's ``bundle`` of every AWS service (about 690 MB)."""

IVY_SETTINGS = "ivysettings.xml"
"""Beside this module: Ivy resolves ``spark.jars.packages`` from Maven Central only."""

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    # Protocol reader 1 / writer 2 for new tables, as delta-rs writes them (these are Delta's
    # defaults too; stated so that a cluster's defaults cannot upgrade the lake's tables).
    "spark.databricks.delta.properties.defaults.minReaderVersion": "1",
    "spark.databricks.delta.properties.defaults.minWriterVersion": "2",
    "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
    "spark.databricks.delta.properties.defaults.columnMapping.mode": "none",
}
COMMON_CONF = {
    # Event times are UTC epoch seconds; windows and dates follow UTC, not the host's zone.
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    "spark.log.level": "WARN",
}
SERIAL_GC = "-XX:+UseSerialGC"
FAST_JVM_OPTIONS = f"{SERIAL_GC} -XX:TieredStopAtLevel=1"
LOCAL_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    # Short-lived JVMs on two cores: a simple collector and no slow optimising compiler.
    "spark.driver.extraJavaOptions": FAST_JVM_OPTIONS,
    "spark.executor.extraJavaOptions": FAST_JVM_OPTIONS,
    "spark.databricks.delta.snapshotPartitions": "2",
}


class SparkNotInstalled(ConfigError, ImportError):
    """pyspark is missing: the ``spark`` extra is not installed."""


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "iotstream"


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def jar_files(entries: Iterable[str]) -> tuple[str, ...]:
    """Every jar named by ``entries``: jar files as given, directories as their ``*.jar``."""
    jars: list[str] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_dir():
            jars.extend(str(jar.absolute()) for jar in sorted(path.glob("*.jar")))
        else:
            jars.append(str(path.absolute()) if "://" not in entry else entry)
    return tuple(jars)


def is_s3(url: str | None) -> bool:
    return url is not None and urlsplit(url).scheme in ("s3", "s3a")


@dataclass(frozen=True, slots=True)
class SparkSettings:
    """How to build a session; ``from_env`` reads the ``IOTSTREAM_SPARK_*`` variables."""

    master: str = "local[2]"
    jars: tuple[str, ...] = ()
    """Jar files for ``spark.jars``; when empty, ``packages`` are resolved instead."""
    packages: tuple[str, ...] | None = None
    """Maven coordinates for ``spark.jars.packages``; ``None``: ``PACKAGES`` (and hadoop-aws
    for an S3 lake); empty: none (the cluster provides them)."""
    ivy_dir: str = field(default_factory=lambda: str(_cache_root() / "ivy"))
    lake_url: str | None = None
    """The lake the session reads and writes; an ``s3://`` URL adds the S3 settings."""
    app_name: str = "iotstream"
    conf: Mapping[str, str] = field(default_factory=dict)
    """Any other Spark settings; these win over the ones above."""

    @classmethod
    def from_env(
        cls, lake_url: str | None = None, env: Mapping[str, str] | None = None
    ) -> SparkSettings:
        env = os.environ if env is None else env
        settings = cls(lake_url=lake_url)
        if env.get("IOTSTREAM_SPARK_MASTER"):
            settings = replace(settings, master=env["IOTSTREAM_SPARK_MASTER"])
        if env.get("IOTSTREAM_SPARK_JARS"):
            settings = replace(settings, jars=jar_files(_split(env["IOTSTREAM_SPARK_JARS"])))
        packages = env.get("IOTSTREAM_SPARK_PACKAGES")
        if packages:
            chosen = () if packages.strip() == "none" else tuple(_split(packages))
            settings = replace(settings, packages=chosen)
        if env.get("IOTSTREAM_SPARK_IVY"):
            settings = replace(settings, ivy_dir=env["IOTSTREAM_SPARK_IVY"])
        return settings

    @property
    def local(self) -> bool:
        return self.master.startswith("local")

    def resolved_packages(self) -> tuple[str, ...]:
        if self.jars:
            return ()
        if self.packages is not None:
            return self.packages
        return (*PACKAGES, *S3_PACKAGES) if is_s3(self.lake_url) else PACKAGES


def s3_conf(env: Mapping[str, str]) -> dict[str, str]:
    """Hadoop S3A settings from the ``AWS_*`` variables (the ones delta-rs reads)."""
    prefix = "spark.hadoop.fs.s3a."
    conf = {
        # s3:// URLs, as delta-rs and the lake's settings write them, go to S3A too.
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        f"{prefix}impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        # Streaming checkpoints go through FileContext, which looks the scheme up here.
        "spark.hadoop.fs.AbstractFileSystem.s3.impl": "org.apache.hadoop.fs.s3a.S3A",
        "spark.hadoop.fs.AbstractFileSystem.s3a.impl": "org.apache.hadoop.fs.s3a.S3A",
    }
    names = {
        "AWS_ACCESS_KEY_ID": "access.key",
        "AWS_SECRET_ACCESS_KEY": "secret.key",
        "AWS_SESSION_TOKEN": "session.token",
    }
    for variable, key in names.items():
        if env.get(variable):
            conf[prefix + key] = env[variable]
    if env.get("AWS_SESSION_TOKEN"):
        conf[prefix + "aws.credentials.provider"] = (
            "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
        )
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        conf[prefix + "endpoint.region"] = region
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        # An S3-compatible server (MinIO, s3proxy, ...) answers path-style requests.
        conf[prefix + "endpoint"] = endpoint
        conf[prefix + "path.style.access"] = "true"
        conf[prefix + "connection.ssl.enabled"] = str(endpoint.startswith("https:")).lower()
    return conf


def spark_conf(settings: SparkSettings, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every Spark setting a session of ``settings`` gets (no JVM needed to compute it)."""
    env = os.environ if env is None else env
    conf = {"spark.master": settings.master, "spark.app.name": settings.app_name}
    conf.update(DELTA_CONF)
    conf.update(COMMON_CONF)
    if settings.local:
        conf.update(LOCAL_CONF)
    if settings.jars:
        conf["spark.jars"] = ",".join(settings.jars)
    packages = settings.resolved_packages()
    if packages:
        conf["spark.jars.packages"] = ",".join(packages)
        conf["spark.jars.ivy"] = settings.ivy_dir
        conf["spark.jars.ivySettings"] = str(resources.files(__package__).joinpath(IVY_SETTINGS))
        if set(S3_PACKAGES) & set(packages):
            conf["spark.jars.excludes"] = ",".join(S3_EXCLUDES)
    if is_s3(settings.lake_url):
        conf.update(s3_conf(env))
    conf.update(settings.conf)
    return conf


def spark_session(
    settings: SparkSettings | None = None, lake_url: str | None = None
) -> SparkSession:
    """A SparkSession for the lake at ``lake_url`` (the running one if there is one).

    ``settings`` default to ``SparkSettings.from_env(lake_url)``. Raises ``SparkNotInstalled``
    (an ``ImportError``) naming the pip extra when pyspark is missing. ``stop_session`` stops
    it and its JVM."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        raise SparkNotInstalled(
            "the 'pyspark' module is needed for Spark: pip install 'iotstream[spark]'"
        ) from exc
    if settings is None:
        settings = SparkSettings.from_env(lake_url)
    elif lake_url is not None:
        settings = replace(settings, lake_url=lake_url)
    if settings.local:
        # Else Spark binds to the host name's address, which may not be the loopback one.
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    for key, value in spark_conf(settings).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def stop_session(session: SparkSession, timeout: float = 30.0) -> None:
    """Stop ``session`` and the JVM pyspark started for it, which ``session.stop()`` alone
    leaves running until Python exits."""
    from pyspark import SparkContext

    session.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    process: subprocess.Popen[bytes] | None = getattr(gateway, "proc", None)
    gateway.shutdown()
    SparkContext._gateway = None
    SparkContext._jvm = None
    if process is None:
        return
    # The JVM exits when its stdin (from this process) closes.
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
