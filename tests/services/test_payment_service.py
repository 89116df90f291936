"""The payment service and its relay on the in-memory fakes: refunds under concurrency and crashes,
and their events from the outbox to the publisher. The fakes pass the same contract as DynamoDB and
SQS (test_payment_ports_contract.py); the same guarantees on dynalite are in test_payment_api.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from cloudshop.errors import Conflict, DependencyUnavailable
from cloudshop.events import PaymentRefundedV1
from eks_services.payment.model import ChargeRequest, Payment, PaymentStatus, ProviderError, RefundResult
from eks_services.payment.provider import SimulatedProvider
from eks_services.payment.relay import PaymentOutboxRelay
from eks_services.payment.service import PaymentService, RefundInProgress
from tests.services.payment_fakes import InMemoryEventPublisher, InMemoryPaymentRepository

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class GatedProvider(SimulatedProvider):
    """Refunds wait at the provider until the test opens the gate, or fail when told to."""

    def __init__(self) -> None:
        super().__init__(slow_charge_seconds=0)
        self.gate = asyncio.Event()
        self.gate.set()
        self.refunds: list[str] = []
        self.fail_refunds = False

    async def refund(self, *, payment_id: str, refund_id: str, amount: int) -> RefundResult:
        await self.gate.wait()
        if self.fail_refunds:
            raise ProviderError("down")
        self.refunds.append(refund_id)
        return await super().refund(payment_id=payment_id, refund_id=refund_id, amount=amount)


@dataclass
class Shop:
    service: PaymentService
    payments: InMemoryPaymentRepository
    provider: GatedProvider
    publisher: InMemoryEventPublisher
    relay: PaymentOutboxRelay
    woken: list[bool]

    async def captured(self, amount: int = 1000) -> Payment:
        request = ChargeRequest(
            order_id=f"ord-{amount}-{len(self.payments.payments)}",
            user_id="u-1",
            amount=amount,
            currency="INR",
            payment_method="pm_card_ok",
        )
        payment, _ = await self.service.charge(request)
        assert payment.status == PaymentStatus.CAPTURED
        return payment


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


@pytest.fixture
def shop() -> Shop:
    payments = InMemoryPaymentRepository()
    provider = GatedProvider()
    publisher = InMemoryEventPublisher()
    relay = PaymentOutboxRelay(outbox=payments, publisher=publisher, interval_seconds=0.01)
    woken: list[bool] = []
    service = PaymentService(
        payments=payments,
        provider=provider,
        sleep=no_sleep,
        pending_wait_seconds=0.5,
        on_event=lambda: woken.append(True),
    )
    return Shop(service, payments, provider, publisher, relay, woken)


async def test_a_confirmed_refund_wakes_the_relay_which_publishes_it_once(shop: Shop) -> None:
    payment = await shop.captured()
    await shop.service.refund(payment.id, amount=250, idempotency_key="k1")

    assert shop.woken == [True]
    assert await shop.relay.run_once() == 1
    assert await shop.relay.run_once() == 0
    (event,) = shop.publisher.bodies()
    assert event["data"]["amount"] == {"amount": 250, "currency": "INR"} and not event["data"]["fully_refunded"]


async def test_a_queue_outage_keeps_the_events_for_the_next_round(shop: Shop) -> None:
    payment = await shop.captured()
    await shop.service.refund(payment.id, amount=None, idempotency_key="k1")
    shop.publisher.failing = True

    with pytest.raises(Exception, match="down"):
        await shop.relay.run_once()
    shop.publisher.failing = False

    assert await shop.relay.run_once() == 1
    assert [e["data"]["fully_refunded"] for e in shop.publisher.bodies()] == [True]


async def test_concurrent_refunds_never_exceed_the_capture(shop: Shop) -> None:
    payment = await shop.captured(amount=1000)
    shop.provider.gate.clear()
    tasks = [
        asyncio.ensure_future(asyncio.wait_for(shop.service.refund(payment.id, amount=300, idempotency_key=f"k{n}"), 2))
        for n in range(6)
    ]
    await asyncio.sleep(0.01)
    shop.provider.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert sum(1 for r in results if isinstance(r, tuple)) == 3
    assert all(isinstance(r, Conflict) for r in results if not isinstance(r, tuple))
    stored = await shop.payments.require(payment.id)
    assert (stored.refunded, stored.confirmed_refunded) == (900, 900)
    await shop.relay.run_once()
    assert sorted(e["data"]["refunded_total"]["amount"] for e in shop.publisher.bodies()) == [300, 600, 900]


async def test_a_repeat_while_the_refund_is_at_the_provider_waits_and_answers_the_same(shop: Shop) -> None:
    payment = await shop.captured()
    shop.provider.gate.clear()
    first = asyncio.ensure_future(shop.service.refund(payment.id, amount=100, idempotency_key="k1"))
    await asyncio.sleep(0.01)
    repeat = asyncio.ensure_future(shop.service.refund(payment.id, amount=100, idempotency_key="k1"))
    await asyncio.sleep(0.01)
    shop.provider.gate.set()

    (_, refund, created), (_, again, created_again) = await asyncio.gather(first, repeat)
    assert (created, created_again) == (True, False) and again == refund
    assert shop.provider.refunds == [refund.id]


async def test_a_repeat_that_outwaits_the_first_call_is_told_it_is_in_progress(shop: Shop) -> None:
    payment = await shop.captured()
    shop.provider.gate.clear()
    first = asyncio.ensure_future(shop.service.refund(payment.id, amount=100, idempotency_key="k1"))
    await asyncio.sleep(0.01)

    with pytest.raises(RefundInProgress):
        await shop.service.refund(payment.id, amount=100, idempotency_key="k1")
    shop.provider.gate.set()
    await first


async def test_a_refund_abandoned_by_a_dead_process_is_completed_and_announced_by_the_repeat(shop: Shop) -> None:
    # Given a reservation made five minutes ago by a process that died before the provider answered
    payment = await shop.captured()
    refund = payment.plan_refund(amount=400, idempotency_key="k1", now=datetime.now(UTC) - timedelta(minutes=5))
    await shop.payments.save(payment.with_refund(refund, now=datetime.now(UTC)))

    stored, again, created = await shop.service.refund(payment.id, amount=400, idempotency_key="k1")

    assert not created and again.id == refund.id and not again.pending
    assert shop.provider.refunds == [refund.id] and stored.confirmed_refunded == 400
    await shop.relay.run_once()
    assert [e["data"]["amount"]["amount"] for e in shop.publisher.bodies()] == [400]


async def test_a_refund_the_provider_refuses_is_taken_back_and_never_announced(shop: Shop) -> None:
    payment = await shop.captured()
    shop.provider.fail_refunds = True

    with pytest.raises(DependencyUnavailable):
        await shop.service.refund(payment.id, amount=100, idempotency_key="k1")

    stored = await shop.payments.require(payment.id)
    assert (stored.status, stored.refunded, stored.refunds) == (PaymentStatus.CAPTURED, 0, ())
    assert await shop.relay.run_once() == 0 and shop.woken == []


async def test_the_relay_task_runs_on_the_event_loop_until_stopped(shop: Shop) -> None:
    payment = await shop.captured()
    shop.relay.start()
    try:
        await shop.service.refund(payment.id, amount=None, idempotency_key="k1")
        for _ in range(100):
            if shop.publisher.published:
                break
            await asyncio.sleep(0.01)
    finally:
        await shop.relay.stop()
    assert len(shop.publisher.published) == 1


class CountingRepository(InMemoryPaymentRepository):
    """Records each repository call: on DynamoDB, each is one request."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    async def get(self, payment_id: str) -> Payment | None:
        self.calls.append("get")
        return await super().get(payment_id)

    async def require(self, payment_id: str) -> Payment:
        self.calls.append("require")
        return await super().require(payment_id)

    async def claim(self, payment: Payment) -> bool:
        self.calls.append("claim")
        return await super().claim(payment)

    async def save(self, payment: Payment, events: Sequence[PaymentRefundedV1] = ()) -> None:
        self.calls.append("save")
        await super().save(payment, events)


async def test_a_first_charge_is_one_claim_and_one_save_and_a_repeat_reads_after_its_refused_claim() -> None:
    payments = CountingRepository()
    service = PaymentService(payments=payments, provider=GatedProvider(), sleep=no_sleep, pending_wait_seconds=0.5)
    request = ChargeRequest(order_id="ord-1", user_id="u-1", amount=1000, currency="INR", payment_method="pm_card_ok")

    first, created = await service.charge(request)
    assert created and first.status == PaymentStatus.CAPTURED
    assert payments.calls == ["claim", "save"]

    payments.calls.clear()
    again, created = await service.charge(request)
    assert not created and again == first
    assert payments.calls == ["claim", "require"]
