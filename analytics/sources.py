"""Sources of the job: the Kafka topic `orders`, or the embedded file log's segment directory.

Every source yields a frame with one string column `value` (one JSON envelope per row), as a stream
(`read_stream`) or as a batch of every event so far (`read_batch`, for `--once`). Parsing is the
transforms' business.

File log layout (analytics/README.md, "File log layout"): `<EVENT_LOG_DIR>/<topic>/` holds segment
files `<20-digit first offset>.jsonl` that appear atomically (renamed into place) and never change,
and optionally one active segment `<offset>.jsonl.open` being appended to. Spark's file source tracks
*files*, not lines, so the stream reads the complete segments only (`*.jsonl`); a batch also reads
an active segment, whose half-written last line is then dropped as malformed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

SEALED_SEGMENT_GLOB = "*.jsonl"
ANY_SEGMENT_GLOB = "*.jsonl*"
_LINES = StructType([StructField("value", StringType())])


@dataclass(frozen=True)
class KafkaSource:
    """The `orders` topic. `options` are extra `kafka.*` consumer settings (security, SASL)."""

    bootstrap_servers: str
    topic: str = "orders"
    starting_offsets: str = "earliest"
    max_offsets_per_trigger: int | None = None
    # Spark makes up a consumer group id per query; on a cluster with ACLs it must start with a prefix
    # the job is allowed (`cloudshop.estate.SCRAM_CLIENTS`).
    group_id_prefix: str | None = None
    options: Mapping[str, str] = field(default_factory=dict)

    def _reader_options(self) -> dict[str, str]:
        options = {
            "kafka.bootstrap.servers": self.bootstrap_servers,
            "subscribe": self.topic,
            "startingOffsets": self.starting_offsets,
        }
        if self.group_id_prefix:
            options["groupIdPrefix"] = self.group_id_prefix
        options.update(self.options)
        return options

    def read_stream(self, spark: SparkSession) -> DataFrame:
        reader = spark.readStream.format("kafka").options(**self._reader_options())
        if self.max_offsets_per_trigger:
            reader = reader.option("maxOffsetsPerTrigger", str(self.max_offsets_per_trigger))
        return reader.load().selectExpr("CAST(value AS STRING) AS value")

    def read_batch(self, spark: SparkSession) -> DataFrame:
        options = self._reader_options()
        options["startingOffsets"] = "earliest"
        options["endingOffsets"] = "latest"
        return spark.read.format("kafka").options(**options).load().selectExpr("CAST(value AS STRING) AS value")


@dataclass(frozen=True)
class FileLogSource:
    """The embedded event log: the segment directory `<event_log_dir>/<topic>/`."""

    event_log_dir: str
    topic: str = "orders"
    max_files_per_trigger: int | None = None

    @property
    def directory(self) -> str:
        return f"{self.event_log_dir.rstrip('/')}/{self.topic}"

    def _ensure_directory(self) -> None:
        # The stream needs the directory to exist before the first segment is sealed.
        if "://" not in self.directory:
            Path(self.directory).mkdir(parents=True, exist_ok=True)

    def read_stream(self, spark: SparkSession) -> DataFrame:
        self._ensure_directory()
        reader = spark.readStream.schema(_LINES).format("text").option("pathGlobFilter", SEALED_SEGMENT_GLOB)
        if self.max_files_per_trigger:
            reader = reader.option("maxFilesPerTrigger", str(self.max_files_per_trigger))
        return reader.load(self.directory)

    def read_batch(self, spark: SparkSession) -> DataFrame:
        self._ensure_directory()
        return spark.read.schema(_LINES).format("text").option("pathGlobFilter", ANY_SEGMENT_GLOB).load(self.directory)


Source = KafkaSource | FileLogSource
