"""Payment domain: a charge per order and its refunds. No framework imports here.

A `Payment` is immutable; every change (settling a charge, reserving, confirming or dropping a refund)
returns a new value with `version + 1`. The repository writes it only if the stored version is still
the one read, so concurrent writers can never combine two stale views (two refunds exceeding the
capture).

A refund lives in two steps: `with_refund` reserves it (it counts against the capture from then on,
before the provider is asked), and `refund_succeeded` confirms it once the provider returned the
money, or `without_refund` drops it when the provider refused. Only the confirmation is announced
(`payment.refunded`) or shown as refunded (the status and `refunded` count confirmed refunds; a
reservation is `refunding`), so nothing ever reports money that did not move, even when the process
dies between the reservation and the provider's answer.

A provider that does not answer (a timeout, a lost connection) has not said that nothing happened:
such a charge becomes UNKNOWN, never FAILED, and the next charge request for the order asks the
provider again (it dedupes by payment id), which settles it either way.

A charge request is not checked against the order: it comes only from the order service, which is
authenticated by its service token, and asking the order service back from inside its own call is
the synchronous cycle issue 9 removed.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from cloudshop.errors import Conflict, ValidationFailed
from cloudshop.money import AMOUNT_MAX as AMOUNT_MAX  # the shared limit, re-exported for the API

PAYMENT_METHOD = re.compile(r"^pm_[a-z0-9_]{1,60}$")
IDEMPOTENCY_KEY_MAX = 255
# Stable namespace: payment ids derived from order ids must never change between releases.
_PAYMENT_NAMESPACE = uuid.UUID("3c9d7e52-8a41-4f0b-9d3e-2b6f1a7c5e90")
OUTCOME_UNKNOWN = "outcome_unknown"


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    # The provider did not answer the charge: it may have captured. Nobody owns it; the next charge
    # request for the order claims it again and asks the provider again.
    UNKNOWN = "UNKNOWN"
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    FAILED = "FAILED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"


REFUNDABLE = (PaymentStatus.CAPTURED, PaymentStatus.PARTIALLY_REFUNDED)


class RefundStatus(StrEnum):
    # Reserved against the capture; the provider has not confirmed it (yet).
    PENDING = "PENDING"
    SUCCEEDED = "SUCCEEDED"


class PaymentInProgress(Conflict):
    title, slug = "Payment in progress", "payment-in-progress"


def payment_id_for(order_id: str) -> str:
    """One payment per order: the id is derived from the order id, so a repeat charge finds it."""
    return "pay_" + uuid.uuid5(_PAYMENT_NAMESPACE, order_id).hex


def refund_id_for(payment_id: str, idempotency_key: str) -> str:
    return "re_" + uuid.uuid5(_PAYMENT_NAMESPACE, f"{payment_id}/{idempotency_key}").hex


def refund_event_id(refund_id: str) -> str:
    """The id of the event announcing a refund: one per refund, however often it is announced."""
    return str(uuid.uuid5(_PAYMENT_NAMESPACE, f"refunded/{refund_id}"))


def check_payment_method(payment_method: str) -> str:
    if not PAYMENT_METHOD.match(payment_method):
        raise ValidationFailed("A payment method is a token like 'pm_card_ok', never a card number.")
    return payment_method


# --- what the provider answers --------------------------------------------------------------------
@dataclass(frozen=True)
class ChargeResult:
    captured: bool
    reference: str
    decline_code: str | None = None


@dataclass(frozen=True)
class RefundResult:
    reference: str


class ProviderError(Exception):
    """The provider answered that it failed: nothing was captured (or refunded)."""


class ProviderOutcomeUnknown(Exception):
    """The provider gave no answer (a timeout, a lost connection, one we cannot read): the charge or
    refund may have happened. Ask again with the same id; the provider dedupes by it."""


# --- the payment ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Refund:
    id: str
    amount: int
    idempotency_key: str
    # What the caller asked for: None means "the rest". Compared on a repeat of the same key.
    requested_amount: int | None
    created_at: datetime
    status: RefundStatus = RefundStatus.SUCCEEDED

    @property
    def pending(self) -> bool:
        return self.status == RefundStatus.PENDING

    def claim_expired(self, now: datetime, *, lease_seconds: float) -> bool:
        """A reservation this old outlived the call that made it: that process died mid-refund."""
        return self.pending and (now - self.created_at).total_seconds() > lease_seconds


@dataclass(frozen=True)
class ChargeRequest:
    order_id: str
    user_id: str
    amount: int
    currency: str
    payment_method: str

    def __post_init__(self) -> None:
        if not 1 <= self.amount <= AMOUNT_MAX:
            raise ValidationFailed(f"An amount is between 1 and {AMOUNT_MAX} minor units.")
        check_payment_method(self.payment_method)


@dataclass(frozen=True)
class Payment:
    id: str
    order_id: str
    user_id: str
    status: PaymentStatus
    amount: int
    currency: str
    payment_method: str
    created_at: datetime
    updated_at: datetime
    refunded: int = 0
    refunds: tuple[Refund, ...] = ()
    decline_code: str | None = None
    failure_reason: str | None = None
    provider_reference: str | None = None
    # While PENDING: until when the claimant owns the charge (epoch seconds). A claim that outlives
    # this died with its process, and a repeat call may take it over.
    claimed_until: int | None = None
    version: int = 1

    @classmethod
    def claim(cls, request: ChargeRequest, *, now: datetime, lease_seconds: float) -> Payment:
        return cls(
            id=payment_id_for(request.order_id),
            order_id=request.order_id,
            user_id=request.user_id,
            status=PaymentStatus.PENDING,
            amount=request.amount,
            currency=request.currency,
            payment_method=request.payment_method,
            created_at=now,
            updated_at=now,
            claimed_until=int(now.timestamp() + lease_seconds),
        )

    # --- charge --------------------------------------------------------------------------------
    def same_request(self, request: ChargeRequest) -> bool:
        return (self.order_id, self.user_id, self.amount, self.currency, self.payment_method) == (
            request.order_id,
            request.user_id,
            request.amount,
            request.currency,
            request.payment_method,
        )

    def check_repeat(self, request: ChargeRequest) -> None:
        if not self.same_request(request):
            raise Conflict("This order was already charged with another amount, currency or payment method.")

    @property
    def pending(self) -> bool:
        return self.status == PaymentStatus.PENDING

    def claim_expired(self, now: datetime) -> bool:
        return self.pending and (self.claimed_until or 0) < now.timestamp()

    def reclaimed(self, *, now: datetime, lease_seconds: float) -> Payment:
        """Owned again (an expired claim taken over, or an unknown outcome about to be asked again)."""
        return self._next(
            now,
            status=PaymentStatus.PENDING,
            failure_reason=None,
            claimed_until=int(now.timestamp() + lease_seconds),
        )

    def outcome_unknown(self, *, now: datetime) -> Payment:
        return self._settled(now, PaymentStatus.UNKNOWN, failure_reason=OUTCOME_UNKNOWN)

    def captured(self, reference: str, *, now: datetime) -> Payment:
        return self._settled(now, PaymentStatus.CAPTURED, provider_reference=reference)

    def declined(self, decline_code: str, reference: str, *, now: datetime) -> Payment:
        return self._settled(now, PaymentStatus.DECLINED, decline_code=decline_code, provider_reference=reference)

    def failed(self, reason: str, *, now: datetime) -> Payment:
        return self._settled(now, PaymentStatus.FAILED, failure_reason=reason)

    def _settled(self, now: datetime, status: PaymentStatus, **changes: object) -> Payment:
        if not self.pending:
            raise Conflict(f"The payment is already {self.status}.")
        return self._next(now, status=status, claimed_until=None, **changes)

    # --- refunds -------------------------------------------------------------------------------
    @property
    def refundable(self) -> int:
        return self.amount - self.refunded if self.status in REFUNDABLE else 0

    @property
    def confirmed_refunded(self) -> int:
        """What the provider has confirmed returning; `refunded` also counts reservations."""
        return sum(r.amount for r in self.refunds if not r.pending)

    @property
    def refunding(self) -> int:
        """Reserved for refunds the provider has not confirmed (yet)."""
        return self.refunded - self.confirmed_refunded

    @property
    def fully_refunded(self) -> bool:
        return self.confirmed_refunded == self.amount

    def refund_by_key(self, idempotency_key: str) -> Refund | None:
        return next((r for r in self.refunds if r.idempotency_key == idempotency_key), None)

    def refund_by_id(self, refund_id: str) -> Refund | None:
        return next((r for r in self.refunds if r.id == refund_id), None)

    def plan_refund(self, *, amount: int | None, idempotency_key: str, now: datetime) -> Refund:
        """The refund this request makes, or the reason it cannot: never more than is left captured."""
        if not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
            raise ValidationFailed(f"An idempotency key has 1 to {IDEMPOTENCY_KEY_MAX} characters.")
        if self.status not in REFUNDABLE:
            raise Conflict(f"A {self.status} payment cannot be refunded.")
        if self.refundable < 1:
            raise Conflict(
                f"Nothing is left to refund ({self.refunding} {self.currency} minor units are being refunded).",
                extra={"refundable": {"amount": 0, "currency": self.currency}},
            )
        value = self.refundable if amount is None else amount
        if value < 1:
            raise ValidationFailed("A refund is at least 1 minor unit.")
        if value > self.refundable:
            raise Conflict(
                f"At most {self.refundable} {self.currency} minor units are left to refund.",
                extra={"refundable": {"amount": self.refundable, "currency": self.currency}},
            )
        return Refund(
            id=refund_id_for(self.id, idempotency_key),
            amount=value,
            idempotency_key=idempotency_key,
            requested_amount=amount,
            created_at=now,
            status=RefundStatus.PENDING,
        )

    def with_refund(self, refund: Refund, *, now: datetime) -> Payment:
        """Reserve `refund` against the capture, before the provider is asked. The status does not
        move: nothing is refunded until the provider confirms it."""
        refunded = self.refunded + refund.amount
        if refunded > self.amount:
            raise Conflict("A refund cannot exceed the captured amount.")
        return self._next(now, refunded=refunded, refunds=(*self.refunds, refund))

    def _status_after_refunds(self, refunds: tuple[Refund, ...]) -> PaymentStatus:
        confirmed = sum(r.amount for r in refunds if not r.pending)
        if confirmed == 0:
            return PaymentStatus.CAPTURED
        return PaymentStatus.REFUNDED if confirmed == self.amount else PaymentStatus.PARTIALLY_REFUNDED

    def refund_succeeded(self, refund_id: str, *, now: datetime) -> tuple[Payment, Refund]:
        """Confirm a reserved refund the provider carried out. Returns (payment, the confirmed refund)."""
        refund = self.refund_by_id(refund_id)
        if refund is None or not refund.pending:
            raise Conflict("Only a reserved refund can be confirmed.")
        done = replace(refund, status=RefundStatus.SUCCEEDED)
        refunds = tuple(done if r.id == refund_id else r for r in self.refunds)
        return self._next(now, status=self._status_after_refunds(refunds), refunds=refunds), done

    def without_refund(self, refund_id: str, *, now: datetime) -> Payment:
        """Undo a reserved refund the provider refused, so the amount can be refunded again. A
        confirmed refund is never taken back: that money has left."""
        refund = self.refund_by_id(refund_id)
        if refund is None or not refund.pending:
            raise Conflict("Only a reserved refund can be taken back.")
        kept = tuple(r for r in self.refunds if r.id != refund_id)
        refunded = sum(r.amount for r in kept)
        return self._next(now, status=self._status_after_refunds(kept), refunded=refunded, refunds=kept)

    def _next(self, now: datetime, **changes: object) -> Payment:
        return replace(self, updated_at=now, version=self.version + 1, **changes)  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "order_id": self.order_id,
            "user_id": self.user_id,
            "status": str(self.status),
            "amount": {"amount": self.amount, "currency": self.currency},
            # Confirmed by the provider; what is reserved but not confirmed is `refunding`.
            "refunded": {"amount": self.confirmed_refunded, "currency": self.currency},
            "refunding": {"amount": self.refunding, "currency": self.currency},
            "payment_method": self.payment_method,
            "decline_code": self.decline_code,
            "failure_reason": self.failure_reason,
            "refunds": [refund_dict(self, r) for r in self.refunds],
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def refund_dict(payment: Payment, refund: Refund) -> dict[str, object]:
    """A refund as the API answers it. Only immutable facts, so a replay answers the same body."""
    return {
        "id": refund.id,
        "payment_id": payment.id,
        "order_id": payment.order_id,
        "amount": {"amount": refund.amount, "currency": payment.currency},
        "idempotency_key": refund.idempotency_key,
        "created_at": refund.created_at.isoformat(),
    }
