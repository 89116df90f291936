"""The payment service's ports: one contract, run against the in-memory fakes and the real adapters.

`PaymentRepository` + `PaymentOutbox`: the fake, and DynamoDB on moto and on dynalite (the async
client). `EventPublisher`: the fake, and SQS on moto. A service test on the fakes therefore says what
the service does on the real adapters.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import pytest

from cloudshop import aws
from cloudshop.dynamodb import dynamodb_for
from cloudshop.errors import NotFound
from cloudshop.settings import Settings
from cloudshop.sqs import sqs_for
from eks_services.payment.model import ChargeRequest, Payment, PaymentStatus
from eks_services.payment.ports import EventPublisher, OutboxEvent, PaymentOutbox, PaymentRepository, StalePayment
from eks_services.payment.publisher import SqsEventPublisher
from eks_services.payment.repository import DynamoDBPaymentRepository, payment_item
from eks_services.payment.service import refunded_event
from tests.services.payment_fakes import InMemoryEventPublisher, InMemoryPaymentRepository

pytestmark = pytest.mark.anyio

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Store(PaymentRepository, PaymentOutbox, Protocol):
    pass


@pytest.fixture(params=["memory", "moto", "dynalite"])
async def store(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> AsyncIterator[Store]:
    if request.param == "memory":
        yield InMemoryPaymentRepository()
        return
    settings = make_settings(dynamodb=request.param)
    dynamodb = dynamodb_for(settings)
    try:
        yield DynamoDBPaymentRepository(dynamodb, table=settings.payments_table)
    finally:
        await dynamodb.aclose()


def a_claim(*, amount: int = 1000, at: datetime = NOW) -> Payment:
    request = ChargeRequest(
        order_id=f"ord-{uuid.uuid4().hex}",
        user_id="u-1",
        amount=amount,
        currency="INR",
        payment_method="pm_card_ok",
    )
    return Payment.claim(request, now=at, lease_seconds=60)


async def a_captured(store: Store, *, amount: int = 1000) -> Payment:
    claim = a_claim(amount=amount)
    assert await store.claim(claim)
    captured = claim.captured("sim_ch_1", now=NOW)
    await store.save(captured)
    return captured


def confirmed_refund(payment: Payment, *, key: str, amount: int | None = None) -> tuple[Payment, Any]:
    """The payment with one reserved refund, and that refund confirmed with its event."""
    refund = payment.plan_refund(amount=amount, idempotency_key=key, now=NOW)
    reserved = payment.with_refund(refund, now=NOW)
    confirmed, done = reserved.refund_succeeded(refund.id, now=NOW + timedelta(seconds=1))
    return reserved, (confirmed, refunded_event(confirmed, done))


# --- PaymentRepository -----------------------------------------------------------------------------
async def test_one_claim_per_payment_and_it_reads_back_the_same(store: Store) -> None:
    claim = a_claim()

    assert await store.claim(claim) is True
    assert await store.claim(claim) is False
    assert await store.get(claim.id) == claim
    assert await store.require(claim.id) == claim
    assert [p.id for p in await store.for_order(claim.order_id)] == [claim.id]


async def test_an_unknown_payment_is_none_or_not_found(store: Store) -> None:
    assert await store.get("pay_nobody") is None
    with pytest.raises(NotFound):
        await store.require("pay_nobody")


async def test_save_writes_over_the_version_it_came_from_and_refuses_a_stale_one(store: Store) -> None:
    claim = a_claim()
    await store.claim(claim)
    captured = claim.captured("sim_ch_1", now=NOW)

    await store.save(captured)
    with pytest.raises(StalePayment):
        await store.save(claim.failed("provider_error", now=NOW))  # computed from the old version too

    stored = await store.require(claim.id)
    assert stored == captured and stored.claimed_until is None and stored.status == PaymentStatus.CAPTURED


async def test_refunds_round_trip_with_their_status(store: Store) -> None:
    payment = await a_captured(store)
    reserved, (confirmed, event) = confirmed_refund(payment, key="k1", amount=400)

    await store.save(reserved)
    assert (await store.require(payment.id)).refunds[0].pending
    await store.save(confirmed, [event])

    stored = await store.require(payment.id)
    assert stored == confirmed and not stored.refunds[0].pending and stored.confirmed_refunded == 400


async def test_an_event_saved_with_a_change_waits_in_the_outbox_until_sent(store: Store) -> None:
    payment = await a_captured(store)
    reserved, (confirmed, event) = confirmed_refund(payment, key="k1")
    await store.save(reserved)
    assert [e for e in await store.pending_events() if e.payment_id == payment.id] == []

    await store.save(confirmed, [event])
    pending = [e for e in await store.pending_events() if e.payment_id == payment.id]

    assert pending == [OutboxEvent(event_id=event.event_id, payment_id=payment.id, payload=event.to_json())]
    await store.mark_sent(payment.id, [event.event_id])
    assert [e for e in await store.pending_events() if e.payment_id == payment.id] == []


async def test_a_stale_change_adds_no_event(store: Store) -> None:
    payment = await a_captured(store)
    _, (confirmed, event) = confirmed_refund(payment, key="k1")
    with pytest.raises(StalePayment):
        await store.save(confirmed, [event])  # skips the reservation's version

    assert [e for e in await store.pending_events() if e.payment_id == payment.id] == []


async def test_an_event_written_after_the_relay_read_survives_marking_the_first_sent(store: Store) -> None:
    payment = await a_captured(store)
    reserved, (first_confirmed, first) = confirmed_refund(payment, key="k1", amount=300)
    await store.save(reserved)
    await store.save(first_confirmed, [first])
    read_by_relay = [e.event_id for e in await store.pending_events() if e.payment_id == payment.id]
    second_reserved, (second_confirmed, second) = confirmed_refund(first_confirmed, key="k2")
    await store.save(second_reserved)
    await store.save(second_confirmed, [second])

    await store.mark_sent(payment.id, read_by_relay)

    left = [e for e in await store.pending_events() if e.payment_id == payment.id]
    assert [e.event_id for e in left] == [second.event_id]
    assert json.loads(left[0].payload)["data"]["fully_refunded"] is True


# --- DynamoDB only: items written before the outbox existed -----------------------------------------
@pytest.mark.parametrize("server", ["moto", "dynalite"])
async def test_a_payment_stored_before_the_outbox_existed_gets_one_on_its_first_change(
    server: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(dynamodb=server)
    dynamodb = dynamodb_for(settings)
    try:
        store = DynamoDBPaymentRepository(dynamodb, table=settings.payments_table)
        claim = a_claim()
        legacy = claim.captured("sim_ch_1", now=NOW)
        item = payment_item(legacy)  # no `outbox`
        await dynamodb.call("PutItem", {"TableName": settings.payments_table, "Item": item})

        reserved, (confirmed, event) = confirmed_refund(legacy, key="k1")
        await store.save(reserved)
        await store.save(confirmed, [event])

        assert [e.event_id for e in await store.pending_events() if e.payment_id == legacy.id] == [event.event_id]
    finally:
        await dynamodb.aclose()


# --- EventPublisher ----------------------------------------------------------------------------------
@dataclass
class Sink:
    publisher: EventPublisher
    received: Callable[[], list[str]]


@pytest.fixture(params=["memory", "sqs"])
async def sink(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> AsyncIterator[Sink]:
    if request.param == "memory":
        fake = InMemoryEventPublisher()
        yield Sink(fake, lambda: [e.payload for e in fake.published])
        return
    settings = make_settings()
    sqs = aws.client("sqs", settings)
    url = sqs.create_queue(QueueName=f"payment-events-{uuid.uuid4().hex[:12]}")["QueueUrl"]
    client = sqs_for(settings)
    yield Sink(SqsEventPublisher(client, queue_url=url), lambda: drain(sqs, url))
    await client.aclose()


def drain(sqs: Any, url: str) -> list[str]:
    bodies: list[str] = []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            return bodies
        bodies += [m["Body"] for m in messages]
        sqs.delete_message_batch(
            QueueUrl=url, Entries=[{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(messages)]
        )


def some_events(count: int) -> Sequence[OutboxEvent]:
    return [
        OutboxEvent(event_id=f"e{n}", payment_id="pay_1", payload=json.dumps({"event_id": f"e{n}"}))
        for n in range(count)
    ]


async def test_every_published_event_arrives_whole(sink: Sink) -> None:
    events = some_events(23)  # more than one SQS batch
    await sink.publisher.publish(events)
    assert sorted(sink.received()) == sorted(e.payload for e in events)


async def test_publishing_nothing_sends_nothing(sink: Sink) -> None:
    await sink.publisher.publish([])
    assert sink.received() == []
