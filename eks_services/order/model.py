"""Order domain: the cart rules, server-side pricing, the one order state machine, and the values
the order service's ports speak (products, carts, charges, outbox events, payment events).

Every change that moves money or stock claims first and acts second: a cancel writes CANCELLING (a
conditional write over the version it read) before it asks for the refund or releases the stock,
so a fulfil that comes second finds a CANCELLING order and is refused by the state machine, and a
cancel whose process dies after the claim is finished by the sweeper. A checkout likewise claims
the cart (at the version it read) before it reserves anything: one cart version is bought once.

No framework, storage or transport imports: adapters turn wire shapes into these types at the edge.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from cloudshop.errors import Conflict, ValidationFailed
from cloudshop.money import AMOUNT_MAX

QUANTITY_MIN, QUANTITY_MAX = 1, 99
CART_LINES_MAX = 50
# The most reservations one catalog commit carries: the product service's bound (`maxItems` of
# `POST /internal/reservations/commit`, checked against its openapi.json in test_order_ports.py).
RESERVATIONS_PER_COMMIT_MAX = 100
_ORDER_NAMESPACE = uuid.UUID("0b6c7d2e-8f4a-4d4e-9a51-3c2b1a0f9e8d")


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "PENDING_PAYMENT"
    PAID = "PAID"
    FULFILLED = "FULFILLED"
    # Claimed by a cancel that has not finished yet (refund, then stock release): nothing else may
    # move the order; the cancel, a repeat of it or the sweeper takes it to CANCELLED.
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    REFUNDED = "REFUNDED"


# The only legal moves. Everything else is refused with a 409.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING_PAYMENT: frozenset({OrderStatus.PAID, OrderStatus.PAYMENT_FAILED}),
    OrderStatus.PAID: frozenset({OrderStatus.FULFILLED, OrderStatus.CANCELLING, OrderStatus.REFUNDED}),
    OrderStatus.CANCELLING: frozenset({OrderStatus.CANCELLED}),
    OrderStatus.FULFILLED: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.PAYMENT_FAILED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}

# CANCELLING has no event: it is a claim, not an outcome; `order.cancelled` follows it.
EVENT_FOR_STATUS: dict[OrderStatus, str] = {
    OrderStatus.PENDING_PAYMENT: "order.created",
    OrderStatus.PAID: "order.paid",
    OrderStatus.PAYMENT_FAILED: "order.payment_failed",
    OrderStatus.CANCELLED: "order.cancelled",
    OrderStatus.REFUNDED: "order.refunded",
    OrderStatus.FULFILLED: "order.fulfilled",
}

SETTLED = frozenset(set(OrderStatus) - {OrderStatus.PENDING_PAYMENT})
# Orders with work left that the sweeper finishes if nobody else does.
UNFINISHED = frozenset({OrderStatus.PENDING_PAYMENT, OrderStatus.CANCELLING})
# The order's stock is free again: nothing holds the reservation.
STOCK_RETURNED = frozenset({OrderStatus.PAYMENT_FAILED, OrderStatus.CANCELLED})


class IllegalTransition(Conflict):
    title, slug = "Illegal order transition", "illegal-transition"


class OrderTotalTooLarge(ValidationFailed):
    title, slug = "Order total too large", "order-total-too-large"


class CartInCheckout(Conflict):
    title, slug = "Cart already checked out", "cart-in-checkout"


class PaymentBeingRefunded(Conflict):
    title, slug = "Payment refunded", "payment-refunded"


def check_total(total: int, currency: str) -> None:
    """Refuse an order the payment service could never charge (`cloudshop.money.AMOUNT_MAX`)."""
    if total > AMOUNT_MAX:
        raise OrderTotalTooLarge(
            f"An order totals at most {AMOUNT_MAX} {currency} minor units, the payment limit; this one totals {total}.",
            extra={
                "limit": {"amount": AMOUNT_MAX, "currency": currency},
                "total": {"amount": total, "currency": currency},
            },
        )


@dataclass(frozen=True)
class Line:
    product_id: str
    name: str
    quantity: int
    unit_price: int
    currency: str

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True)
class CheckedOutLine:
    """A cart line as a checkout bought it: after payment it leaves the cart only if it is still
    this revision (lines added or changed during the checkout stay)."""

    product_id: str
    quantity: int
    rev: str


@dataclass(frozen=True)
class Order:
    id: str
    user_id: str
    status: OrderStatus
    lines: tuple[Line, ...]
    currency: str
    shipping_address: dict[str, Any]
    payment_method: str
    request_hash: str
    created_at: datetime
    updated_at: datetime
    customer_email: str = ""
    payment_id: str | None = None
    version: int = 1
    failure_reason: str | None = None
    # The cart version this order bought, and its lines at their revisions then.
    cart_version: int | None = None
    cart_lines: tuple[CheckedOutLine, ...] = ()

    @property
    def total(self) -> int:
        return sum(line.total for line in self.lines)

    @property
    def items(self) -> int:
        return sum(line.quantity for line in self.lines)

    @property
    def settled(self) -> bool:
        return self.status in SETTLED

    def move_to(self, status: OrderStatus, **changes: Any) -> Order:
        """The state machine: every status change goes through here."""
        if status not in TRANSITIONS[self.status]:
            raise IllegalTransition(f"An order that is {self.status} cannot become {status}.")
        return replace(self, status=status, updated_at=datetime.now(UTC), version=self.version + 1, **changes)

    def after_refund(self, refund: PaymentRefunded) -> Order | None:
        """The order once its payment is fully refunded, or None when there is nothing to change.

        Only a full refund moves the order. An order already REFUNDED, or CANCELLED (whose own refund
        this is), or CANCELLING (the cancel finishes it), stays as it is: the event is handled by
        doing nothing.
        """
        if not refund.fully_refunded or refund.order_id != self.id:
            return None
        if self.status in (OrderStatus.REFUNDED, OrderStatus.CANCELLING, OrderStatus.CANCELLED):
            return None
        if OrderStatus.REFUNDED not in TRANSITIONS[self.status]:
            return None
        return self.move_to(OrderStatus.REFUNDED, payment_id=self.payment_id or refund.payment_id)


def order_id_for(user_id: str, idempotency_key: str) -> str:
    """The order id is a function of who asked and their key: retries and concurrent twins of one
    checkout all name the same order, which makes every downstream step idempotent by order id."""
    return "ord_" + uuid.uuid5(_ORDER_NAMESPACE, f"{user_id}\n{idempotency_key}").hex


def request_hash(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_idempotency_key(key: str | None) -> str:
    if not key or not 1 <= len(key) <= 128 or not key.isprintable():
        raise ValidationFailed("The Idempotency-Key header is required (1 to 128 printable characters).")
    return key


def check_quantity(quantity: int) -> None:
    if not QUANTITY_MIN <= quantity <= QUANTITY_MAX:
        raise ValidationFailed(f"Quantity must be between {QUANTITY_MIN} and {QUANTITY_MAX}.")


def single_currency(lines: tuple[Line, ...]) -> str:
    """A cart is paid in one currency: the lines' one currency, or `ValidationFailed`."""
    currencies = {line.currency for line in lines}
    if len(currencies) != 1:
        raise ValidationFailed("All items in one order must share a currency.")
    return currencies.pop()


# --- the values the ports speak -----------------------------------------------------------------
@dataclass(frozen=True)
class Product:
    """A catalog product as the order service needs it: what to call it and what it costs now."""

    id: str
    name: str
    unit_price: int
    currency: str


@dataclass(frozen=True)
class CartLine:
    """A cart line. Name and price are a snapshot for display; checkout re-prices from the catalog.
    `rev` is new with every write of the line: a checkout removes the line after payment only if
    it is still the revision it bought."""

    product_id: str
    name: str
    quantity: int
    unit_price: int
    currency: str
    rev: str = ""

    @property
    def total(self) -> int:
        return self.quantity * self.unit_price


@dataclass(frozen=True)
class CartClaim:
    """The checkout that holds the cart: the order it is writing and the cart version it read."""

    order_id: str
    version: int
    claimed_at: datetime


@dataclass(frozen=True)
class Cart:
    user_id: str
    lines: tuple[CartLine, ...] = ()
    # One more with every change of the lines; a checkout claims the cart at the version it read.
    version: int = 0
    claim: CartClaim | None = None

    def checked_out_lines(self) -> tuple[CheckedOutLine, ...]:
        return tuple(CheckedOutLine(line.product_id, line.quantity, line.rev) for line in self.lines)

    @property
    def empty(self) -> bool:
        return not self.lines

    @property
    def currency(self) -> str | None:
        return self.lines[0].currency if self.lines else None

    @property
    def total(self) -> int:
        return sum(line.total for line in self.lines)

    def reservation(self) -> tuple[ReservationLine, ...]:
        """What to reserve for this cart, in product-id order (the catalog's lock order)."""
        return tuple(ReservationLine(line.product_id, line.quantity) for line in sorted(self.lines, key=_by_product))


def _by_product(line: CartLine) -> str:
    return line.product_id


@dataclass(frozen=True)
class ReservationLine:
    product_id: str
    quantity: int


class ChargeStatus(StrEnum):
    PENDING = "PENDING"
    # The provider did not say whether it captured (a timeout, a lost answer): the payment service
    # asks it again on the next charge request for the order; until then the order stays pending.
    UNKNOWN = "UNKNOWN"
    CAPTURED = "CAPTURED"
    DECLINED = "DECLINED"
    FAILED = "FAILED"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"


@dataclass(frozen=True)
class Charge:
    """The payment service's answer to a charge: its outcome, never an error for a decline."""

    payment_id: str
    status: ChargeStatus
    amount: int
    currency: str
    decline_code: str | None = None
    failure_reason: str | None = None
    # Confirmed refunds, and refunds reserved against the capture that the provider has not
    # confirmed (yet).
    refunded: int = 0
    refunding: int = 0

    @property
    def refunded_in_full(self) -> bool:
        """The whole capture is refunded, or reserved for a refund that is under way."""
        return self.captured and self.refunded + self.refunding >= self.amount

    @property
    def captured(self) -> bool:
        # A payment refunded since was captured first: a repeat charge of a paid order answers it.
        return self.status in (ChargeStatus.CAPTURED, ChargeStatus.PARTIALLY_REFUNDED, ChargeStatus.REFUNDED)

    @property
    def reason(self) -> str:
        return self.decline_code or self.failure_reason or "payment failed"


@dataclass(frozen=True)
class RefundReceipt:
    refund_id: str
    payment_id: str
    amount: int
    currency: str


@dataclass(frozen=True)
class OutboxEvent:
    """An event waiting in an order's outbox: published to every sink, then removed."""

    event_id: str
    order_id: str
    payload: str  # the event's JSON, as written with the state change


@dataclass(frozen=True)
class PaymentRefunded:
    """`payment.refunded`, as the order service reads it from the `payment-events` queue."""

    event_id: str
    payment_id: str
    order_id: str
    fully_refunded: bool
