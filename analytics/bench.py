"""Benchmark of the analytics job: `python -m analytics.bench --out bench-results/analytics.json`.

1. transform: events/s of parse + window metrics over N generated JSON events (a batch, noop sink).
2. stream: events/s of the same events through the streaming query (file segments, state store,
   `availableNow` trigger, noop foreachBatch).
3. kafka (with `--kafka-bootstrap-servers`): the delay from producing the sale that moves the watermark
   past a window's end to that window's record on `analytics-results`. A sale made in real time
   waits for its window to end and for the watermark too, so its end-to-end delay is at most
   `60 s + watermark + that delay`.

The events are built inside Spark (`spark.range`), so generating a million costs seconds, not minutes.
Not asserted by any test: numbers for the README and for regressions by eye.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyspark
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from analytics.eventgen import order_event, to_line
from analytics.spark import build_session, kafka_package
from analytics.transforms import mark_final, window_metrics_from_json

EVENT_TYPES = ("order.created", "order.paid", "order.paid", "order.paid", "order.fulfilled", "order.payment_failed")


def generated_events(spark: SparkSession, count: int, *, users: int = 50_000, per_second: int = 200) -> DataFrame:
    """`count` JSON envelopes in a `value` column: half sales, 5% re-deliveries, 3 currencies."""
    start = int(datetime(2025, 1, 1, tzinfo=UTC).timestamp())
    ids = spark.range(count).withColumn("n", F.when(F.col("id") % 20 == 19, F.col("id") - 1).otherwise(F.col("id")))
    types = F.array(*[F.lit(kind) for kind in EVENT_TYPES])
    currency = F.array(F.lit("INR"), F.lit("USD"), F.lit("EUR"))
    envelope = F.struct(
        F.concat(F.lit("evt-"), F.col("n").cast("string")).alias("event_id"),
        F.element_at(types, (F.col("n") % len(EVENT_TYPES) + 1).cast("int")).alias("event_type"),
        F.lit(1).alias("version"),
        F.date_format(
            F.timestamp_seconds(F.lit(start) + F.col("n") / per_second), "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"
        ).alias("occurred_at"),
        F.lit("order-service").alias("source"),
        F.struct(
            F.concat(F.lit("ord-"), (F.col("n") / 3).cast("long").cast("string")).alias("order_id"),
            F.concat(F.lit("user-"), (F.hash(F.col("n")) % users).cast("string")).alias("user_id"),
            F.lit("PAID").alias("status"),
            F.struct(
                (F.col("n") % 100_000 + 100).alias("amount"),
                F.element_at(currency, (F.col("n") % 3 + 1).cast("int")).alias("currency"),
            ).alias("total"),
            (F.col("n") % 5 + 1).alias("items"),
            F.array().cast("array<string>").alias("lines"),
            F.lit(None).cast("string").alias("payment_id"),
        ).alias("data"),
    )
    return ids.select(F.to_json(envelope).alias("value"))


def bench_transform(spark: SparkSession, raw: DataFrame, count: int, *, runs: int) -> dict[str, Any]:
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        mark_final(window_metrics_from_json(raw, watermark="2 minutes"), final=True).write.format("noop").mode(
            "overwrite"
        ).save()
        seconds.append(time.perf_counter() - started)
    best = min(seconds)
    return {
        "events": count,
        "runs_seconds": [round(s, 3) for s in seconds],
        "events_per_second_best": round(count / best),
        "events_per_second_median": round(count / statistics.median(seconds)),
    }


def bench_stream(spark: SparkSession, raw: DataFrame, count: int, *, files: int, workdir: Path) -> dict[str, Any]:
    segments = workdir / "orders"
    raw.repartition(files).write.mode("overwrite").text(str(segments))
    for path in segments.glob("part-*"):
        path.rename(path.with_name(path.name.split(".")[0] + ".jsonl"))
    stream = (
        spark.readStream.schema("value string")
        .format("text")
        .option("pathGlobFilter", "*.jsonl")
        .option("maxFilesPerTrigger", str(max(1, files // 10)))
        .load(str(segments))
    )
    results = mark_final(window_metrics_from_json(stream, watermark="2 minutes"), final=True)
    windows = {"count": 0}

    def count_batch(batch: DataFrame, _batch_id: int) -> None:
        windows["count"] += batch.count()

    started = time.perf_counter()
    query = (
        results.writeStream.outputMode("append")
        .option("checkpointLocation", str(workdir / "checkpoint"))
        .foreachBatch(count_batch)
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    elapsed = time.perf_counter() - started
    return {
        "events": count,
        "micro_batches": len(query.recentProgress),
        "seconds": round(elapsed, 3),
        "events_per_second": round(count / elapsed),
        "windows_emitted": windows["count"],
    }


def bench_kafka(
    spark: SparkSession, bootstrap: str, *, windows: int, watermark_seconds: int, trigger: str
) -> dict[str, Any]:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.admin import KafkaAdminClient, NewTopic

    from analytics.job import Job
    from analytics.sinks import KafkaSink
    from analytics.sources import KafkaSource

    suffix = uuid.uuid4().hex[:8]
    orders, results = f"bench-orders-{suffix}", f"bench-results-{suffix}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(orders, 3, 1), NewTopic(results, 1, 1)])
    admin.close()
    watermark = f"{watermark_seconds} seconds"
    job = Job(
        spark=spark,
        source=KafkaSource(bootstrap_servers=bootstrap, topic=orders),
        sinks=[KafkaSink(bootstrap_servers=bootstrap, topic=results)],
        watermark=watermark,
    )
    query, _monitor = job.start(
        checkpoint_location=tempfile.mkdtemp(prefix="bench-ckpt-"), trigger_interval=trigger, query_name="bench_kafka"
    )
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = KafkaConsumer(
        results, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=200
    )
    base = datetime(2025, 1, 1, tzinfo=UTC)
    delays = []

    def sale(number: int, moment: datetime) -> None:
        event = order_event(
            event_id=f"bench-{suffix}-{number}",
            event_type="order.paid",
            occurred_at=moment,
            order_id=f"o-{number}",
            user_id=f"u-{number % 7}",
        )
        producer.send(orders, key=event["data"]["order_id"].encode(), value=to_line(event).encode())
        producer.flush()

    try:
        sale(0, base + timedelta(seconds=10))
        for minute in range(windows):
            window_end = base + timedelta(minutes=minute + 1)
            # The closing sale: its event time takes the watermark past the window's end.
            sent = time.perf_counter()
            sale(minute + 1, window_end + timedelta(seconds=watermark_seconds + 10))
            wanted = (base + timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")
            deadline = sent + 120
            while time.perf_counter() < deadline:
                seen = [json.loads(message.value)["window_start"] for message in consumer]
                if wanted in seen:
                    delays.append(time.perf_counter() - sent)
                    break
            else:
                raise TimeoutError(f"window {wanted} did not reach {results} in 120 s")
    finally:
        query.stop()
        producer.close()
        consumer.close()
    return {
        "windows": windows,
        "trigger_interval": trigger,
        "watermark": watermark,
        "emit_delay_seconds": {
            "median": round(statistics.median(delays), 3),
            "max": round(max(delays), 3),
            "all": [round(d, 3) for d in delays],
        },
        "real_time_sale_worst_case_seconds": round(60 + watermark_seconds + max(delays), 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench-results/analytics.json")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--files", type=int, default=40, help="segments for the streaming run")
    parser.add_argument("--skip-stream", action="store_true")
    parser.add_argument("--kafka-bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument("--kafka-windows", type=int, default=5)
    parser.add_argument("--kafka-watermark-seconds", type=int, default=5)
    parser.add_argument("--trigger-interval", default="1 second")
    args = parser.parse_args(argv)

    packages = [kafka_package()] if args.kafka_bootstrap_servers else []
    spark = build_session(
        "cloudshop-analytics-bench", master=os.environ.get("SPARK_MASTER", "local[2]"), packages=packages
    )
    spark.sparkContext.setLogLevel("ERROR")
    report: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "spark": pyspark.__version__,
        "master": spark.sparkContext.master,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    raw = generated_events(spark, args.events).persist()
    raw.count()
    report["transform"] = bench_transform(spark, raw, args.events, runs=args.runs)
    print(json.dumps({"transform": report["transform"]}), flush=True)
    if not args.skip_stream:
        workdir = Path(tempfile.mkdtemp(prefix="analytics-bench-"))
        try:
            report["stream"] = bench_stream(spark, raw, args.events, files=args.files, workdir=workdir)
            print(json.dumps({"stream": report["stream"]}), flush=True)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
    raw.unpersist()
    if args.kafka_bootstrap_servers:
        report["kafka"] = bench_kafka(
            spark,
            args.kafka_bootstrap_servers,
            windows=args.kafka_windows,
            watermark_seconds=args.kafka_watermark_seconds,
            trigger=args.trigger_interval,
        )
        print(json.dumps({"kafka": report["kafka"]}), flush=True)
    else:
        report["kafka"] = None
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    spark.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
