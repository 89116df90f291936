"""The outbox relay as an asyncio task: it publishes on a wake-up, keeps events through a sink outage,
and its ceiling in events/s is measured on real storage and real sinks (dynalite, SQS on ElasticMQ, the
file log), the number printed so a run shows it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from cloudshop import aws
from cloudshop.dynamodb import dynamodb_for
from cloudshop.observability import Metrics
from cloudshop.settings import Settings
from cloudshop.sqs import sqs_for
from cloudshop.stream import FileEventLog
from eks_services.order.messaging import FanoutPublisher, SqsEventPublisher, StreamEventPublisher
from eks_services.order.model import OrderStatus
from eks_services.order.relay import CHECKOUT_SETTLE_SECONDS, OutboxRelay
from eks_services.order.repository import DynamoDBOrderRepository
from eks_services.order.service import order_event
from tests.services.order_fakes import InMemoryEventPublisher, InMemoryOrders
from tests.services.test_order_ports import new_order

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_wake_up_publishes_at_once_and_an_outage_only_delays() -> None:
    orders, publisher = InMemoryOrders(), InMemoryEventPublisher()
    relay = OutboxRelay(orders=orders, publisher=publisher, interval_seconds=30)
    relay.coalesce_seconds = 0.01
    publisher.failing = True
    relay.start()
    try:
        order = new_order()
        await orders.create(order, order_event(order))
        relay.wake()
        await asyncio.sleep(0.1)
        assert relay.failures >= 1 and not publisher.published
        publisher.failing = False
        relay.wake()
        for _ in range(100):
            if publisher.published:
                break
            await asyncio.sleep(0.01)
        assert [json.loads(e.payload)["event_type"] for e in publisher.published] == ["order.created"]
        assert not await orders.pending_events()
    finally:
        await relay.stop()


async def test_a_checkout_still_charging_has_its_two_events_published_together_in_one_write() -> None:
    """Given an order just written, its charge not answered yet, a round leaves its `order.created`
    waiting; once the order is PAID, one round publishes both events, in order, and marks them sent
    with one write."""
    orders, publisher = InMemoryOrders(), InMemoryEventPublisher()
    relay = OutboxRelay(orders=orders, publisher=publisher, interval_seconds=30, settle_seconds=CHECKOUT_SETTLE_SECONDS)
    order = new_order()
    await orders.create(order, order_event(order))

    assert await relay.run_once() == 0 and not publisher.published
    await asyncio.sleep(0.02)
    assert relay.oldest_pending_age() >= 0.02, "a waiting event counts in the lag"
    paid = order.move_to(OrderStatus.PAID, payment_id="pay_1")
    await orders.save(paid, order_event(paid))
    orders.calls.clear()

    assert await relay.run_once() == 2
    assert [json.loads(e.payload)["event_type"] for e in publisher.published] == ["order.created", "order.paid"]
    assert orders.calls == ["pending_events", "mark_sent"] and not await orders.pending_events()


async def test_an_order_that_does_not_settle_has_its_created_event_published_once_the_hold_is_over() -> None:
    """The charge's outcome is unknown, or the checkout died: `order.created` waits `settle_seconds`,
    no longer. An order written that long ago (a relay restarted, a backlog) goes out at once."""
    orders, publisher = InMemoryOrders(), InMemoryEventPublisher()
    relay = OutboxRelay(orders=orders, publisher=publisher, interval_seconds=30, settle_seconds=0.05)
    stalled, old = new_order(), new_order(created_at=datetime.now(UTC) - timedelta(seconds=5))
    for order in (stalled, old):
        await orders.create(order, order_event(order))

    assert await relay.run_once() == 1 and [e.order_id for e in publisher.published] == [old.id]
    await asyncio.sleep(0.06)
    assert await relay.drain() == 1 and [e.order_id for e in publisher.published] == [old.id, stalled.id]


async def test_the_lag_is_the_age_of_the_oldest_waiting_event_until_it_is_published() -> None:
    """Given an event 42 s old that the broker refuses, the relay's lag gauge reads its age; once it is
    published and the outbox is empty, the lag is 0."""
    orders, publisher = InMemoryOrders(), InMemoryEventPublisher()
    relay = OutboxRelay(orders=orders, publisher=publisher, interval_seconds=30)
    metrics = Metrics("order")
    relay.attach_metrics(metrics)

    def lag() -> float | None:
        return metrics.registry.get_sample_value("order_outbox_oldest_pending_age_seconds")

    assert lag() == 0
    order = new_order(created_at=datetime.now(UTC) - timedelta(seconds=42))
    await orders.create(order, order_event(order))
    publisher.failing = True
    with pytest.raises(RuntimeError):
        await relay.run_once()

    waiting = lag()
    assert waiting is not None and 42 <= waiting < 52

    publisher.failing = False
    await relay.drain()
    assert lag() == 0


async def test_relay_ceiling_in_events_per_second(make_settings: Callable[..., Settings], tmp_path: object) -> None:
    """Given 400 events waiting in 200 orders' outboxes, when one relay drains them to Kafka's stand-in
    (the file log) and SQS, then every event arrives once and the rate is reported."""
    settings = make_settings(dynamodb="dynalite", prefix="relay-")
    db = dynamodb_for(settings)
    orders = DynamoDBOrderRepository(db, table=settings.orders_table)
    relay = OutboxRelay(orders=orders, publisher=InMemoryEventPublisher(), interval_seconds=1)
    await relay.drain()  # start from an empty outbox
    made = []
    for _ in range(200):
        order = new_order()
        await orders.create(order, order_event(order))
        paid = order.move_to(OrderStatus.PAID, payment_id="pay_1")
        await orders.save(paid, order_event(paid))
        made.append(order.id)
    log = FileEventLog(f"{tmp_path}/events")
    sqs = sqs_for(settings)
    relay.publisher = FanoutPublisher(
        StreamEventPublisher(log, topic="orders"),
        SqsEventPublisher(sqs, queue_url=settings.order_events_queue_url),
    )

    started = time.perf_counter()
    sent = await relay.drain()
    elapsed = time.perf_counter() - started

    assert sent == 400
    published = [e for e in log.read("orders") if e["data"]["order_id"] in set(made)]  # type: ignore[index]
    assert len(published) == 400 and len({e["event_id"] for e in published}) == 400
    rate = sent / elapsed
    print(f"\n[relay] {sent} events in {elapsed:.2f}s: {rate:.0f} events/s (dynalite, file log, SQS on ElasticMQ)")
    await relay.publisher.aclose()
    await sqs.aclose()
    await db.aclose()
    aws.client("sqs", settings).purge_queue(QueueUrl=settings.order_events_queue_url)
