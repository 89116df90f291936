"""What the order service needs from the world, as typed ports that speak the domain's values.

Every port has a real adapter (`repository.py`: DynamoDB; `clients.py`: the product and payment
services over HTTP; `messaging.py`: Kafka/file log and SQS; `invoice.py`: S3) and an in-memory fake
(`tests/services/order_fakes.py`); one contract test module runs the same checks against both.
Every write here is idempotent by order id (or an explicit key), so adapters may retry them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from cloudshop.events import OrderEventV1
from eks_services.order.model import (
    Cart,
    CartLine,
    Charge,
    CheckedOutLine,
    Line,
    Order,
    OrderStatus,
    OutboxEvent,
    Product,
    RefundReceipt,
    ReservationLine,
)


class Catalog(Protocol):
    async def product(self, product_id: str) -> Product:
        """The product, or `NotFound`."""

    async def reserve(self, order_id: str, lines: Sequence[ReservationLine]) -> tuple[Line, ...]:
        """Reserve every line or none, priced now; a repeat with the same order id answers the first
        reservation (and takes the stock again if that one was released). `OutOfStock` (naming the
        products) when any line is short, `Conflict` when the order id already holds other lines.
        A reservation expires unless it is committed: see `expired_reservations`."""

    async def release(self, order_id: str) -> None:
        """Put the reserved stock back, once (a repeat is a no-op)."""

    async def commit(self, order_ids: Sequence[str]) -> None:
        """Mark these orders' reservations as held by written orders, in one call however many: they
        no longer expire (a repeat, or an id with nothing reserved, is a no-op; `release` still
        returns their stock)."""

    async def expired_reservations(self, *, limit: int, after: str | None = None) -> list[str]:
        """Order ids of reservations past their expiry and neither committed nor released, in order
        id order, starting after `after`: the sweeper commits those whose order exists and releases
        the others."""


class Payments(Protocol):
    async def verify(self, payment_method: str) -> None:
        """`ValidationFailed` when the provider does not know the payment method."""

    async def charge(self, *, order_id: str, user_id: str, amount: int, currency: str, payment_method: str) -> Charge:
        """Charge an order once (idempotent by order id). A decline is an outcome, not an error, and
        so is an unknown outcome (`UNKNOWN`: a repeat asks the provider again); `Conflict` when a
        charge for the order is still in progress or does not match it, `ValidationFailed` when the
        payment service will never take it (an amount above its limit)."""

    async def payment(self, payment_id: str) -> Charge:
        """The payment as it stands now, refunds (confirmed and under way) included."""

    async def refund(self, payment_id: str, *, amount: int | None, idempotency_key: str) -> RefundReceipt:
        """Refund `amount` (None: what is left), once per key."""


class Orders(Protocol):
    async def create(self, order: Order, event: OrderEventV1) -> None:
        """Write a new order with its event in its outbox; `OrderExists` when the id is taken."""

    async def save(self, order: Order, event: OrderEventV1 | None) -> None:
        """Write `order` over version `order.version - 1` (with its event, if any), or `StaleOrder`."""

    async def get(self, order_id: str) -> Order | None: ...

    async def by_user(self, user_id: str, *, limit: int, cursor: str | None) -> tuple[list[Order], str | None]:
        """A user's orders, newest first, and the cursor of the next page (`BadRequest` for a bad one)."""

    async def by_status(self, status: OrderStatus, *, limit: int, cursor: str | None) -> tuple[list[Order], str | None]:
        """Orders in `status`, newest first, and the cursor of the next page (`BadRequest` for a bad one)."""

    async def unfinished(
        self, *, created_before: datetime, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Order], str | None]:
        """A page of orders still PENDING_PAYMENT or CANCELLING created before `created_before`,
        oldest first, and the cursor of the next page (None after the last)."""

    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]:
        """Unsent events of up to `limit` orders; within an order, in the order they happened."""

    async def mark_sent(self, order_id: str, event_ids: Sequence[str]) -> None:
        """Drop published events from the order's outbox."""


class Carts(Protocol):
    """Every change of the lines makes a new cart version; the claim is kept apart from the lines."""

    async def get(self, user_id: str) -> Cart: ...

    async def set_line(self, user_id: str, line: CartLine, *, max_lines: int) -> Cart:
        """Add or replace a line (stored with its `rev`) and answer the cart as that write left it
        (so showing it costs no read); `Conflict` when that would make more than `max_lines` products."""

    async def remove_line(self, user_id: str, product_id: str) -> Cart:
        """Remove the line if the cart holds it; answer the cart as it is after."""

    async def clear(self, user_id: str) -> None:
        """Remove every line (a new version); a checkout's claim stays."""

    async def claim(self, user_id: str, *, order_id: str, version: int, now: datetime, replacing: str | None) -> bool:
        """Let `order_id` hold the cart for its checkout, if the cart is still at `version` and no
        other order holds it (`replacing` names a holder the caller found dead). True when the
        order holds it now (a repeat by the same order included), False otherwise."""

    async def checked_out(self, user_id: str, *, order_id: str, lines: Sequence[CheckedOutLine]) -> None:
        """The order bought `lines`: remove each that is still at its revision, keep the others, and
        drop the order's claim. Idempotent."""

    async def release_claim(self, user_id: str, *, order_id: str) -> None:
        """Drop the claim if `order_id` holds it (its checkout ended without buying)."""


class CheckoutReader(Protocol):
    async def order_and_cart(self, order_id: str, user_id: str) -> tuple[Order | None, Cart]:
        """The order this checkout would make (if it exists) and the buyer's cart, read together:
        one round trip where the storage allows it (DynamoDB `BatchGetItem`)."""


class EventPublisher(Protocol):
    """Where the outbox relay sends events: Kafka `orders` and SQS `order-events`."""

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        """Return once every event is accepted; raise when any is not (the relay retries them all)."""

    async def aclose(self) -> None: ...


class ReceivedMessage(Protocol):
    @property
    def body(self) -> str: ...

    @property
    def receipt(self) -> str: ...


class PaymentEventSource(Protocol):
    """The `payment-events` queue: at-least-once delivery, redriven to a DLQ after repeated failures."""

    async def receive(self, *, max_messages: int, wait_seconds: int) -> Sequence[ReceivedMessage]: ...

    async def delete(self, receipts: Sequence[str]) -> None: ...

    async def aclose(self) -> None: ...


class Invoices(Protocol):
    url_ttl_seconds: int

    async def ensure(self, order: Order) -> str:
        """The key of the order's invoice document, written now if it does not exist yet."""

    async def write(self, order: Order) -> str: ...

    async def url(self, key: str) -> str: ...
