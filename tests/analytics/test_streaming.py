"""The stream: file log segments -> the job's query -> memory sink, with late and out-of-order events."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from analytics.eventgen import EventGenerator, order_event
from tests.analytics.helpers import dumps, reference_stream

pytestmark = [pytest.mark.spark, pytest.mark.slow]

T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def paid(event_id: str, seconds: float, *, user: str = "u1", amount: int = 100) -> dict[str, Any]:
    return order_event(
        event_id=event_id,
        event_type="order.paid",
        occurred_at=at(seconds),
        order_id=f"o-{event_id}",
        user_id=user,
        amount=amount,
    )


def wait_until(condition: Callable[[], bool], *, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def start_stream(spark, tmp_path):
    """Start the job's streaming query on a file log with a memory sink; stop it afterwards."""
    from analytics.job import Job
    from analytics.sinks import MemorySink
    from analytics.sources import FileLogSource

    started = []

    def start(event_log_dir, *, watermark: str = "2 minutes", name: str = "stream_test"):
        sink = MemorySink()
        job = Job(
            spark=spark,
            source=FileLogSource(event_log_dir=str(event_log_dir)),
            sinks=[sink],
            watermark=watermark,
        )
        query, monitor = job.start(
            checkpoint_location=str(tmp_path / f"checkpoint-{name}"), trigger_interval=None, query_name=name
        )
        started.append((query, monitor))
        return query, monitor, sink

    yield start
    for query, monitor in started:
        query.stop()
        spark.streams.removeListener(monitor)


def process(query, segment_writer_obj, records) -> None:
    """Seal one segment and let the query finish every batch it causes (no-data batches included)."""
    segment_writer_obj.write_segment(records)
    query.processAllAvailable()
    # The watermark moves at the end of a batch; the batch that emits the windows it closed follows.
    time.sleep(0.5)
    query.processAllAvailable()


def test_windows_are_emitted_once_final_and_late_events_are_dropped_and_counted(spark, segment_writer, start_stream):
    writer = segment_writer()
    query, monitor, sink = start_stream(writer.event_log_dir)

    # Batch 1: out of order within the batch, a duplicate delivery, users repeating.
    batch1 = [
        paid("a1", 50, user="u1"),
        paid("a2", 10, user="u2"),
        paid("a2", 10, user="u2"),
        paid("a3", 80, user="u1", amount=7),
        paid("a4", 30, user="u1"),
    ]
    process(query, writer, batch1)
    # Nothing is final yet: the watermark (10:01:20 - 2 min) is behind every window.
    assert sink.snapshot() == []

    # Batch 2: event time jumps to 10:05; an event for 10:00:40 is still ahead of the old watermark.
    batch2 = [paid("b1", 300, user="u3"), paid("b2", 40, user="u4")]
    process(query, writer, batch2)
    # Batch 3: the watermark is now 10:03:00; 10:00:45 and 10:02:59 are late, 10:04:10 is not.
    batch3 = [paid("c1", 45, user="u5"), paid("c1", 45, user="u5"), paid("c2", 179, user="u6"), paid("c3", 250)]
    process(query, writer, batch3)

    expected, late = reference_stream([batch1, batch2, batch3], watermark=timedelta(minutes=2))
    wait_until(lambda: len(sink.snapshot()) >= len(expected), what="the closed windows")
    assert sink.snapshot() == expected, dumps({"actual": sink.snapshot(), "expected": expected})
    assert [w["window_start"][11:16] for w in expected] == ["10:00", "10:01"]
    assert expected[0]["unique_users"] == 3 and expected[0]["orders"] == 4

    wait_until(lambda: monitor.late_events >= late, what="the late-event count")
    assert (late, monitor.late_events) == (3, 3)
    assert any(report.late_events == 3 for report in monitor.reports)


def test_a_random_stream_in_segments_matches_the_reference(spark, segment_writer, start_stream):
    # Given random lifecycles arriving in segments, each shuffled, some with a straggler from long ago
    generator = EventGenerator(seed=7, users=6, duplicate_rate=0.3, mean_gap_seconds=6)
    events = list(generator.events(90))
    batches: list[list[Any]] = [events[i : i + 40] for i in range(0, len(events), 40)]
    first_sale = next(event for event in events if event["event_type"] == "order.paid")
    for number, batch in enumerate(batches[1:], start=1):
        batch.append({**first_sale, "event_id": f"straggler-{number}"})
    writer = segment_writer()
    query, monitor, sink = start_stream(writer.event_log_dir, watermark="1 minute", name="random_stream")

    for batch in batches:
        process(query, writer, batch)

    expected, late = reference_stream(batches, watermark=timedelta(minutes=1))
    assert expected and late >= 1
    wait_until(lambda: len(sink.snapshot()) >= len(expected), what="the closed windows")
    assert sink.snapshot() == expected, dumps({"actual": sink.snapshot(), "expected": expected})
    wait_until(lambda: monitor.late_events >= late, what="the late-event count")
    assert monitor.late_events == late
