"""The windows consumer: records of the `analytics-results` topic -> the S3 objects the API serves.

In the cloud the Spark job runs on Dataproc and publishes its windows to MSK; this consumer, inside
AWS, puts them where `GET /api/v1/analytics/windows` reads them (`analytics.windows`), so GCP holds no
AWS credential. Two hosts run the same `WindowsConsumer`:

- the `cloudshop-<env>-analytics-windows` Lambda (`cdk/runtime/windows_consumer.py`), fed by an MSK
  event source mapping (IAM authentication) with batches grouped by topic-partition, values base64;
- `python -m analytics.results_consumer` on the full local profile (`cloudshop up --profile full`
  starts it): a kafka-python consumer of the same group, committing after each batch is stored.

Each record is checked (`analytics.windows.parse_window`) and stored once per window
(`WindowStore`). A record that is not a window, or a final window that contradicts the one stored,
goes to the dead letters, `s3://<bucket>/dead-letters/<topic>/<partition>/<offset>.json` (the raw
record, base64, with the reason), and is counted; it never blocks the records after it. A dead
letter's key is its record's position, so a batch delivered again writes the same dead letter again,
not a second one. A failure of S3 itself fails the batch, which is delivered again; nothing in it is
written twice.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from analytics.windows import InvalidWindowError, WindowConflictError, WindowStore, parse_window

log = logging.getLogger("analytics.results_consumer")

DEAD_LETTER_PREFIX = "dead-letters/"
# The consumer group of both hosts: the Lambda's event source mapping and the local process.
CONSUMER_GROUP = "cloudshop-windows-consumer"
DEFAULT_TOPIC = "analytics-results"


@dataclass(frozen=True)
class KafkaRecord:
    """One record as both hosts hand it over: bytes, not yet decoded."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class ConsumerStats:
    """What the consumer did, per outcome: `written`, `replaced`, `duplicate`, `stale`, `dead_letter`."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n

    def __getitem__(self, outcome: str) -> int:
        return self.counts[outcome]

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


class DeadLetters:
    """Records the consumer cannot store, kept whole with the reason, one object per record position."""

    def __init__(self, s3_client: Any, bucket: str, *, prefix: str = DEAD_LETTER_PREFIX) -> None:
        self.s3 = s3_client
        self.bucket = bucket
        self.prefix = prefix

    def key(self, record: KafkaRecord) -> str:
        return f"{self.prefix}{record.topic}/{record.partition}/{record.offset:020d}.json"

    def put(self, record: KafkaRecord, reason: str) -> str:
        key = self.key(record)
        body = {
            "reason": reason,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
            "key": base64.b64encode(record.key).decode() if record.key is not None else None,
            "value": base64.b64encode(record.value).decode() if record.value is not None else None,
        }
        self.s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=json.dumps(body, sort_keys=True).encode(),
            ContentType="application/json",
        )
        return key


class WindowsConsumer:
    """Stores the windows of a batch of records; `stats` counts what became of them."""

    def __init__(self, store: WindowStore, dead_letters: DeadLetters, *, stats: ConsumerStats | None = None) -> None:
        self.store = store
        self.dead_letters = dead_letters
        self.stats = stats or ConsumerStats()

    def handle(self, records: Iterable[KafkaRecord]) -> ConsumerStats:
        """Store every record in order; returns this batch's counts (also added to `stats`)."""
        batch = ConsumerStats()
        for record in records:
            try:
                outcome = self.store.put(parse_window(record.value, key=record.key)).value
            except (InvalidWindowError, WindowConflictError) as exc:
                where = self.dead_letters.put(record, str(exc))
                log.warning("dead letter %s (%s-%d@%d): %s", where, record.topic, record.partition, record.offset, exc)
                outcome = "dead_letter"
            batch.add(outcome)
        for outcome, n in batch.counts.items():
            self.stats.add(outcome, n)
        return batch


def records_from_msk_event(event: Mapping[str, Any]) -> list[KafkaRecord]:
    """The records of a Lambda MSK event (`records` grouped by "topic-partition", key and value base64),
    in partition and offset order."""
    records = []
    for batch in (event.get("records") or {}).values():
        for item in batch:
            records.append(
                KafkaRecord(
                    topic=str(item["topic"]),
                    partition=int(item["partition"]),
                    offset=int(item["offset"]),
                    key=_b64(item.get("key")),
                    value=_b64(item.get("value")),
                )
            )
    return sorted(records, key=lambda r: (r.topic, r.partition, r.offset))


def _b64(value: Any) -> bytes | None:
    if value is None:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (ValueError, TypeError):
        # Not base64 as Lambda sends it: keep the text itself, which then fails as a window.
        return str(value).encode()


# --- configuration and the local host ---------------------------------------------------------------

# The environment names of the settings contract (`cloudshop.settings.Settings`) this module reads;
# read directly because the analytics package does not depend on the services' code.
ENVIRONMENT = {
    "analytics_results_bucket": "ANALYTICS_RESULTS_BUCKET",
    "analytics_topic": "ANALYTICS_TOPIC",
    "kafka_bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
    "kafka_security_protocol": "KAFKA_SECURITY_PROTOCOL",
    "kafka_sasl_mechanism": "KAFKA_SASL_MECHANISM",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "aws_region": "AWS_REGION",
}


def _env(field_name: str, default: str | None = None) -> str | None:
    return os.environ.get(ENVIRONMENT[field_name]) or default


def consumer_from_environment(s3_client: Any | None = None) -> WindowsConsumer:
    """The consumer of the bucket `ANALYTICS_RESULTS_BUCKET` names (S3 at `AWS_ENDPOINT_URL` if set)."""
    bucket = _env("analytics_results_bucket")
    if not bucket:
        raise RuntimeError("ANALYTICS_RESULTS_BUCKET is not set: the windows consumer has nowhere to write")
    if s3_client is None:
        import boto3

        s3_client = boto3.client(
            "s3", endpoint_url=_env("aws_endpoint_url"), region_name=_env("aws_region", "eu-west-1")
        )
    return WindowsConsumer(WindowStore(s3_client, bucket), DeadLetters(s3_client, bucket))


def kafka_consumer(
    bootstrap_servers: str,
    *,
    topic: str = DEFAULT_TOPIC,
    group: str = CONSUMER_GROUP,
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str | None = None,
    **extra: Any,
) -> Any:
    """A kafka-python consumer as the event source mapping behaves: from the earliest offset on the
    group's first start, offsets committed only after a batch is stored."""
    from kafka import KafkaConsumer

    auth = {"sasl_mechanism": sasl_mechanism} if sasl_mechanism else {}
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers.split(","),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        security_protocol=security_protocol,
        **auth,
        **extra,
    )


def consume(consumer: WindowsConsumer, kafka: Any, stop: threading.Event, *, poll_ms: int = 1000) -> None:
    """Poll, store, commit, until `stop` is set. A batch that fails (S3 down) is read again from its
    first offsets after a pause, so it is retried, never skipped."""
    from kafka import TopicPartition

    while not stop.is_set():
        polled = kafka.poll(timeout_ms=poll_ms, max_records=500)
        records = [
            KafkaRecord(
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
            )
            for messages in polled.values()
            for message in messages
        ]
        if not records:
            continue
        try:
            batch = consumer.handle(records)
        except Exception:  # S3 unreachable and the like: rewind and retry the batch
            log.exception("storing a batch of %d records failed; retrying it", len(records))
            first: dict[tuple[str, int], int] = {}
            for record in records:
                first.setdefault((record.topic, record.partition), record.offset)
            for (topic, partition), offset in first.items():
                kafka.seek(TopicPartition(topic, partition), offset)
            stop.wait(1.0)
            continue
        kafka.commit()
        log.info("stored a batch: %s (since start: %s)", batch.as_dict(), consumer.stats.as_dict())


def main() -> int:
    """`python -m analytics.results_consumer`: the local host of the consumer (full profile)."""
    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    bootstrap = _env("kafka_bootstrap_servers")
    if not bootstrap:
        log.error("KAFKA_BOOTSTRAP_SERVERS is not set: the windows consumer reads Kafka (full profile only)")
        return 2
    consumer = consumer_from_environment()
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    topic = _env("analytics_topic", DEFAULT_TOPIC) or DEFAULT_TOPIC
    # The broker may still be starting: the consumer connects as soon as it answers.
    while not stop.is_set():
        try:
            kafka = kafka_consumer(
                bootstrap,
                topic=topic,
                security_protocol=_env("kafka_security_protocol", "PLAINTEXT") or "PLAINTEXT",
                sasl_mechanism=_env("kafka_sasl_mechanism"),
            )
            break
        except Exception as exc:  # NoBrokersAvailable: wait for it
            log.warning("Kafka not reachable yet (%s); retrying", exc)
            time.sleep(1.0)
    else:
        return 0
    log.info("consuming %s as group %s into s3://%s", topic, CONSUMER_GROUP, consumer.store.bucket)
    try:
        consume(consumer, kafka, stop)
    finally:
        kafka.close()
        log.info("stopped: %s", consumer.stats.as_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
