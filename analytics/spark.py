"""Building the SparkSession, and the Maven coordinates of the connectors the job needs.

On Dataproc the session already exists (spark-submit made it, with the packages of the cluster or
batch configuration) and `build_session` only picks it up; locally, `python -m analytics.job` starts
the JVM itself, so the packages are passed here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession

IVY_SETTINGS = Path(__file__).with_name("ivysettings.xml")

# pyspark releases reach PyPI before (or without) every Spark module reaching Maven Central:
# spark-sql-kafka-0-10 4.3.0 is not on Maven Central (checked 2026-11-25), and the 4.2.0 connector
# runs on the 4.3.0 runtime (the Kafka tests here prove it). Any other version maps to itself.
_KAFKA_CONNECTOR_VERSION = {"4.3.0": "4.2.0"}

# hadoop-aws must match the Hadoop that the Spark build ships (pyspark 4.3.0: 3.5.0).
_HADOOP_VERSION_FOR_SPARK = {"4": "3.5.0", "3": "3.3.4"}


def scala_binary_version(spark_version: str = pyspark.__version__) -> str:
    """Spark 4 is built for Scala 2.13 only; Spark 3.5 (Dataproc 2.2) for 2.12 by default."""
    return "2.13" if int(spark_version.split(".")[0]) >= 4 else "2.12"


def kafka_package(spark_version: str = pyspark.__version__) -> str:
    """Maven coordinates of the Structured Streaming Kafka connector for a Spark version.

    `ANALYTICS_KAFKA_PACKAGE` overrides the computed coordinates.
    """
    override = os.environ.get("ANALYTICS_KAFKA_PACKAGE")
    if override:
        return override
    version = _KAFKA_CONNECTOR_VERSION.get(spark_version, spark_version)
    return f"org.apache.spark:spark-sql-kafka-0-10_{scala_binary_version(spark_version)}:{version}"


def hadoop_aws_package(spark_version: str = pyspark.__version__) -> str:
    """Maven coordinates of hadoop-aws (the `s3a://` file system) for the Hadoop of a Spark build.

    It pulls the AWS SDK v2 bundle (about 690 MB, once, into the Ivy cache).
    `ANALYTICS_HADOOP_AWS_PACKAGE` overrides the computed coordinates.
    """
    override = os.environ.get("ANALYTICS_HADOOP_AWS_PACKAGE")
    if override:
        return override
    return f"org.apache.hadoop:hadoop-aws:{_HADOOP_VERSION_FOR_SPARK[spark_version.split('.')[0]]}"


def local_defaults() -> dict[str, str]:
    """Settings for a local-mode session: loopback only, small shuffles, UTC, no UI."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "2",
        "spark.default.parallelism": "2",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
        # The state of a few 1-minute windows is small; fewer files keep local checkpoints quick.
        "spark.sql.streaming.minBatchesToRetain": "20",
        "spark.jars.ivySettings": str(IVY_SETTINGS),
        "spark.jars.ivy": os.environ.get("SPARK_JARS_IVY", str(Path.home() / ".ivy2")),
    }


def s3a_settings(endpoint_url: str | None) -> dict[str, str]:
    """Hadoop settings for `s3a://` against a custom endpoint (moto locally); none for AWS itself."""
    if not endpoint_url:
        return {}
    return {
        "spark.hadoop.fs.s3a.endpoint": endpoint_url,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(endpoint_url.startswith("https")).lower(),
        "spark.hadoop.fs.s3a.endpoint.region": os.environ.get("AWS_REGION", "eu-west-1"),
        # moto's ETags and versioning are not those of S3; skip the checks that rely on them.
        "spark.hadoop.fs.s3a.change.detection.mode": "none",
        "spark.hadoop.fs.s3a.committer.magic.enabled": "false",
    }


def build_session(
    app_name: str = "cloudshop-analytics",
    *,
    master: str | None = None,
    packages: Iterable[str] = (),
    conf: Mapping[str, str] | None = None,
) -> SparkSession:
    """Get the running session (spark-submit, Dataproc) or start a local one with `packages`."""
    builder = SparkSession.builder.appName(app_name)
    active = SparkSession.getActiveSession()
    # Under spark-submit (Dataproc) the JVM is already there and PYSPARK_GATEWAY_PORT says so.
    if active is None and master is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        master = os.environ.get("SPARK_MASTER", "local[2]")
    settings: dict[str, str] = {}
    if master is not None and master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.master(master)
        settings.update(local_defaults())
    else:
        settings["spark.sql.session.timeZone"] = "UTC"
    wanted = sorted(set(packages))
    if wanted:
        settings["spark.jars.packages"] = ",".join(wanted)
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    # Times are rendered as UTC ISO-8601 whatever the cluster's default zone is.
    session.conf.set("spark.sql.session.timeZone", "UTC")
    return session
