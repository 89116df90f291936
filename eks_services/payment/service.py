"""Payment use cases: verify a payment method, charge an order once, refund within what was captured.

Storage, the card processor and the order service are injected ports; nothing here knows HTTP or
DynamoDB.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from cloudshop.errors import Conflict, DependencyUnavailable, IdempotencyKeyReused
from eks_services.payment.model import (
    ChargeRequest,
    OrderLookup,
    Payment,
    PaymentInProgress,
    PaymentProvider,
    PaymentStatus,
    ProviderError,
    Refund,
    RefundCallback,
    check_payment_method,
    payment_id_for,
)
from eks_services.payment.repository import DynamoDBPaymentRepository, StalePayment

log = logging.getLogger("cloudshop.payment")

# A repeat charge waits this long for its twin to settle: well under the callers' 10 s timeout, so
# they get an answer (or a clear 409) rather than a timeout of their own.
PENDING_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.05
# How long a claimant owns a PENDING charge. Longer than any provider call can take, so only a claim
# whose process died expires.
CHARGE_LEASE_SECONDS = 60.0
# Optimistic writes retried under contention before giving up with a 409.
SAVE_ATTEMPTS = 10
PROVIDER_ERROR = "provider_error"


def utcnow() -> datetime:
    return datetime.now(UTC)


class PaymentService:
    def __init__(
        self,
        *,
        payments: DynamoDBPaymentRepository,
        provider: PaymentProvider,
        orders: OrderLookup,
        refund_callback: RefundCallback,
        pending_wait_seconds: float = PENDING_WAIT_SECONDS,
        lease_seconds: float = CHARGE_LEASE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.payments = payments
        self.provider = provider
        self.orders = orders
        self.refund_callback = refund_callback
        self.pending_wait_seconds = pending_wait_seconds
        self.lease_seconds = lease_seconds
        self._sleep = sleep

    def verify(self, payment_method: str) -> None:
        self.provider.verify(check_payment_method(payment_method))

    # --- charge ----------------------------------------------------------------------------------
    def charge(self, request: ChargeRequest) -> tuple[Payment, bool]:
        """Charge an order once. Returns (payment, created); a repeat answers the first charge.

        Declines and provider failures are outcomes (DECLINED, FAILED), not errors: the caller reads
        the status. Errors are for requests that must not be charged at all.
        """
        self.provider.verify(request.payment_method)
        existing = self.payments.get(payment_id_for(request.order_id))
        if existing is not None:
            # No order check on a repeat: the first charge moved the order on from PENDING_PAYMENT.
            return self._repeat(existing, request), False
        request.check_order(self.orders.get_order(request.order_id))
        pending = Payment.claim(request, now=utcnow(), lease_seconds=self.lease_seconds)
        if not self.payments.claim(pending):
            # A concurrent twin claimed it between our read and our write.
            return self._repeat(self.payments.require(pending.id), request), False
        return self._settle(pending), True

    def _repeat(self, payment: Payment, request: ChargeRequest) -> Payment:
        payment.check_repeat(request)
        return self._settled(payment)

    def _settled(self, payment: Payment) -> Payment:
        """Wait (bounded) for a PENDING charge to settle; take over a claim whose owner died."""
        deadline = time.monotonic() + self.pending_wait_seconds
        while payment.pending:
            if payment.claim_expired(utcnow()):
                reclaimed = payment.reclaimed(now=utcnow(), lease_seconds=self.lease_seconds)
                try:
                    self.payments.save(reclaimed)
                except StalePayment:
                    payment = self.payments.require(payment.id)
                    continue
                log.warning("took over an abandoned charge", extra={"fields": {"payment_id": payment.id}})
                return self._settle(reclaimed)
            if time.monotonic() >= deadline:
                raise PaymentInProgress("A charge for this order is still in progress; retry shortly.")
            self._sleep(POLL_SECONDS)
            payment = self.payments.require(payment.id)
        return payment

    def _settle(self, payment: Payment) -> Payment:
        # The provider dedupes by payment id, so charging again after a takeover completes the same
        # charge instead of taking the money twice. Any other exception leaves the charge PENDING
        # with an outcome nobody knows; its lease expires and a repeat call settles it.
        try:
            result = self.provider.charge(
                payment_id=payment.id,
                amount=payment.amount,
                currency=payment.currency,
                payment_method=payment.payment_method,
            )
        except ProviderError as exc:
            log.warning("provider failed a charge", extra={"fields": {"payment_id": payment.id, "error": str(exc)}})
            settled = payment.failed(PROVIDER_ERROR, now=utcnow())
        else:
            if result.captured:
                settled = payment.captured(result.reference, now=utcnow())
            else:
                settled = payment.declined(result.decline_code or "declined", result.reference, now=utcnow())
        try:
            self.payments.save(settled)
        except StalePayment:
            # Our lease ran out mid-charge and another call took over; its outcome is the answer.
            return self._settled(self.payments.require(payment.id))
        return settled

    # --- refunds ---------------------------------------------------------------------------------
    def refund(self, payment_id: str, *, amount: int | None, idempotency_key: str) -> tuple[Payment, Refund, bool]:
        """Refund `amount` (None: all that is left). Returns (payment, refund, created).

        The same key with the same amount answers the first refund; with another amount it is a
        misuse of the key. The refund is recorded before the provider is asked, so two concurrent
        refunds can never together exceed the capture; a provider failure takes it back out.
        """
        for _ in range(SAVE_ATTEMPTS):
            payment = self.payments.require(payment_id)
            earlier = payment.refund_by_key(idempotency_key)
            if earlier is not None:
                if earlier.requested_amount != amount:
                    raise IdempotencyKeyReused("This idempotency key was used for another refund of this payment.")
                return payment, earlier, False
            refund = payment.plan_refund(amount=amount, idempotency_key=idempotency_key, now=utcnow())
            refunded = payment.with_refund(refund, now=utcnow())
            try:
                self.payments.save(refunded)
            except StalePayment:
                continue
            self._refund_at_provider(refunded, refund)
            return refunded, refund, True
        raise Conflict("The payment is being changed concurrently; retry the refund.")

    def _refund_at_provider(self, payment: Payment, refund: Refund) -> None:
        try:
            self.provider.refund(payment_id=payment.id, refund_id=refund.id, amount=refund.amount)
        except ProviderError as exc:
            self._drop_refund(payment.id, refund.id)
            raise DependencyUnavailable("The payment provider could not refund; nothing was refunded.") from exc

    def _drop_refund(self, payment_id: str, refund_id: str) -> None:
        for _ in range(SAVE_ATTEMPTS):
            payment = self.payments.require(payment_id)
            try:
                self.payments.save(payment.without_refund(refund_id, now=utcnow()))
            except StalePayment:
                continue
            return
        log.error(
            "could not take back a failed refund", extra={"fields": {"payment_id": payment_id, "refund_id": refund_id}}
        )

    def refund_by_admin(
        self, payment_id: str, *, amount: int | None, idempotency_key: str
    ) -> tuple[Payment, Refund, bool]:
        """A refund through the public API. Once the payment is fully refunded, the order follows."""
        payment, refund, created = self.refund(payment_id, amount=amount, idempotency_key=idempotency_key)
        if payment.status == PaymentStatus.REFUNDED:
            # Also on a replay: the order side is idempotent, and a replay then heals a first call
            # that could not reach it.
            self._tell_order_refunded(payment)
        return payment, refund, created

    def _tell_order_refunded(self, payment: Payment) -> None:
        try:
            self.refund_callback.payment_refunded(order_id=payment.order_id, payment_id=payment.id)
        except Exception:  # the money is back with the customer whatever the order service answers
            log.exception(
                "order service not told of a full refund",
                extra={"fields": {"payment_id": payment.id, "order_id": payment.order_id}},
            )
