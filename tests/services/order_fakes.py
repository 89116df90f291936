"""In-memory fakes of every order-service port. `tests/services/test_order_ports.py` holds each to
the same contract as its real adapter, so the fast tests that use them prove the real thing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudshop.errors import BadRequest, Conflict, DependencyUnavailable, NotFound, OutOfStock, ValidationFailed
from cloudshop.events import OrderEventV1
from cloudshop.money import AMOUNT_MAX
from eks_services.order.model import (
    UNFINISHED,
    Cart,
    CartClaim,
    CartLine,
    Charge,
    ChargeStatus,
    CheckedOutLine,
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
    def __init__(
        self,
        products: dict[str, tuple[str, int, int]] | None = None,
        *,
        currency: str = "INR",
        reservation_ttl_seconds: float = 900,
    ) -> None:
        """`products`: id -> (name, unit price, stock)."""
        self.products: dict[str, StockedProduct] = {}
        for pid, (name, price, stock) in (products or {}).items():
            self.add(pid, name=name, price=price, stock=stock, currency=currency)
        self.reservations: dict[str, tuple[Line, ...]] = {}
        self.status: dict[str, str] = {}
        self.expires: dict[str, datetime] = {}
        self.reservation_ttl = timedelta(seconds=reservation_ttl_seconds)
        # The catalog's clock: a test moves it forward to let reservations expire.
        self.now: Callable[[], datetime] = lambda: datetime.now(UTC)
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

    def _take(self, lines: Sequence[tuple[str, int]]) -> None:
        unknown = [pid for pid, _ in lines if pid not in self.products]
        if unknown:
            raise ValidationFailed("Unknown products.", extra={"products": unknown})
        short = [pid for pid, quantity in lines if self.products[pid].stock < quantity]
        if short:
            raise OutOfStock("Not enough stock for: " + ", ".join(short), extra={"products": short})
        for pid, quantity in lines:
            self.products[pid].stock -= quantity

    async def reserve(self, order_id: str, lines: Sequence[ReservationLine]) -> tuple[Line, ...]:
        self.calls.append("reserve")
        if order_id in self.reservations:
            earlier = self.reservations[order_id]
            if [(x.product_id, x.quantity) for x in earlier] != [(x.product_id, x.quantity) for x in lines]:
                raise Conflict(f"Order {order_id} already reserved other lines.")
            if self.status[order_id] == "released":
                self._take([(x.product_id, x.quantity) for x in earlier])
                self.status[order_id] = "reserved"
                self.expires[order_id] = self.now() + self.reservation_ttl
            return earlier
        self._take([(x.product_id, x.quantity) for x in lines])
        reserved = []
        for x in lines:
            p = self.products[x.product_id].product
            reserved.append(Line(x.product_id, p.name, x.quantity, p.unit_price, p.currency))
        self.reservations[order_id] = tuple(reserved)
        self.status[order_id] = "reserved"
        self.expires[order_id] = self.now() + self.reservation_ttl
        return self.reservations[order_id]

    async def release(self, order_id: str) -> None:
        self.calls.append("release")
        if self.status.get(order_id) in ("reserved", "committed"):
            self.status[order_id] = "released"
            for line in self.reservations[order_id]:
                self.products[line.product_id].stock += line.quantity

    async def commit(self, order_ids: Sequence[str]) -> None:
        self.calls.append("commit")
        for order_id in order_ids:
            if self.status.get(order_id) == "reserved":
                self.status[order_id] = "committed"

    async def expired_reservations(self, *, limit: int, after: str | None = None) -> list[str]:
        self.calls.append("expired_reservations")
        now = self.now()
        due = sorted(
            order_id
            for order_id, status in self.status.items()
            if status == "reserved" and self.expires[order_id] <= now and (after is None or order_id > after)
        )
        return due[:limit]


class InMemoryPayments:
    """Outcomes by token, as the simulated provider behind the payment service gives them. A token
    `pm_card_unknown_then_*` answers UNKNOWN to the first charge and its outcome to the next."""

    OUTCOMES = {
        "pm_card_ok": (ChargeStatus.CAPTURED, None, None),
        "pm_card_declined": (ChargeStatus.DECLINED, "card_declined", None),
        "pm_card_insufficient_funds": (ChargeStatus.DECLINED, "insufficient_funds", None),
        "pm_card_error": (ChargeStatus.FAILED, None, "provider_error"),
        "pm_card_unknown_then_ok": (ChargeStatus.CAPTURED, None, None),
        "pm_card_unknown_then_declined": (ChargeStatus.DECLINED, "card_declined", None),
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

    def _by_id(self, payment_id: str) -> tuple[str, Charge]:
        found = next(((o, c) for o, c in self.charges.items() if c.payment_id == payment_id), None)
        if found is None:
            raise NotFound("No such resource.")
        return found

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
        if not 1 <= amount <= AMOUNT_MAX:
            raise ValidationFailed(f"An amount is between 1 and {AMOUNT_MAX} minor units.")
        earlier = self.charges.get(order_id)
        if earlier is not None:
            if (earlier.amount, earlier.currency) != (amount, currency):
                raise Conflict("This order was already charged with another amount.")
            if earlier.status != ChargeStatus.UNKNOWN:
                return earlier
        status, decline, failure = self.OUTCOMES[payment_method]
        if payment_method.startswith("pm_card_unknown_then_") and earlier is None:
            status, decline, failure = ChargeStatus.UNKNOWN, None, "outcome_unknown"
        charge = Charge(f"pay_{order_id}", status, amount, currency, decline_code=decline, failure_reason=failure)
        self.charges[order_id] = charge
        return charge

    async def payment(self, payment_id: str) -> Charge:
        self.calls.append("payment")
        self._check_up("payment")
        return self._by_id(payment_id)[1]

    def start_refund(self, payment_id: str, amount: int | None = None) -> None:
        """An admin's refund reserved at the payment service, not confirmed by the provider (yet)."""
        order_id, charge = self._by_id(payment_id)
        left = charge.amount - charge.refunded - charge.refunding
        self.charges[order_id] = replace(charge, refunding=charge.refunding + (left if amount is None else amount))

    async def refund(self, payment_id: str, *, amount: int | None, idempotency_key: str) -> RefundReceipt:
        self.calls.append("refund")
        self._check_up("refund")
        order_id, charge = self._by_id(payment_id)
        if (payment_id, idempotency_key) not in self.refunds:
            if not charge.captured:
                raise Conflict(f"A {charge.status} payment cannot be refunded.")
            left = charge.amount - charge.refunded - charge.refunding
            if left < 1:
                raise Conflict("Nothing is left to refund.")
            value = left if amount is None else amount
            if value > left:
                raise Conflict(f"At most {left} minor units are left to refund.")
            refunded = charge.refunded + value
            status = ChargeStatus.REFUNDED if refunded == charge.amount else ChargeStatus.PARTIALLY_REFUNDED
            self.charges[order_id] = replace(charge, refunded=refunded, status=status)
            self.refund_calls.append((payment_id, amount))
            self.refunds[(payment_id, idempotency_key)] = RefundReceipt(
                f"re_{len(self.refunds) + 1}", payment_id, value, charge.currency
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
        return self._newest_first(lambda o: o.user_id, user_id, limit=limit, cursor=cursor)

    async def by_status(self, status: OrderStatus, *, limit: int, cursor: str | None) -> tuple[list[Order], str | None]:
        self.calls.append("by_status")
        return self._newest_first(lambda o: str(o.status), str(status), limit=limit, cursor=cursor)

    def _newest_first(
        self, key: Callable[[Order], str], value: str, *, limit: int, cursor: str | None
    ) -> tuple[list[Order], str | None]:
        """One page of the orders whose `key` is `value`, newest first, as the adapter's indexes give them."""
        matching = sorted(
            (s.order for s in self.items.values() if key(s.order) == value),
            key=lambda o: (o.created_at, o.id),
            reverse=True,
        )
        start = 0
        if cursor:
            try:
                wanted, after = json.loads(cursor)
            except (ValueError, TypeError) as exc:
                raise BadRequest("The cursor is not valid.") from exc
            if wanted != value:
                raise BadRequest("The cursor is not valid.")
            start = next((n + 1 for n, o in enumerate(matching) if o.id == after), len(matching))
        page = matching[start : start + limit]
        more = start + limit < len(matching)
        return page, json.dumps([value, page[-1].id]) if more and page else None

    async def unfinished(
        self, *, created_before: datetime, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Order], str | None]:
        self.calls.append("unfinished")
        orders = [s.order for s in self.items.values()]
        waiting = sorted(
            (o for o in orders if o.status in UNFINISHED and o.created_at < created_before),
            key=lambda o: (o.created_at, o.id),
        )
        if cursor:
            after = json.loads(cursor)
            waiting = [o for o in waiting if (o.created_at.isoformat(), o.id) > (after[0], after[1])]
        page = waiting[:limit]
        more = len(waiting) > limit
        return page, json.dumps([page[-1].created_at.isoformat(), page[-1].id]) if more else None

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


@dataclass
class _StoredCart:
    lines: dict[str, CartLine] = field(default_factory=dict)
    version: int = 0
    claim: CartClaim | None = None


class InMemoryCarts:
    def __init__(self) -> None:
        self.carts: dict[str, _StoredCart] = {}
        self.calls: list[str] = []

    def _cart(self, user_id: str) -> Cart:
        stored = self.carts.get(user_id) or _StoredCart()
        return Cart(user_id, tuple(v for _, v in sorted(stored.lines.items())), stored.version, stored.claim)

    async def get(self, user_id: str) -> Cart:
        self.calls.append("get")
        return self._cart(user_id)

    async def set_line(self, user_id: str, line: CartLine, *, max_lines: int) -> Cart:
        self.calls.append("set_line")
        cart = self.carts.setdefault(user_id, _StoredCart())
        if line.product_id not in cart.lines and len(cart.lines) >= max_lines:
            raise Conflict(f"A cart holds at most {max_lines} different products.")
        cart.lines[line.product_id] = line
        cart.version += 1
        return self._cart(user_id)

    async def remove_line(self, user_id: str, product_id: str) -> Cart:
        self.calls.append("remove_line")
        cart = self.carts.get(user_id)
        if cart is not None and cart.lines.pop(product_id, None) is not None:
            cart.version += 1
        return self._cart(user_id)

    async def clear(self, user_id: str) -> None:
        self.calls.append("clear")
        cart = self.carts.get(user_id)
        if cart is not None:
            cart.lines = {}
            cart.version += 1

    async def claim(self, user_id: str, *, order_id: str, version: int, now: datetime, replacing: str | None) -> bool:
        self.calls.append("claim")
        cart = self.carts.get(user_id)
        if cart is None or cart.version != version:
            return False
        if cart.claim is not None and cart.claim.order_id not in (order_id, replacing):
            return False
        cart.claim = CartClaim(order_id, version, now)
        return True

    async def checked_out(self, user_id: str, *, order_id: str, lines: Sequence[CheckedOutLine]) -> None:
        self.calls.append("checked_out")
        cart = self.carts.get(user_id)
        if cart is None:
            return
        removed = False
        for bought in lines:
            current = cart.lines.get(bought.product_id)
            same = current is not None and (
                current.rev == bought.rev if bought.rev else (not current.rev and current.quantity == bought.quantity)
            )
            if same:
                del cart.lines[bought.product_id]
                removed = True
        if removed:
            cart.version += 1
        if cart.claim is not None and cart.claim.order_id == order_id:
            cart.claim = None

    async def release_claim(self, user_id: str, *, order_id: str) -> None:
        self.calls.append("release_claim")
        cart = self.carts.get(user_id)
        if cart is not None and cart.claim is not None and cart.claim.order_id == order_id:
            cart.claim = None


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
