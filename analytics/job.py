"""The streaming analytics job: order events -> 1-minute sales windows -> sinks.

    python -m analytics.job --source kafka|files --sink kafka|parquet|windows|bigquery|console \
        [--sink ...] --watermark "2 minutes" --checkpoint-location PATH [--once]

Without `--once` the job streams in append mode: each window is written once, when the watermark
passes its end, with `final: true`. With `--once` it runs the same transforms as a batch over every
event so far, writes every window (those the watermark has not passed yet with `final: false`) and
exits.

Defaults come from the environment variables of the settings contract (`cloudshop.settings`):
KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, EVENT_LOG_DIR, ORDERS_TOPIC, ANALYTICS_TOPIC,
ANALYTICS_RESULTS_BUCKET, AWS_ENDPOINT_URL, AWS_REGION. They are read directly rather than through
`Settings` because on Dataproc only the `analytics` package ships, without the services' deps.

This file is also the Dataproc main file (the package comes as a zip on the Python path), hence the
absolute imports.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from analytics import sinks as sink_types
from analytics.kafka_auth import KafkaAuth, explain_kafka_failure, resolve_auth
from analytics.monitor import LateEventsMonitor
from analytics.sources import FileLogSource, KafkaSource, Source
from analytics.spark import build_session, hadoop_aws_package, kafka_package, s3a_settings
from analytics.transforms import mark_final, mark_final_at, max_sale_time, parse_events, window_metrics

log = logging.getLogger("analytics.job")

QUERY_NAME = "order_windows"
# The consumer groups the job may use on MSK (`cloudshop.estate.SCRAM_CLIENTS`, the ACL's prefix).
GROUP_ID_PREFIX = "cloudshop-analytics-job"
SINK_NAMES = ("kafka", "parquet", "windows", "bigquery", "console", "memory")

# The environment variables of the settings contract that this job reads (tests pin them to
# `cloudshop.settings.Settings`).
ENVIRONMENT = {
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "kafka_security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "event_log_dir": "EVENT_LOG_DIR",
    "orders_topic": "ORDERS_TOPIC",
    "analytics_topic": "ANALYTICS_TOPIC",
    "analytics_results_bucket": "ANALYTICS_RESULTS_BUCKET",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "aws_region": "AWS_REGION",
}


def _env(field: str, default: str | None = None) -> str | None:
    return os.environ.get(ENVIRONMENT[field], default) or default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analytics.job", description="1-minute sales windows from order events."
    )
    parser.add_argument("--source", choices=("kafka", "files"), required=True)
    parser.add_argument(
        "--sink", action="append", choices=SINK_NAMES, required=True, help="repeatable: one query, every sink"
    )
    parser.add_argument("--watermark", default="2 minutes", help='how late an event may be, e.g. "2 minutes"')
    parser.add_argument("--checkpoint-location", help="required when streaming (local path, gs:// or s3a://)")
    parser.add_argument("--once", action="store_true", help="batch over every event so far, then exit")
    parser.add_argument("--trigger-interval", default="5 seconds", help='micro-batch interval; "0" = no pause')
    parser.add_argument("--query-name", default=QUERY_NAME)

    kafka = parser.add_argument_group("Kafka")
    kafka.add_argument("--kafka-bootstrap-servers", default=_env("kafka_bootstrap_servers"))
    kafka.add_argument("--orders-topic", default=_env("orders_topic", "orders"))
    kafka.add_argument("--results-topic", default=_env("analytics_topic", "analytics-results"))
    kafka.add_argument("--starting-offsets", default="earliest", help="first start only; then the checkpoint")
    kafka.add_argument("--max-offsets-per-trigger", type=int)
    kafka.add_argument("--kafka-security-protocol", default=_env("kafka_security_protocol", "PLAINTEXT"))
    kafka.add_argument("--kafka-sasl-mechanism", default=os.environ.get("KAFKA_SASL_MECHANISM"))
    kafka.add_argument(
        "--kafka-username-secret", help="Secret Manager version name holding the SASL username (Dataproc)"
    )
    kafka.add_argument(
        "--kafka-password-secret", help="Secret Manager version name holding the SASL password (Dataproc)"
    )
    kafka.add_argument(
        "--kafka-truststore",
        default=os.environ.get("KAFKA_SSL_TRUSTSTORE"),
        help="PEM file of the CA certificates to trust (a broker with a private CA); MSK needs none",
    )
    kafka.add_argument(
        "--kafka-group-id-prefix",
        default=GROUP_ID_PREFIX,
        help="prefix of the consumer group ids Spark makes up; the cluster's ACLs allow the job this prefix",
    )

    files = parser.add_argument_group("file log")
    files.add_argument("--event-log-dir", default=_env("event_log_dir", ".cloudshop/events"))

    out = parser.add_argument_group("sinks")
    out.add_argument("--parquet-path", help="parquet sink: local path, s3a://bucket/prefix or gs://bucket/prefix")
    out.add_argument("--results-bucket", default=_env("analytics_results_bucket"), help="windows sink bucket")
    out.add_argument("--bigquery-table", help="bigquery sink: project.dataset.table")
    out.add_argument("--bigquery-temporary-gcs-bucket", help="bigquery sink: indirect write through GCS")
    return parser


@dataclass
class Job:
    """A wired job: a session, a source, the sinks; `run_once` or `start`."""

    spark: SparkSession
    source: Source
    sinks: list[sink_types.Sink]
    watermark: str

    def run_once(self) -> DataFrame:
        """Every event so far -> every window, written to every sink; returns the results."""
        events = parse_events(self.source.read_batch(self.spark)).persist()
        try:
            (max_micros,) = events.agg(F.unix_micros(max_sale_time(events))).collect()[0]
            max_event_time = F.expr(f"timestamp_micros({int(max_micros)})") if max_micros is not None else F.lit(None)
            results = mark_final_at(
                window_metrics(events, watermark=self.watermark),
                max_event_time=max_event_time.cast("timestamp"),
                watermark=self.watermark,
            ).persist()
            sink_types.write_all(self.sinks, results, None)
            return results
        finally:
            events.unpersist()

    def start(
        self,
        *,
        checkpoint_location: str,
        trigger_interval: str | None = "5 seconds",
        query_name: str = QUERY_NAME,
    ) -> tuple[StreamingQuery, LateEventsMonitor]:
        """Start the streaming query; returns it with the monitor counting its late events."""
        results = mark_final(
            window_metrics(parse_events(self.source.read_stream(self.spark)), watermark=self.watermark),
            final=True,
        )
        monitor = LateEventsMonitor(query_name)
        self.spark.streams.addListener(monitor)
        sinks = list(self.sinks)

        def write_batch(batch: DataFrame, batch_id: int) -> None:
            sink_types.write_all(sinks, batch, batch_id)

        writer = (
            results.writeStream.outputMode("append")
            .queryName(query_name)
            .option("checkpointLocation", checkpoint_location)
            .foreachBatch(write_batch)
        )
        if trigger_interval and trigger_interval.strip() not in ("0", ""):
            writer = writer.trigger(processingTime=trigger_interval)
        return writer.start(), monitor


def kafka_auth(args: argparse.Namespace, *, read_secret: Callable[[str], str] | None = None) -> KafkaAuth:
    kwargs: dict[str, Any] = {}
    if read_secret is not None:
        kwargs["read_secret"] = read_secret
    return resolve_auth(
        security_protocol=args.kafka_security_protocol,
        sasl_mechanism=args.kafka_sasl_mechanism,
        username=os.environ.get("KAFKA_SASL_USERNAME"),
        password=os.environ.get("KAFKA_SASL_PASSWORD"),
        username_secret=args.kafka_username_secret,
        password_secret=args.kafka_password_secret,
        truststore=args.kafka_truststore,
        **kwargs,
    )


def _uses_kafka(args: argparse.Namespace) -> bool:
    return args.source == "kafka" or "kafka" in args.sink


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if not args.once and not args.checkpoint_location:
        parser.error("--checkpoint-location is required when streaming (or pass --once)")
    if _uses_kafka(args) and not args.kafka_bootstrap_servers:
        parser.error("Kafka needs --kafka-bootstrap-servers or KAFKA_BOOTSTRAP_SERVERS")
    if "parquet" in args.sink and not args.parquet_path:
        parser.error("the parquet sink needs --parquet-path")
    if "windows" in args.sink and not args.results_bucket:
        parser.error("the windows sink needs --results-bucket or ANALYTICS_RESULTS_BUCKET")
    if "bigquery" in args.sink and not args.bigquery_table:
        parser.error("the bigquery sink needs --bigquery-table")
    if "memory" in args.sink:
        parser.error("the memory sink lives in-process only (tests); use console from the command line")


def spark_requirements(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The Maven packages and settings a local session needs for these sources and sinks."""
    packages: list[str] = []
    conf: dict[str, str] = {}
    if _uses_kafka(args):
        packages.append(kafka_package())
    if "parquet" in args.sink and str(args.parquet_path).startswith("s3a://"):
        packages.append(hadoop_aws_package())
        conf.update(s3a_settings(_env("aws_endpoint_url")))
    return packages, conf


def make_source(args: argparse.Namespace, auth: KafkaAuth) -> Source:
    if args.source == "kafka":
        return KafkaSource(
            bootstrap_servers=args.kafka_bootstrap_servers,
            topic=args.orders_topic,
            starting_offsets=args.starting_offsets,
            max_offsets_per_trigger=args.max_offsets_per_trigger,
            group_id_prefix=args.kafka_group_id_prefix,
            options=auth.spark_options(),
        )
    return FileLogSource(event_log_dir=args.event_log_dir, topic=args.orders_topic)


def s3_client_factory() -> Callable[[], Any]:
    def build() -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=_env("aws_endpoint_url"), region_name=_env("aws_region", "eu-west-1"))

    return build


def make_sinks(args: argparse.Namespace, auth: KafkaAuth) -> list[sink_types.Sink]:
    built: list[sink_types.Sink] = []
    for name in dict.fromkeys(args.sink):
        if name == "kafka":
            built.append(
                sink_types.KafkaSink(
                    bootstrap_servers=args.kafka_bootstrap_servers,
                    topic=args.results_topic,
                    options=auth.spark_options(),
                )
            )
        elif name == "parquet":
            built.append(sink_types.ParquetSink(path=args.parquet_path))
        elif name == "windows":
            built.append(sink_types.WindowsSink(bucket=args.results_bucket, client_factory=s3_client_factory()))
        elif name == "bigquery":
            built.append(
                sink_types.BigQuerySink(
                    table=args.bigquery_table, temporary_gcs_bucket=args.bigquery_temporary_gcs_bucket
                )
            )
        elif name == "console":
            built.append(sink_types.ConsoleSink())
    return built


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    parser = build_parser()
    args = parser.parse_args(argv)
    validate(args, parser)
    auth = kafka_auth(args) if _uses_kafka(args) else KafkaAuth()
    try:
        return run(args, auth)
    except Exception as exc:
        explained = explain_kafka_failure(exc, auth)
        if explained is None:
            raise
        log.error("%s", explained)
        return 1


def run(args: argparse.Namespace, auth: KafkaAuth) -> int:
    """Build the session and the job, then run it once or stream until a signal; the exit status."""
    packages, conf = spark_requirements(args)
    spark = build_session("cloudshop-analytics", packages=packages, conf=conf)
    spark.sparkContext.setLogLevel(os.environ.get("SPARK_LOG_LEVEL", "WARN"))
    job = Job(spark=spark, source=make_source(args, auth), sinks=make_sinks(args, auth), watermark=args.watermark)

    if args.once:
        results = job.run_once()
        summary = results.agg(
            F.count("*").alias("windows"), F.sum(F.col("final").cast("int")).alias("final")
        ).collect()[0]
        print(json.dumps({"windows": summary["windows"], "final": summary["final"] or 0}), flush=True)
        return 0

    query, monitor = job.start(
        checkpoint_location=args.checkpoint_location,
        trigger_interval=args.trigger_interval,
        query_name=args.query_name,
    )

    stopping: list[int] = []
    # The handler only records the signal: stopping the query is a JVM call, made from the loop below
    # rather than from inside whatever call the signal interrupted.
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    signal.signal(signal.SIGINT, lambda signum, _frame: stopping.append(signum))
    while query.isActive and not stopping:
        query.awaitTermination(2)
    if stopping:
        log.info("signal %d: stopping the query", stopping[0])
        query.stop()
    log.info("stopped; late events dropped while running: %d", monitor.late_events)
    failure = query.exception()
    if failure is not None:
        log.error("%s", explain_kafka_failure(failure, auth) or f"the query failed: {failure}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
