"""Order domain: the cart rules, server-side pricing and the one order state machine.

No framework, storage or transport imports: the service layer feeds this module plain values.
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

QUANTITY_MIN, QUANTITY_MAX = 1, 99
CART_LINES_MAX = 50
_ORDER_NAMESPACE = uuid.UUID("0b6c7d2e-8f4a-4d4e-9a51-3c2b1a0f9e8d")


class OrderStatus(StrEnum):
    PENDING_PAYMENT = "PENDING_PAYMENT"
    PAID = "PAID"
    FULFILLED = "FULFILLED"
    CANCELLED = "CANCELLED"
    PAYMENT_FAILED = "PAYMENT_FAILED"
    REFUNDED = "REFUNDED"


# The only legal moves. Everything else is refused with a 409.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.PENDING_PAYMENT: frozenset({OrderStatus.PAID, OrderStatus.PAYMENT_FAILED}),
    OrderStatus.PAID: frozenset({OrderStatus.FULFILLED, OrderStatus.CANCELLED, OrderStatus.REFUNDED}),
    OrderStatus.FULFILLED: frozenset({OrderStatus.REFUNDED}),
    OrderStatus.CANCELLED: frozenset(),
    OrderStatus.PAYMENT_FAILED: frozenset(),
    OrderStatus.REFUNDED: frozenset(),
}

EVENT_FOR_STATUS: dict[OrderStatus, str] = {
    OrderStatus.PENDING_PAYMENT: "order.created",
    OrderStatus.PAID: "order.paid",
    OrderStatus.PAYMENT_FAILED: "order.payment_failed",
    OrderStatus.CANCELLED: "order.cancelled",
    OrderStatus.REFUNDED: "order.refunded",
    OrderStatus.FULFILLED: "order.fulfilled",
}

SETTLED = frozenset(set(OrderStatus) - {OrderStatus.PENDING_PAYMENT})


class IllegalTransition(Conflict):
    title, slug = "Illegal order transition", "illegal-transition"


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


def price_lines(reserved: list[dict[str, Any]]) -> tuple[tuple[Line, ...], str]:
    """Lines priced by the catalog at reservation time. A cart is paid in one currency."""
    lines = tuple(
        Line(
            product_id=str(r["product_id"]),
            name=str(r["name"]),
            quantity=int(r["quantity"]),
            unit_price=int(r["unit_price"]["amount"]),
            currency=str(r["unit_price"]["currency"]),
        )
        for r in reserved
    )
    currencies = {line.currency for line in lines}
    if len(currencies) != 1:
        raise ValidationFailed("All items in one order must share a currency.")
    return lines, currencies.pop()
