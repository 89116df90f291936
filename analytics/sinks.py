"""Sinks of the job. Each takes result frames (`transforms.RESULT_COLUMNS`) and writes them out.

The stream has one query whose `foreachBatch` hands every micro-batch to every sink, so the state is
kept once whatever the number of sinks. Delivery is at least once: after a crash Spark replays the
last micro-batch, so a window can be written twice. The `windows` sink writes each window once
(`analytics.windows.WindowStore`: a replayed copy changes nothing), Kafka consumers key on
`window_start` (the windows consumer, `analytics.results_consumer`, stores them the same way),
Parquet and BigQuery readers deduplicate on `window_start` (taking `final = true` over a `--once`
snapshot).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pyspark.sql import DataFrame

from analytics.transforms import to_records
from analytics.windows import PREFIX as WINDOWS_PREFIX
from analytics.windows import WindowConflictError, WindowStore, parse_window

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    def write(self, results: DataFrame, batch_id: int | None) -> None:
        """Write one micro-batch (`batch_id`) or one `--once` batch (`batch_id` None)."""


@dataclass
class KafkaSink:
    """One JSON record per window on `analytics-results`, keyed by window start."""

    bootstrap_servers: str
    topic: str = "analytics-results"
    options: Mapping[str, str] = field(default_factory=dict)
    name: str = "kafka"

    def write(self, results: DataFrame, batch_id: int | None) -> None:
        (
            to_records(results)
            .write.format("kafka")
            .option("kafka.bootstrap.servers", self.bootstrap_servers)
            .options(**self.options)
            .option("topic", self.topic)
            .save()
        )


@dataclass
class ParquetSink:
    """Appends result rows to a Parquet data set: a local path, `s3a://` or `gs://`."""

    path: str
    name: str = "parquet"

    def write(self, results: DataFrame, batch_id: int | None) -> None:
        results.write.mode("append").parquet(self.path)


@dataclass
class WindowsSink:
    """One JSON object per window at `s3://<bucket>/windows/<window_start ISO>.json` (the API's feed),
    written once per window by the same `WindowStore` the windows consumer uses.

    Objects are written with boto3 from the driver: a micro-batch holds a handful of windows.
    `client_factory` builds the S3 client lazily, so nothing AWS is touched at import or set-up.
    """

    bucket: str
    client_factory: Callable[[], Any]
    prefix: str = WINDOWS_PREFIX
    name: str = "windows"
    _store: WindowStore | None = field(default=None, init=False, repr=False)

    def write(self, results: DataFrame, batch_id: int | None) -> None:
        if self._store is None:
            self._store = WindowStore(self.client_factory(), self.bucket, prefix=self.prefix)
        for record in to_records(results).collect():
            try:
                self._store.put(parse_window(record["value"], key=record["key"]))
            except WindowConflictError as exc:
                # A final window stays final: a `--once` batch (late events included) may count a closed
                # window differently from the stream that closed it; the first one stands.
                log.warning("kept the stored window: %s", exc)


@dataclass
class BigQuerySink:
    """Appends result rows to a BigQuery table with the spark-bigquery connector (Dataproc only).

    `table` is `project.dataset.table`. Without `temporary_gcs_bucket` the connector writes through
    the Storage Write API (`writeMethod=direct`); with it, through Parquet files in that bucket.
    """

    table: str
    temporary_gcs_bucket: str | None = None
    name: str = "bigquery"

    def write(self, results: DataFrame, batch_id: int | None) -> None:
        writer = results.write.format("bigquery").option("table", self.table).mode("append")
        if self.temporary_gcs_bucket:
            writer = writer.option("temporaryGcsBucket", self.temporary_gcs_bucket)
        else:
            writer = writer.option("writeMethod", "direct")
        writer.save()


@dataclass
class ConsoleSink:
    name: str = "console"

    def write(self, results: DataFrame, batch_id: int | None) -> None:
        label = "once" if batch_id is None else f"batch {batch_id}"
        print(f"--- analytics windows ({label}) ---", flush=True)
        results.orderBy("window_start").show(truncate=False)


@dataclass
class MemorySink:
    """Keeps every window it is given, as the JSON objects the other sinks publish (tests, demos)."""

    name: str = "memory"
    records: list[dict[str, Any]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def write(self, results: DataFrame, batch_id: int | None) -> None:
        rows = [json.loads(row["value"]) for row in to_records(results).collect()]
        with self._lock:
            self.records.extend(rows)

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return sorted(self.records, key=lambda record: record["window_start"])


def write_all(sinks: list[Sink], results: DataFrame, batch_id: int | None) -> None:
    """Hand one batch to every sink, computing it once. Empty batches write nothing."""
    owned = not results.is_cached
    cached = results.persist() if owned else results
    try:
        if cached.isEmpty():
            return
        for sink in sinks:
            sink.write(cached, batch_id)
            log.info("wrote batch %s to %s", batch_id, sink.name)
    finally:
        if owned:
            cached.unpersist()
