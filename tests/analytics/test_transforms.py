"""The pure transforms on small batch frames, against a plain-Python reference."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.eventgen import EventGenerator, order_event, to_line
from tests.analytics.helpers import dumps, reference_batch

pytestmark = [pytest.mark.spark, pytest.mark.slow]

T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
WATERMARK = "2 minutes"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def paid(event_id: str, seconds: float, *, user: str = "u1", order: str | None = None, **kw: Any) -> dict[str, Any]:
    return order_event(
        event_id=event_id,
        event_type="order.paid",
        occurred_at=at(seconds),
        order_id=order or f"o-{event_id}",
        user_id=user,
        **kw,
    )


def lines_frame(spark, records: list[Any]):
    return spark.createDataFrame([(r if isinstance(r, str) else to_line(r),) for r in records], "value string")


def run_batch(spark, records: list[Any], *, watermark: str = WATERMARK) -> list[dict[str, Any]]:
    """The `--once` path on an in-memory batch: parse, aggregate, mark final, serialise."""
    from pyspark.sql import functions as F

    from analytics.transforms import mark_final_at, max_sale_time, parse_events, to_records, window_metrics

    events = parse_events(lines_frame(spark, records))
    max_time = events.agg(max_sale_time(events)).first()[0]
    results = mark_final_at(
        window_metrics(events, watermark=watermark),
        max_event_time=F.lit(max_time).cast("timestamp"),
        watermark=watermark,
    )
    rows = [json.loads(row["value"]) for row in to_records(results).collect()]
    return sorted(rows, key=lambda row: row["window_start"])


def test_a_sale_is_counted_in_its_minute(spark):
    # Given two sales by two users in the first minute and one in the second
    records = [
        paid("e1", 5, user="alice", amount=1000, items=2),
        paid("e2", 59.999, user="bob", amount=500, items=1),
        paid("e3", 60, user="alice", amount=250, items=3),
    ]
    # When the metrics are computed
    windows = run_batch(spark, records)
    # Then each minute has its own users, orders, revenue and items
    assert windows == [
        {
            "window_start": "2025-01-01T10:00:00Z",
            "window_end": "2025-01-01T10:01:00Z",
            "unique_users": 2,
            "orders": 2,
            "revenue": [{"amount": 1500, "currency": "INR"}],
            "items_sold": 3,
            "final": False,
        },
        {
            "window_start": "2025-01-01T10:01:00Z",
            "window_end": "2025-01-01T10:02:00Z",
            "unique_users": 1,
            "orders": 1,
            "revenue": [{"amount": 250, "currency": "INR"}],
            "items_sold": 3,
            "final": False,
        },
    ]


def test_the_result_frame_has_the_published_schema_and_values(spark):
    from pyspark.testing import assertDataFrameEqual

    from analytics.transforms import RESULT_COLUMNS, mark_final, parse_events, window_metrics

    records = [paid("e1", 1, user="a", amount=7, currency="USD", items=2), paid("e2", 2, user="a", amount=3)]
    actual = mark_final(window_metrics(parse_events(lines_frame(spark, records)), watermark=WATERMARK), final=True)
    expected = spark.createDataFrame(
        [(at(0), at(60), 1, 2, [(3, "INR"), (7, "USD")], 3, True)],
        "window_start timestamp, window_end timestamp, unique_users long, orders long, "
        "revenue array<struct<amount: long, currency: string>>, items_sold long, final boolean",
    )
    assert tuple(actual.columns) == RESULT_COLUMNS
    assertDataFrameEqual(actual, expected, checkRowOrder=False)


def test_a_duplicate_delivery_counts_once(spark):
    # Given the same event delivered three times (at-least-once relay) and a distinct one
    records = [paid("e1", 10, amount=100, items=2)] * 3 + [paid("e2", 20, user="u2", amount=1, items=1)]
    windows = run_batch(spark, records)
    assert [(w["orders"], w["unique_users"], w["revenue"], w["items_sold"]) for w in windows] == [
        (2, 2, [{"amount": 101, "currency": "INR"}], 3)
    ]


def test_a_user_buying_in_two_minutes_is_unique_in_each(spark):
    records = [paid("e1", 10, user="u1"), paid("e2", 20, user="u1"), paid("e3", 70, user="u1")]
    windows = run_batch(spark, records)
    assert [(w["unique_users"], w["orders"]) for w in windows] == [(1, 2), (1, 1)]


def test_revenue_is_summed_per_currency_never_across(spark):
    records = [
        paid("e1", 1, amount=100, currency="USD"),
        paid("e2", 2, amount=200, currency="INR"),
        paid("e3", 3, amount=300, currency="USD"),
        paid("e4", 4, amount=5, currency="EUR"),
    ]
    (window,) = run_batch(spark, records)
    assert window["revenue"] == [
        {"amount": 5, "currency": "EUR"},
        {"amount": 200, "currency": "INR"},
        {"amount": 400, "currency": "USD"},
    ]


def test_only_paid_orders_are_sales(spark):
    common = {"order_id": "o1", "user_id": "u1", "occurred_at": at(1)}
    records = [
        order_event(event_id=f"e-{kind}", event_type=kind, **common)
        for kind in ("order.created", "order.payment_failed", "order.cancelled", "order.refunded", "order.fulfilled")
    ]
    assert run_batch(spark, records) == []
    (window,) = run_batch(spark, [*records, paid("e-paid", 2, user="u1", order="o1")])
    assert window["orders"] == 1


def test_malformed_and_unknown_version_events_are_ignored_not_fatal(spark):
    good = paid("e1", 1)
    records = [
        "not json at all",
        "{}",
        {**paid("e2", 2), "version": 2},
        {**paid("e3", 3), "occurred_at": "yesterday-ish"},
        {**paid("e4", 4), "event_id": None},
        {**paid("e5", 5), "data": {"order_id": "o5"}},
        good,
    ]
    (window,) = run_batch(spark, records)
    assert window["orders"] == 1


def test_event_time_is_occurred_at_with_its_offset(spark):
    # 11:00:30+01:00 is 10:00:30 UTC: the first window, whatever the offset notation.
    records = [
        {**paid("e1", 0), "occurred_at": "2025-01-01T11:00:30+01:00"},
        {**paid("e2", 0), "occurred_at": "2025-01-01T10:00:45.123456Z"},
    ]
    (window,) = run_batch(spark, records)
    assert (window["window_start"], window["orders"]) == ("2025-01-01T10:00:00Z", 2)


def test_once_marks_only_windows_behind_the_watermark_final(spark):
    # Max event time 10:04:30, watermark 2 minutes -> horizon 10:02:30: windows ending by then are final.
    records = [paid("e1", 10), paid("e2", 90), paid("e3", 150), paid("e4", 270)]
    windows = run_batch(spark, records)
    assert [(w["window_start"][11:16], w["final"]) for w in windows] == [
        ("10:00", True),
        ("10:01", True),
        ("10:02", False),
        ("10:04", False),
    ]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    seed=st.integers(min_value=0, max_value=10_000),
    orders=st.integers(min_value=1, max_value=120),
    users=st.integers(min_value=1, max_value=15),
    duplicate_rate=st.sampled_from([0.0, 0.2, 0.5]),
)
def test_metrics_equal_the_reference_on_random_events(spark, seed, orders, users, duplicate_rate):
    # Given random lifecycles: repeat users within and across windows, duplicates, shuffled arrival
    generator = EventGenerator(seed=seed, users=users, duplicate_rate=duplicate_rate, mean_gap_seconds=3)
    events: list[Any] = list(generator.events(orders))
    random.Random(seed).shuffle(events)
    events.insert(len(events) // 2, "{broken")
    # When the batch transform runs
    actual = run_batch(spark, events)
    # Then it equals the plain-Python specification exactly
    expected = reference_batch(events, watermark=timedelta(minutes=2))
    assert actual == expected, dumps({"actual": actual, "expected": expected})
