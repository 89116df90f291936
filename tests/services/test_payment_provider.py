"""The simulated card processor and the payment rules, without any server."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from cloudshop.errors import Conflict, ValidationFailed
from eks_services.payment.model import (
    ChargeRequest,
    ChargeResult,
    Payment,
    PaymentStatus,
    ProviderError,
    ProviderOutcomeUnknown,
    payment_id_for,
)
from eks_services.payment.provider import SimulatedProvider

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def slept() -> list[float]:
    return []


@pytest.fixture
def provider(slept: list[float]) -> SimulatedProvider:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return SimulatedProvider(slow_charge_seconds=2.0, sleep=sleep)


def charge(provider: SimulatedProvider, payment_method: str) -> ChargeResult:
    return asyncio.run(provider.charge(payment_id="pay_1", amount=1000, currency="INR", payment_method=payment_method))


def test_ok_card_captures(provider: SimulatedProvider) -> None:
    result = charge(provider, "pm_card_ok")
    assert result.captured and result.decline_code is None and result.reference


@pytest.mark.parametrize(
    ("token", "code"), [("pm_card_declined", "card_declined"), ("pm_card_insufficient_funds", "insufficient_funds")]
)
def test_declining_cards_decline_with_their_code(provider: SimulatedProvider, token: str, code: str) -> None:
    result = charge(provider, token)
    assert not result.captured and result.decline_code == code


def test_error_card_is_a_provider_failure(provider: SimulatedProvider) -> None:
    with pytest.raises(ProviderError):
        charge(provider, "pm_card_error")


def test_slow_card_captures_after_the_configured_delay(provider: SimulatedProvider, slept: list[float]) -> None:
    assert charge(provider, "pm_card_slow").captured
    assert slept == [2.0]


def test_slow_cards_wait_without_blocking_the_event_loop() -> None:
    provider = SimulatedProvider(slow_charge_seconds=0.3)

    async def five_slow_charges() -> list[ChargeResult]:
        return await asyncio.gather(
            *(
                provider.charge(payment_id=f"pay_{n}", amount=1, currency="INR", payment_method="pm_card_slow")
                for n in range(5)
            )
        )

    started = time.monotonic()
    results = asyncio.run(five_slow_charges())
    assert all(r.captured for r in results)
    assert time.monotonic() - started < 1.0, "the slow charges ran one after another"


def test_a_repeated_charge_has_the_same_reference(provider: SimulatedProvider) -> None:
    assert charge(provider, "pm_card_ok") == charge(provider, "pm_card_ok")


@pytest.mark.parametrize("token", ["pm_card_unknown", "4242424242424242", "pm_CARD_OK", "pm_", "card_ok"])
def test_unknown_or_malformed_tokens_are_invalid(provider: SimulatedProvider, token: str) -> None:
    with pytest.raises(ValidationFailed):
        asyncio.run(provider.verify(token))


def test_payment_ids_are_derived_from_the_order() -> None:
    assert payment_id_for("order-1") == payment_id_for("order-1") != payment_id_for("order-2")


def request(**overrides: object) -> ChargeRequest:
    values: dict[str, object] = {
        "order_id": "o1",
        "user_id": "u1",
        "amount": 1000,
        "currency": "INR",
        "payment_method": "pm_card_ok",
    }
    values.update(overrides)
    return ChargeRequest(**values)  # type: ignore[arg-type]


def captured(amount: int = 1000) -> Payment:
    return Payment.claim(request(amount=amount), now=NOW, lease_seconds=60).captured("ref", now=NOW)


def test_confirmed_refunds_move_the_payment_to_partially_then_fully_refunded() -> None:
    payment = captured()
    first = payment.plan_refund(amount=400, idempotency_key="k1", now=NOW)
    payment, _ = payment.with_refund(first, now=NOW).refund_succeeded(first.id, now=NOW)
    assert payment.status == PaymentStatus.PARTIALLY_REFUNDED
    assert (payment.refunded, payment.refundable) == (400, 600)
    rest = payment.plan_refund(amount=None, idempotency_key="k2", now=NOW)
    payment, _ = payment.with_refund(rest, now=NOW).refund_succeeded(rest.id, now=NOW)
    assert (rest.amount, payment.status, payment.refundable) == (600, PaymentStatus.REFUNDED, 0)


def test_a_reserved_refund_is_not_reported_as_refunded_until_the_provider_confirms_it() -> None:
    """Issue 10: a refund is recorded before the provider is asked; a crash in between must not leave
    a payment that reads REFUNDED for money that never moved."""
    payment = captured()
    refund = payment.plan_refund(amount=None, idempotency_key="k1", now=NOW)

    reserved = payment.with_refund(refund, now=NOW)

    shown = reserved.as_dict()
    assert reserved.status == PaymentStatus.CAPTURED and shown["status"] == "CAPTURED"
    assert shown["refunded"] == {"amount": 0, "currency": "INR"}
    assert shown["refunding"] == {"amount": 1000, "currency": "INR"}
    with pytest.raises(Conflict):
        reserved.plan_refund(amount=None, idempotency_key="k2", now=NOW)  # nothing left to reserve


@pytest.mark.parametrize(
    ("token", "outcome"), [("pm_card_unknown_then_ok", True), ("pm_card_unknown_then_declined", False)]
)
def test_an_unknown_outcome_token_loses_the_first_answer_and_tells_the_truth_when_asked_again(
    provider: SimulatedProvider, token: str, outcome: bool
) -> None:
    with pytest.raises(ProviderOutcomeUnknown):
        charge(provider, token)
    again = charge(provider, token)
    assert again.captured is outcome and again == charge(provider, token)
    assert again.decline_code == (None if outcome else "card_declined")


def test_a_reserved_refund_counts_against_the_capture_but_not_as_refunded_until_confirmed() -> None:
    payment = captured()
    refund = payment.plan_refund(amount=None, idempotency_key="k1", now=NOW)
    reserved = payment.with_refund(refund, now=NOW)
    assert refund.pending and reserved.refundable == 0
    assert (reserved.confirmed_refunded, reserved.fully_refunded) == (0, False)

    confirmed, done = reserved.refund_succeeded(refund.id, now=NOW)

    assert not done.pending and confirmed.version == reserved.version + 1
    assert (confirmed.confirmed_refunded, confirmed.fully_refunded) == (1000, True)
    with pytest.raises(Conflict):
        confirmed.refund_succeeded(refund.id, now=NOW)
    with pytest.raises(Conflict):
        confirmed.without_refund(refund.id, now=NOW)  # that money has left


def test_a_reservation_expires_only_after_its_lease() -> None:
    refund = captured().plan_refund(amount=1, idempotency_key="k1", now=NOW)
    assert not refund.claim_expired(NOW + timedelta(seconds=59), lease_seconds=60)
    assert refund.claim_expired(NOW + timedelta(seconds=61), lease_seconds=60)


def test_a_refund_never_exceeds_what_is_left() -> None:
    payment = captured()
    payment = payment.with_refund(payment.plan_refund(amount=700, idempotency_key="k1", now=NOW), now=NOW)
    with pytest.raises(Conflict):
        payment.plan_refund(amount=301, idempotency_key="k2", now=NOW)


def test_taking_back_a_refund_restores_the_amount() -> None:
    payment = captured()
    refund = payment.plan_refund(amount=None, idempotency_key="k1", now=NOW)
    restored = payment.with_refund(refund, now=NOW).without_refund(refund.id, now=NOW)
    assert (restored.status, restored.refunded, restored.refunds) == (PaymentStatus.CAPTURED, 0, ())


def test_unsettled_or_declined_payments_cannot_be_refunded() -> None:
    pending = Payment.claim(request(), now=NOW, lease_seconds=60)
    declined = pending.declined("card_declined", "ref", now=NOW)
    for payment in (pending, declined):
        with pytest.raises(Conflict):
            payment.plan_refund(amount=None, idempotency_key="k", now=NOW)
