"""In-memory fakes of every order-service port. `tests/services/test_order_ports.py` holds each to
the same contract as its real adapter, so the fast tests that use them prove the real thing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cloudshop.errors import BadRequest, Conflict, DependencyUnavailable, NotFound, OutOfStock, ValidationFailed
from cloudshop.events import OrderEventV1
from eks_services.order.model import (
    Cart,
    CartLine,
    Charge,
    ChargeStatus,
    Line,
    Order,
    OrderStatus,
    OutboxEvent,
    Product,
    RefundReceipt,
    ReservationLine,
)
from eks_services.order.repository import OrderExists, StaleOrder


@dataclass
class StockedProduct:
    product: Product
    stock: int


class InMemoryCatalog:
    def __init__(self, products: dict[str, tuple[str, int, int]] | None = None, *, currency: str = "INR") -> None:
        """`products`: id -> (name, unit price, stock)."""
        self.products: dict[str, StockedProduct] = {}
        for pid, (name, price, stock) in (products or {}).items():
            self.add(pid, name=name, price=price, stock=stock, currency=currency)
        self.reservations: dict[str, tuple[Line, ...]] = {}
        self.status: dict[str, str] = {}
        self.calls: list[str] = []

    def add(self, product_id: str, *, name: str, price: int, stock: int, currency: str = "INR") -> None:
        self.products[product_id] = StockedProduct(Product(product_id, name, price, currency), stock)

    def stock(self, product_id: str) -> int:
        return self.products[product_id].stock

    def reprice(self, product_id: str, price: int) -> None:
        entry = self.products[product_id]
        entry.product = replace(entry.product, unit_price=price)

    async def product(self, product_id: str) -> Product:
        self.calls.append("product")
        if product_id not in self.products:
            raise NotFound("No such product.")
        return self.products[product_id].product

    async def reserve(self, order_id: str, lines: Sequence[ReservationLine]) -> tuple[Line, ...]:
        self.calls.append("reserve")
        if order_id in self.reservations:
            earlier = self.reservations[order_id]
            if [(x.product_id, x.quantity) for x in earlier] != [(x.product_id, x.quantity) for x in lines]:
                raise Conflict(f"Order {order_id} already reserved other lines.")
            return earlier
        unknown = [x.product_id for x in lines if x.product_id not in self.products]
        if unknown:
            raise ValidationFailed("Unknown products.", extra={"products": unknown})
        short = [x.product_id for x in lines if self.products[x.product_id].stock < x.quantity]
        if short:
            raise OutOfStock("Not enough stock for: " + ", ".join(short), extra={"products": short})
        reserved = []
        for x in lines:
            entry = self.products[x.product_id]
            entry.stock -= x.quantity
            p = entry.product
            reserved.append(Line(x.product_id, p.name, x.quantity, p.unit_price, p.currency))
        self.reservations[order_id] = tuple(reserved)
        self.status[order_id] = "reserved"
        return self.reservations[order_id]

    async def release(self, order_id: str) -> None:
        self.calls.append("release")
        if self.status.get(order_id) in ("reserved", "committed"):
            self.status[order_id] = "released"
            for line in self.reservations[order_id]:
                self.products[line.product_id].stock += line.quantity

    async def commit(self, order_id: str) -> None:
        self.calls.append("commit")
        if self.status.get(order_id) == "reserved":
            self.status[order_id] = "committed"


class InMemoryPayments:
    OUTCOMES = {
        "pm_card_ok": (ChargeStatus.CAPTURED, None, None),
        "pm_card_declined": (ChargeStatus.DECLINED, "card_declined", None),
        "pm_card_insufficient_funds": (ChargeStatus.DECLINED, "insufficient_funds", None),
        "pm_card_error": (ChargeStatus.FAILED, None, "provider_error"),
    }

    def __init__(self) -> None:
        self.charges: dict[str, Charge] = {}
        self.refunds: dict[tuple[str, str], RefundReceipt] = {}
        self.refund_calls: list[tuple[str, int | None]] = []
        # Operations that fail as if the payment service were unreachable.
        self.down: set[str] = set()
        self.calls: list[str] = []

    def _check_up(self, operation: str) -> None:
        if operation in self.down:
            raise DependencyUnavailable("The payment service is unavailable; try again.")

    async def verify(self, payment_method: str) -> None:
        self.calls.append("verify")
        self._check_up("verify")
        if payment_method not in self.OUTCOMES:
            raise ValidationFailed("Unknown payment method.")

    async def charge(self, *, order_id: str, user_id: str, amount: int, currency: str, payment_method: str) -> Charge:
        self.calls.append("charge")
        self._check_up("charge")
        if payment_method not in self.OUTCOMES:
            raise ValidationFailed("Unknown payment method.")
        earlier = self.charges.get(order_id)
        if earlier is not None:
            if (earlier.amount, earlier.currency) != (amount, currency):
                raise Conflict("This order was already charged with another amount.")
            return earlier
        status, decline, failure = self.OUTCOMES[payment_method]
        charge = Charge(f"pay_{order_id}", status, amount, currency, decline_code=decline, failure_reason=failure)
        self.charges[order_id] = charge
        return charge

    async def refund(self, payment_id: str, *, amount: int | None, idempotency_key: str) -> RefundReceipt:
        self.calls.append("refund")
        self._check_up("refund")
        charge = next((c for c in self.charges.values() if c.payment_id == payment_id), None)
        if charge is None:
            raise NotFound("No such resource.")
        if (payment_id, idempotency_key) not in self.refunds:
            if not charge.captured:
                raise Conflict(f"A {charge.status} payment cannot be refunded.")
            self.refund_calls.append((payment_id, amount))
            self.refunds[(payment_id, idempotency_key)] = RefundReceipt(
                f"re_{len(self.refunds) + 1}", payment_id, charge.amount if amount is None else amount, charge.currency
            )
        return self.refunds[(payment_id, idempotency_key)]


@dataclass
class _StoredOrder:
    order: Order
    outbox: dict[str, str] = field(default_factory=dict)


class InMemoryOrders:
    def __init__(self) -> None:
        self.items: dict[str, _StoredOrder] = {}
        self.calls: list[str] = []

    async def create(self, order: Order, event: OrderEventV1) -> None:
        self.calls.append("create")
        if order.id in self.items:
            raise OrderExists(f"Order {order.id} exists.")
        self.items[order.id] = _StoredOrder(order, {event.event_id: event.to_json()})

    async def save(self, order: Order, event: OrderEventV1 | None) -> None:
        self.calls.append("save")
        stored = self.items.get(order.id)
        if stored is None or stored.order.version != order.version - 1:
            raise StaleOrder(f"Order {order.id} changed meanwhile.")
        stored.order = order
        if event is not None:
            stored.outbox[event.event_id] = event.to_json()

    async def get(self, order_id: str) -> Order | None:
        self.calls.append("get")
        stored = self.items.get(order_id)
        return stored.order if stored else None

    async def by_user(self, user_id: str, *, limit: int, cursor: str | None) -> tuple[list[Order], str | None]:
        self.calls.append("by_user")
        mine = sorted(
            (s.order for s in self.items.values() if s.order.user_id == user_id),
            key=lambda o: (o.created_at, o.id),
            reverse=True,
        )
        start = 0
        if cursor:
            try:
                owner, after = json.loads(cursor)
            except (ValueError, TypeError) as exc:
                raise BadRequest("The cursor is not valid.") from exc
            if owner != user_id:
                raise BadRequest("The cursor is not valid.")
            start = next((n + 1 for n, o in enumerate(mine) if o.id == after), len(mine))
        page = mine[start : start + limit]
        more = start + limit < len(mine)
        return page, json.dumps([user_id, page[-1].id]) if more and page else None

    async def awaiting_payment(self, *, created_before: datetime, limit: int = 50) -> list[Order]:
        waiting = sorted(
            (
                s.order
                for s in self.items.values()
                if s.order.status == OrderStatus.PENDING_PAYMENT and s.order.created_at < created_before
            ),
            key=lambda o: o.created_at,
        )
        return waiting[:limit]

    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]:
        self.calls.append("pending_events")
        pending = [s for s in self.items.values() if s.outbox][:limit]
        events = [OutboxEvent(eid, s.order.id, payload) for s in pending for eid, payload in s.outbox.items()]
        return sorted(events, key=lambda e: (e.order_id, json.loads(e.payload)["occurred_at"]))

    async def mark_sent(self, order_id: str, event_ids: Sequence[str]) -> None:
        self.calls.append("mark_sent")
        stored = self.items.get(order_id)
        if stored is not None:
            for event_id in event_ids:
                stored.outbox.pop(event_id, None)


class InMemoryCarts:
    def __init__(self) -> None:
        self.lines: dict[str, dict[str, CartLine]] = {}
        self.calls: list[str] = []

    async def get(self, user_id: str) -> Cart:
        self.calls.append("get")
        return Cart(user_id, tuple(v for _, v in sorted(self.lines.get(user_id, {}).items())))

    async def set_line(self, user_id: str, line: CartLine, *, max_lines: int) -> None:
        self.calls.append("set_line")
        cart = self.lines.setdefault(user_id, {})
        if line.product_id not in cart and len(cart) >= max_lines:
            raise Conflict(f"A cart holds at most {max_lines} different products.")
        cart[line.product_id] = line

    async def remove_line(self, user_id: str, product_id: str) -> None:
        self.calls.append("remove_line")
        self.lines.get(user_id, {}).pop(product_id, None)

    async def clear(self, user_id: str) -> None:
        self.calls.append("clear")
        self.lines.pop(user_id, None)


class InMemoryCheckoutReader:
    def __init__(self, orders: InMemoryOrders, carts: InMemoryCarts) -> None:
        self.orders = orders
        self.carts = carts
        self.calls: list[str] = []

    async def order_and_cart(self, order_id: str, user_id: str) -> tuple[Order | None, Cart]:
        self.calls.append("order_and_cart")
        stored = self.orders.items.get(order_id)
        return (stored.order if stored else None), await self.carts.get(user_id)


class InMemoryEventPublisher:
    def __init__(self) -> None:
        self.published: list[OutboxEvent] = []
        self.failing = False
        self.closed = False

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(e.payload) for e in self.published]

    async def publish(self, events: Sequence[OutboxEvent]) -> None:
        if self.failing:
            raise RuntimeError("the broker is down")
        self.published.extend(events)

    async def aclose(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class FakeMessage:
    body: str
    receipt: str


class InMemoryPaymentEventSource:
    """A queue with SQS's redrive: a message received `max_receive_count` times without being
    deleted moves to `dead_letters` instead of coming back."""

    def __init__(self, *, max_receive_count: int = 3) -> None:
        self.max_receive_count = max_receive_count
        self.messages: dict[str, str] = {}
        self.receives: dict[str, int] = {}
        self.dead_letters: list[str] = []
        self._next = 0

    def send(self, body: str) -> None:
        self._next += 1
        self.messages[f"m{self._next}"] = body

    async def receive(self, *, max_messages: int, wait_seconds: int) -> list[FakeMessage]:
        for receipt in list(self.messages):
            if self.receives.get(receipt, 0) >= self.max_receive_count:
                self.dead_letters.append(self.messages.pop(receipt))
        batch = list(self.messages.items())[:max_messages]
        for receipt, _ in batch:
            self.receives[receipt] = self.receives.get(receipt, 0) + 1
        if not batch and wait_seconds:
            await asyncio.sleep(min(wait_seconds, 0.01))
        return [FakeMessage(body, receipt) for receipt, body in batch]

    async def delete(self, receipts: Sequence[str]) -> None:
        for receipt in receipts:
            self.messages.pop(receipt, None)

    async def aclose(self) -> None:
        pass


class InMemoryInvoices:
    url_ttl_seconds = 900

    def __init__(self) -> None:
        self.documents: dict[str, str] = {}

    async def ensure(self, order: Order) -> str:
        key = f"invoices/{order.user_id}/{order.id}.html"
        return key if key in self.documents else await self.write(order)

    async def write(self, order: Order) -> str:
        from eks_services.order.invoice import render_invoice

        key = f"invoices/{order.user_id}/{order.id}.html"
        self.documents[key] = render_invoice(order)
        return key

    async def url(self, key: str) -> str:
        return f"memory://{key}"
