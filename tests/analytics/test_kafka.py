"""Kafka `orders` -> the job -> Kafka `analytics-results`, against the real broker of the test tooling."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics.eventgen import EventGenerator, order_event, to_line
from tests.analytics.helpers import dumps, reference_batch, reference_stream

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.kafka]

T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


def paid(event_id: str, seconds: float, *, user: str = "late-user") -> dict[str, Any]:
    return order_event(
        event_id=event_id,
        event_type="order.paid",
        occurred_at=T0 + timedelta(seconds=seconds),
        order_id=f"o-{event_id}",
        user_id=user,
    )


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        for event in events:
            producer.send(topic, key=event["data"]["order_id"].encode(), value=to_line(event).encode())
        producer.flush(timeout=30)
    finally:
        producer.close()


def consume(bootstrap: str, topic: str, *, count: int, timeout: float = 90.0) -> list[dict[str, Any]]:
    """Read `count` records from the start of `topic` (keys must equal window_start)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=1000)
    records: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            for message in consumer:
                value = json.loads(message.value)
                assert message.key.decode() == value["window_start"]
                records.append(value)
    finally:
        consumer.close()
    return sorted(records, key=lambda record: record["window_start"])


@pytest.fixture
def topics(kafka_server):
    suffix = uuid.uuid4().hex[:8]
    names = (f"orders-{suffix}", f"analytics-results-{suffix}")
    kafka_server.create_topics(list(names), partitions=3)
    return names


def test_orders_topic_to_analytics_results_topic(spark, kafka_server, topics, tmp_path):
    from analytics.job import Job
    from analytics.sinks import KafkaSink
    from analytics.sources import KafkaSource

    bootstrap = kafka_server.bootstrap_servers
    orders_topic, results_topic = topics
    # Given three minutes of random lifecycles (duplicates included) and a sale at 10:10 already on
    # the topic, keyed by order id over three partitions
    history = list(EventGenerator(seed=11, users=5, duplicate_rate=0.3, mean_gap_seconds=4).events(40))
    history = [event for event in history if event["occurred_at"] < "2025-01-01T10:03"]
    batch1 = [*history, paid("closing", 600, user="closer")]
    produce(bootstrap, orders_topic, batch1)

    # When the job streams from `orders` to `analytics-results`
    job = Job(
        spark=spark,
        source=KafkaSource(bootstrap_servers=bootstrap, topic=orders_topic),
        sinks=[KafkaSink(bootstrap_servers=bootstrap, topic=results_topic)],
        watermark="2 minutes",
    )
    query, monitor = job.start(
        checkpoint_location=str(tmp_path / "checkpoint"), trigger_interval=None, query_name="kafka_test"
    )
    try:
        query.processAllAvailable()
        # and sales for long-closed windows arrive after the watermark passed them
        batch2 = [paid("late-1", 30), paid("late-1", 30), paid("late-2", 100), paid("fresh", 660, user="fresh")]
        produce(bootstrap, orders_topic, batch2)
        query.processAllAvailable()

        # Then every closed window is on `analytics-results` once, final, equal to the reference
        expected, late = reference_stream([batch1, batch2], watermark=timedelta(minutes=2))
        assert [w["window_start"][11:16] for w in expected][-1] < "10:10" and late == 3
        records = consume(bootstrap, results_topic, count=len(expected))
        assert records == expected, dumps({"actual": records, "expected": expected})
        deadline = time.monotonic() + 30
        while monitor.late_events < late and time.monotonic() < deadline:
            time.sleep(0.2)
        assert monitor.late_events == late
    finally:
        query.stop()
        spark.streams.removeListener(monitor)

    # And a --once batch over the same topic writes every window, the open ones not final
    from analytics.sinks import MemorySink

    snapshot = MemorySink()
    Job(
        spark=spark,
        source=KafkaSource(bootstrap_servers=bootstrap, topic=orders_topic),
        sinks=[snapshot],
        watermark="2 minutes",
    ).run_once()
    assert snapshot.snapshot() == reference_batch([*batch1, *batch2], watermark=timedelta(minutes=2))
    assert [w["final"] for w in snapshot.snapshot()][-2:] == [False, False]
