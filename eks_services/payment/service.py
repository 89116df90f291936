"""Payment use cases: verify a payment method, charge an order once, refund within what was captured.

Storage, the card processor and the clock's `sleep` are injected; nothing here knows HTTP or DynamoDB.
Everything is async: a slow provider or a slow table holds no thread, only this request's task.

The payment service calls nobody back. The order service is the only caller of charges and of
refunds by order (the API checks its service identity), and a refund reaches the order service as a
`payment.refunded` event: written into the payment's own outbox in the same conditional write that
confirms the refund, then published by the relay (`relay.py`) to the SQS queue `payment-events`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from cloudshop import tracing
from cloudshop.errors import Conflict, DependencyUnavailable, IdempotencyKeyReused
from cloudshop.events import Money, PaymentRefundedDataV1, PaymentRefundedV1
from eks_services.payment.model import (
    ChargeRequest,
    Payment,
    PaymentInProgress,
    PaymentStatus,
    ProviderError,
    ProviderOutcomeUnknown,
    Refund,
    check_payment_method,
    refund_event_id,
)
from eks_services.payment.ports import PaymentProvider, PaymentRepository, StalePayment

log = logging.getLogger("cloudshop.payment")

# A repeat charge (or refund) waits this long for its twin to settle: well under the callers' 10 s
# timeout, so they get an answer (or a clear 409) rather than a timeout of their own.
PENDING_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05
# How long a claimant owns a PENDING charge or a reserved refund. Longer than any provider call can
# take, so only a claim whose process died expires.
CHARGE_LEASE_SECONDS = 60.0
# Optimistic writes retried under contention before giving up with a 409.
SAVE_ATTEMPTS = 10
PROVIDER_ERROR = "provider_error"

Sleep = Callable[[float], Awaitable[None]]


class RefundInProgress(Conflict):
    title, slug = "Refund in progress", "refund-in-progress"


def utcnow() -> datetime:
    return datetime.now(UTC)


def refunded_event(payment: Payment, refund: Refund) -> PaymentRefundedV1:
    """`payment.refunded` for a refund the provider confirmed, with the payment as it stands after it."""

    def money(amount: int) -> Money:
        return Money(amount=amount, currency=payment.currency)

    return PaymentRefundedV1(
        event_id=refund_event_id(refund.id),
        occurred_at=payment.updated_at,
        traceparent=tracing.current_traceparent(),
        data=PaymentRefundedDataV1(
            payment_id=payment.id,
            order_id=payment.order_id,
            user_id=payment.user_id,
            amount=money(refund.amount),
            refunded_total=money(payment.confirmed_refunded),
            captured=money(payment.amount),
            fully_refunded=payment.fully_refunded,
        ),
    )


def _no_one_to_wake() -> None:
    return None


class PaymentService:
    def __init__(
        self,
        *,
        payments: PaymentRepository,
        provider: PaymentProvider,
        pending_wait_seconds: float = PENDING_WAIT_SECONDS,
        lease_seconds: float = CHARGE_LEASE_SECONDS,
        sleep: Sleep = asyncio.sleep,
        on_event: Callable[[], None] = _no_one_to_wake,
    ) -> None:
        self.payments = payments
        self.provider = provider
        self.pending_wait_seconds = pending_wait_seconds
        self.lease_seconds = lease_seconds
        self._sleep = sleep
        # Told when an event entered an outbox, so the relay publishes it now rather than next round.
        self._on_event = on_event

    async def verify(self, payment_method: str) -> None:
        await self.provider.verify(check_payment_method(payment_method))

    async def payment(self, payment_id: str) -> Payment:
        return await self.payments.require(payment_id)

    # --- charge ----------------------------------------------------------------------------------
    async def charge(self, request: ChargeRequest) -> tuple[Payment, bool]:
        """Charge an order once. Returns (payment, created); a repeat answers the first charge.

        Declines and provider failures are outcomes (DECLINED, FAILED), not errors: the caller reads
        the status. Errors are for requests that must not be charged at all.
        """
        await self.provider.verify(request.payment_method)
        # Claim first, read only when the claim is refused: a first charge (nearly every call) costs
        # one conditional write instead of a read and a write; a repeat costs the read after it.
        pending = Payment.claim(request, now=utcnow(), lease_seconds=self.lease_seconds)
        if await self.payments.claim(pending):
            return await self._settle(pending), True
        # The order already has a charge: a repeat of this request, or a twin that claimed it first.
        return await self._repeat(await self.payments.require(pending.id), request), False

    async def _repeat(self, payment: Payment, request: ChargeRequest) -> Payment:
        payment.check_repeat(request)
        return await self._settled(payment)

    async def _settled(self, payment: Payment) -> Payment:
        """Wait (bounded) for a PENDING charge to settle; take over a claim whose owner died, and ask
        the provider again about a charge whose outcome is UNKNOWN (the reconciliation: every repeat
        of the charge request, the order service's sweeper's included, does it)."""
        deadline = time.monotonic() + self.pending_wait_seconds
        while payment.pending or payment.status == PaymentStatus.UNKNOWN:
            if payment.status == PaymentStatus.UNKNOWN or payment.claim_expired(utcnow()):
                reclaimed = payment.reclaimed(now=utcnow(), lease_seconds=self.lease_seconds)
                try:
                    await self.payments.save(reclaimed)
                except StalePayment:
                    payment = await self.payments.require(payment.id)
                    continue
                log.warning(
                    "asking the provider again about a charge",
                    extra={"fields": {"payment_id": payment.id, "was": str(payment.status)}},
                )
                return await self._settle(reclaimed)
            if time.monotonic() >= deadline:
                raise PaymentInProgress("A charge for this order is still in progress; retry shortly.")
            await self._sleep(POLL_SECONDS)
            payment = await self.payments.require(payment.id)
        return payment

    async def _settle(self, payment: Payment) -> Payment:
        # The provider dedupes by payment id, so charging again after a takeover (or after an
        # unknown outcome) completes the same charge instead of taking the money twice. An answer
        # that never came is UNKNOWN, not FAILED: the money may have moved. Any other exception
        # leaves the charge PENDING; its lease expires and a repeat call settles it.
        try:
            result = await self.provider.charge(
                payment_id=payment.id,
                amount=payment.amount,
                currency=payment.currency,
                payment_method=payment.payment_method,
            )
        except ProviderError as exc:
            log.warning("provider failed a charge", extra={"fields": {"payment_id": payment.id, "error": str(exc)}})
            settled = payment.failed(PROVIDER_ERROR, now=utcnow())
        except ProviderOutcomeUnknown as exc:
            log.warning(
                "provider did not answer a charge", extra={"fields": {"payment_id": payment.id, "error": str(exc)}}
            )
            settled = payment.outcome_unknown(now=utcnow())
        else:
            if result.captured:
                settled = payment.captured(result.reference, now=utcnow())
            else:
                settled = payment.declined(result.decline_code or "declined", result.reference, now=utcnow())
        try:
            await self.payments.save(settled)
        except StalePayment:
            # Our lease ran out mid-charge and another call took over; its outcome is the answer.
            return await self._settled(await self.payments.require(payment.id))
        return settled

    # --- refunds ---------------------------------------------------------------------------------
    async def refund(
        self, payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> tuple[Payment, Refund, bool]:
        """Refund `amount` (None: all that is left). Returns (payment, refund, created).

        The same key with the same amount answers the first refund; with another amount it is a
        misuse of the key. The refund is reserved before the provider is asked, so two concurrent
        refunds can never together exceed the capture; a provider failure takes it back out, and a
        provider success confirms it together with its `payment.refunded` event.
        """
        for _ in range(SAVE_ATTEMPTS):
            payment = await self.payments.require(payment_id)
            earlier = payment.refund_by_key(idempotency_key)
            if earlier is not None:
                if earlier.requested_amount != amount:
                    raise IdempotencyKeyReused("This idempotency key was used for another refund of this payment.")
                settled = await self._refund_settled(payment, earlier)
                if settled is None:
                    continue  # the provider refused it and it was taken back: this call tries again
                return *settled, False
            refund = payment.plan_refund(amount=amount, idempotency_key=idempotency_key, now=utcnow())
            reserved = payment.with_refund(refund, now=utcnow())
            try:
                await self.payments.save(reserved)
            except StalePayment:
                continue
            return *await self._complete_refund(reserved, refund), True
        raise Conflict("The payment is being changed concurrently; retry the refund.")

    async def _refund_settled(self, payment: Payment, refund: Refund) -> tuple[Payment, Refund] | None:
        """A repeat of a refund: wait (bounded) while its first call is at the provider; complete it
        when that call died. None when the refund was taken back meanwhile."""
        deadline = time.monotonic() + self.pending_wait_seconds
        while refund.pending:
            if refund.claim_expired(utcnow(), lease_seconds=self.lease_seconds):
                fields = {"payment_id": payment.id, "refund_id": refund.id}
                log.warning("took over an abandoned refund", extra={"fields": fields})
                return await self._complete_refund(payment, refund)
            if time.monotonic() >= deadline:
                raise RefundInProgress("This refund is still in progress; retry shortly.")
            await self._sleep(POLL_SECONDS)
            payment = await self.payments.require(payment.id)
            current = payment.refund_by_id(refund.id)
            if current is None:
                return None
            refund = current
        return payment, refund

    async def _complete_refund(self, payment: Payment, refund: Refund) -> tuple[Payment, Refund]:
        # The provider dedupes by refund id, so asking again after a takeover returns the money once.
        try:
            await self.provider.refund(payment_id=payment.id, refund_id=refund.id, amount=refund.amount)
        except ProviderError as exc:
            await self._drop_refund(payment.id, refund.id)
            raise DependencyUnavailable("The payment provider could not refund; nothing was refunded.") from exc
        except ProviderOutcomeUnknown as exc:
            # The money may have left: the reservation stays (shown as `refunding`, never as refunded)
            # until a repeat with the same key asks the provider again, once its lease runs out.
            log.warning("provider did not answer a refund", extra={"fields": {"refund_id": refund.id}})
            raise RefundInProgress(
                "The payment provider has not confirmed the refund; retry with the same Idempotency-Key."
            ) from exc
        return await self._confirm_refund(payment.id, refund.id)

    async def _confirm_refund(self, payment_id: str, refund_id: str) -> tuple[Payment, Refund]:
        for _ in range(SAVE_ATTEMPTS):
            payment = await self.payments.require(payment_id)
            refund = payment.refund_by_id(refund_id)
            if refund is None:
                raise Conflict("The refund was taken back meanwhile; retry it.")
            if not refund.pending:
                return payment, refund  # a twin confirmed it: its event is already in the outbox
            confirmed, done = payment.refund_succeeded(refund_id, now=utcnow())
            try:
                await self.payments.save(confirmed, [refunded_event(confirmed, done)])
            except StalePayment:
                continue
            self._on_event()
            return confirmed, done
        # The money is back with the customer but not yet on record: the reservation stays, and a
        # retry with the same key confirms it once its lease has run out.
        log.error("could not confirm a refund", extra={"fields": {"payment_id": payment_id, "refund_id": refund_id}})
        raise RefundInProgress("The refund is being recorded; retry with the same Idempotency-Key.")

    async def _drop_refund(self, payment_id: str, refund_id: str) -> None:
        for _ in range(SAVE_ATTEMPTS):
            payment = await self.payments.require(payment_id)
            refund = payment.refund_by_id(refund_id)
            if refund is None or not refund.pending:
                return
            try:
                await self.payments.save(payment.without_refund(refund_id, now=utcnow()))
            except StalePayment:
                continue
            return
        log.error(
            "could not take back a failed refund", extra={"fields": {"payment_id": payment_id, "refund_id": refund_id}}
        )
