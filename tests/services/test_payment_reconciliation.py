"""Issue 10, the payment side: an answer the provider never gave is not a failure, and a refund the
provider never confirmed is not a refund.

The service on the in-memory fakes (held to DynamoDB's contract in test_payment_ports_contract.py),
and the payment app on dynalite for what a reader of `GET /payments/{id}` sees after a crash.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from cloudshop.auth import TokenIssuer
from cloudshop.dynamodb import dynamodb_for
from cloudshop.errors import Conflict
from cloudshop.settings import Settings
from eks_services.payment.bootstrap import build_app
from eks_services.payment.model import (
    ChargeRequest,
    ChargeResult,
    Payment,
    PaymentStatus,
    ProviderOutcomeUnknown,
    RefundResult,
)
from eks_services.payment.provider import SimulatedProvider
from eks_services.payment.repository import DynamoDBPaymentRepository
from eks_services.payment.service import PaymentService, RefundInProgress
from tests.conftest import client_for
from tests.services.payment_fakes import InMemoryEventPublisher, InMemoryPaymentRepository


async def no_sleep(_: float) -> None:
    await asyncio.sleep(0)


class LosingProvider(SimulatedProvider):
    """The simulated provider, except that it takes the money (or returns it) and then loses its
    answer the first time it is asked, like a processor behind a timeout."""

    def __init__(self) -> None:
        super().__init__(slow_charge_seconds=0)
        self.captured: list[str] = []
        self.refunded: list[str] = []
        self.lose_charge_answers = 0
        self.lose_refund_answers = 0

    async def charge(self, *, payment_id: str, amount: int, currency: str, payment_method: str) -> ChargeResult:
        result = await super().charge(
            payment_id=payment_id, amount=amount, currency=currency, payment_method=payment_method
        )
        if result.captured and payment_id not in self.captured:
            self.captured.append(payment_id)
        if self.lose_charge_answers:
            self.lose_charge_answers -= 1
            raise ProviderOutcomeUnknown("timed out waiting for the processor")
        return result

    async def refund(self, *, payment_id: str, refund_id: str, amount: int) -> RefundResult:
        if refund_id not in self.refunded:
            self.refunded.append(refund_id)
        if self.lose_refund_answers:
            self.lose_refund_answers -= 1
            raise ProviderOutcomeUnknown("timed out waiting for the processor")
        return await super().refund(payment_id=payment_id, refund_id=refund_id, amount=amount)


def service_on_fakes(provider: SimulatedProvider) -> tuple[PaymentService, InMemoryPaymentRepository]:
    payments = InMemoryPaymentRepository()
    return PaymentService(payments=payments, provider=provider, sleep=no_sleep, pending_wait_seconds=0.2), payments


def request(payment_method: str = "pm_card_ok", amount: int = 1000) -> ChargeRequest:
    return ChargeRequest(
        order_id=f"ord-{uuid.uuid4().hex}", user_id="u-1", amount=amount, currency="INR", payment_method=payment_method
    )


def test_a_charge_whose_answer_was_lost_is_unknown_and_the_repeat_finds_it_captured() -> None:
    """Issue 10: a provider error ("outcome unknown") was a final FAILED, and the order released its
    stock, although a real processor may have captured. It stays UNKNOWN; asking again settles it."""
    provider = LosingProvider()
    provider.lose_charge_answers = 1
    service, _ = service_on_fakes(provider)
    charge = request()

    first, created = asyncio.run(service.charge(charge))
    assert created and first.status == PaymentStatus.UNKNOWN and first.failure_reason == "outcome_unknown"
    assert provider.captured == [first.id], "the money moved although the answer was lost"

    again, created_again = asyncio.run(service.charge(charge))

    assert not created_again and again.id == first.id and again.status == PaymentStatus.CAPTURED
    assert provider.captured == [first.id], "asking again did not take the money twice"


@pytest.mark.parametrize(
    ("token", "status"), [("pm_card_unknown_then_ok", "CAPTURED"), ("pm_card_unknown_then_declined", "DECLINED")]
)
def test_the_simulated_unknown_outcome_tokens_settle_on_the_repeat(token: str, status: str) -> None:
    service, _ = service_on_fakes(SimulatedProvider(slow_charge_seconds=0))
    charge = request(token)
    assert asyncio.run(service.charge(charge))[0].status == PaymentStatus.UNKNOWN
    assert asyncio.run(service.charge(charge))[0].status == status


def test_pm_card_error_still_fails_for_good() -> None:
    service, _ = service_on_fakes(SimulatedProvider(slow_charge_seconds=0))
    charge = request("pm_card_error")
    assert asyncio.run(service.charge(charge))[0].status == PaymentStatus.FAILED
    assert asyncio.run(service.charge(charge))[0].status == PaymentStatus.FAILED


def test_a_refund_whose_answer_was_lost_stays_reserved_and_is_never_shown_as_refunded() -> None:
    provider = LosingProvider()
    service, payments = service_on_fakes(provider)
    payment, _ = asyncio.run(service.charge(request()))
    provider.lose_refund_answers = 1

    with pytest.raises(RefundInProgress):
        asyncio.run(service.refund(payment.id, amount=None, idempotency_key="k1"))

    stored = asyncio.run(payments.require(payment.id))
    assert (stored.status, stored.confirmed_refunded, stored.refunding) == (PaymentStatus.CAPTURED, 0, 1000)
    assert not payments.outboxes[payment.id], "no payment.refunded for money not confirmed back"
    with pytest.raises(Conflict):  # another refund of it: nothing is left to take
        asyncio.run(service.refund(payment.id, amount=None, idempotency_key="k2"))


def test_a_refund_left_reserved_by_a_dead_process_is_shown_as_refunding_not_refunded(
    make_settings: Callable[..., Settings], key_pair: tuple[str, str]
) -> None:
    """Issue 10: a refund is recorded before the provider is asked; a crash in between reported a
    refund that never happened (the payment read REFUNDED)."""
    settings = make_settings(dynamodb="dynalite")
    payments = DynamoDBPaymentRepository(dynamodb_for(settings), table=settings.payments_table)
    app = build_app(settings, payments=payments, publisher=InMemoryEventPublisher())
    issuer = TokenIssuer(key_pair[0], issuer=settings.jwt_issuer, access_ttl_seconds=900)
    admin = {
        "Authorization": "Bearer "
        + issuer.access_token(user_id="admin-1", role="admin", email="a@x.io", session_id="s")
    }
    for client in client_for(app):
        # Given a captured payment whose full refund was reserved by a process that then died
        now = datetime.now(UTC)
        captured = Payment.claim(request(amount=5000), now=now, lease_seconds=60)
        assert client.portal.call(payments.claim, captured)  # type: ignore[union-attr]
        captured = captured.captured("sim_ch_1", now=now)
        client.portal.call(payments.save, captured)  # type: ignore[union-attr]
        refund = captured.plan_refund(amount=None, idempotency_key="admin-1", now=now - timedelta(minutes=5))
        client.portal.call(payments.save, captured.with_refund(refund, now=now))  # type: ignore[union-attr]

        shown = client.get(f"/api/v1/payments/{captured.id}", headers=admin).json()

        assert shown["status"] == "CAPTURED"
        assert shown["refunded"] == {"amount": 0, "currency": "INR"}
        assert shown["refunding"] == {"amount": 5000, "currency": "INR"}

        # The admin's retry with the same key completes it (the provider dedupes by refund id).
        retried = client.post(
            f"/api/v1/payments/{captured.id}/refunds", json={}, headers={**admin, "Idempotency-Key": "admin-1"}
        )
        assert retried.status_code == 201, retried.text
        shown = client.get(f"/api/v1/payments/{captured.id}", headers=admin).json()
        assert (
            shown["status"] == "REFUNDED" and shown["refunded"]["amount"] == 5000 and shown["refunding"]["amount"] == 0
        )
