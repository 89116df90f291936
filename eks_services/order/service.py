"""Cart and checkout use cases (DESIGN.md §6), async end to end.

Checkout: read the order this key would make and the cart together, reserve stock for the whole cart
(priced by the catalog), write the order and its event in one conditional write, charge, then PAID
(cart cleared; reservation committed and invoice written off the request path) or PAYMENT_FAILED
(stock released). The order id comes from (user, Idempotency-Key), so a retry or a concurrent twin
finds the same order and joins it instead of buying twice.

Storage, the catalog, payments and invoices are injected ports; nothing here knows HTTP or DynamoDB.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

from analytics.windows import InvalidCursorError, list_windows
from cloudshop.auth import Principal
from cloudshop.errors import (
    BadRequest,
    CloudshopError,
    Conflict,
    DependencyUnavailable,
    IdempotencyKeyReused,
    NotFound,
    OutOfStock,
    ValidationFailed,
)
from cloudshop.events import Money, OrderEventDataV1, OrderEventV1, OrderLineV1
from eks_services.order.model import (
    CART_LINES_MAX,
    EVENT_FOR_STATUS,
    Cart,
    CartLine,
    ChargeStatus,
    Order,
    OrderStatus,
    PaymentRefunded,
    check_idempotency_key,
    check_quantity,
    order_id_for,
    request_hash,
    single_currency,
)
from eks_services.order.ports import Carts, Catalog, CheckoutReader, Invoices, Orders, Payments
from eks_services.order.repository import OrderExists, StaleOrder

log = logging.getLogger("cloudshop.order")

# A repeat checkout waits this long for its twin's payment to settle before answering 503 (retry
# with the same key): under the gateway's 30 s budget.
SETTLE_WAIT_SECONDS = 20.0
POLL_SECONDS = 0.05
# Optimistic writes retried under contention before giving up with a 409.
SAVE_ATTEMPTS = 5


def order_event(order: Order) -> OrderEventV1:
    data = OrderEventDataV1(
        order_id=order.id,
        user_id=order.user_id,
        status=str(order.status),
        total=Money(amount=order.total, currency=order.currency),
        items=order.items,
        lines=[
            OrderLineV1(
                product_id=line.product_id,
                name=line.name,
                quantity=line.quantity,
                unit_price=Money(amount=line.unit_price, currency=line.currency),
            )
            for line in order.lines
        ],
        payment_id=order.payment_id,
        customer_email=order.customer_email or None,
    )
    return OrderEventV1.new(EVENT_FOR_STATUS[order.status], data, occurred_at=order.updated_at)  # type: ignore[arg-type]


class BackgroundWork:
    """Follow-ups run off the request path (reservation commit, invoice). Tracked so that shutdown
    and tests can wait for them, and so a task is never garbage-collected half-way."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, name: str, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


class CartService:
    def __init__(self, *, carts: Carts, catalog: Catalog) -> None:
        self.carts = carts
        self.catalog = catalog

    async def view(self, user_id: str) -> Cart:
        return await self.carts.get(user_id)

    async def set_quantity(self, user_id: str, product_id: str, quantity: int) -> Cart:
        check_quantity(quantity)
        try:
            product = await self.catalog.product(product_id)
        except NotFound as exc:
            raise ValidationFailed(f"Unknown product {product_id}.", extra={"products": [product_id]}) from exc
        line = CartLine(
            product_id=product_id,
            name=product.name,
            quantity=quantity,
            unit_price=product.unit_price,
            currency=product.currency,
        )
        await self.carts.set_line(user_id, line, max_lines=CART_LINES_MAX)
        return await self.view(user_id)

    async def remove(self, user_id: str, product_id: str) -> Cart:
        await self.carts.remove_line(user_id, product_id)
        return await self.view(user_id)

    async def clear(self, user_id: str) -> None:
        await self.carts.clear(user_id)


class CheckoutService:
    def __init__(
        self,
        *,
        orders: Orders,
        carts: Carts,
        reader: CheckoutReader,
        catalog: Catalog,
        payments: Payments,
        invoices: Invoices,
        on_event: Callable[[], None] | None = None,
        settle_wait_seconds: float = SETTLE_WAIT_SECONDS,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.orders = orders
        self.carts = carts
        self.reader = reader
        self.catalog = catalog
        self.payments = payments
        self.invoices = invoices
        # Wakes the outbox relay as soon as an event is written, instead of at its next poll.
        self.on_event = on_event or (lambda: None)
        self.settle_wait_seconds = settle_wait_seconds
        self._sleep = sleep
        self.background = BackgroundWork()

    # --- checkout ---------------------------------------------------------------------------------
    async def checkout(self, principal: Principal, *, idempotency_key: str | None, body: dict[str, Any]) -> Order:
        key = check_idempotency_key(idempotency_key)
        fingerprint = request_hash(body)
        order_id = order_id_for(principal.user_id, key)
        existing, cart = await self.reader.order_and_cart(order_id, principal.user_id)
        if existing is not None:
            return await self._join(existing, fingerprint)
        if cart.empty:
            # A twin request with this key may have finished (and emptied the cart) since we looked.
            return await self._join_twin(order_id, fingerprint, ValidationFailed("The cart is empty."))
        payment_method = str(body["payment_method"])
        await self.payments.verify(payment_method)
        try:
            lines = await self.catalog.reserve(order_id, cart.reservation())
        except OutOfStock:
            raise
        except Conflict as exc:
            # The order id already holds a reservation for other lines: a twin reserved the cart as
            # it was a moment earlier. Its order is the answer.
            return await self._join_twin(order_id, fingerprint, exc)
        now = datetime.now(UTC)
        order = Order(
            id=order_id,
            user_id=principal.user_id,
            status=OrderStatus.PENDING_PAYMENT,
            lines=lines,
            currency=single_currency(lines),
            shipping_address=body["shipping_address"],
            payment_method=payment_method,
            request_hash=fingerprint,
            created_at=now,
            updated_at=now,
            customer_email=principal.email,
        )
        try:
            await self.orders.create(order, order_event(order))
        except OrderExists:
            # A concurrent twin with the same key got there first; the reservation was the same
            # (idempotent by order id), so there is nothing to undo: join its outcome.
            return await self._join(await self._require(order_id), fingerprint)
        self.on_event()
        return await self._settle(order)

    async def _require(self, order_id: str) -> Order:
        order = await self.orders.get(order_id)
        if order is None:
            raise NotFound("No such order.")
        return order

    async def _join_twin(self, order_id: str, fingerprint: str, otherwise: CloudshopError) -> Order:
        existing = await self.orders.get(order_id)
        if existing is None:
            raise otherwise
        return await self._join(existing, fingerprint)

    async def _join(self, order: Order, fingerprint: str) -> Order:
        if order.request_hash != fingerprint:
            raise IdempotencyKeyReused("This Idempotency-Key was used for a different checkout.")
        if order.status == OrderStatus.PAYMENT_FAILED:
            # Releasing is idempotent; repeating it here heals a first attempt that could not reach
            # the catalog after the payment failed.
            await self.catalog.release(order.id)
        if order.settled:
            return order
        # Still pending: the first request may be mid-payment, or may have died. Settling again is
        # safe (the charge is idempotent per order, transitions are conditional), and it is what
        # completes a checkout whose first attempt lost its payment service.
        return await self._settle(order)

    async def _settle(self, order: Order) -> Order:
        try:
            charge = await self.payments.charge(
                order_id=order.id,
                user_id=order.user_id,
                amount=order.total,
                currency=order.currency,
                payment_method=order.payment_method,
            )
        except DependencyUnavailable:
            # Stock stays reserved and the order pending: a retry with the same key resumes here.
            raise
        except Conflict:
            return await self._wait_settled(order.id)
        if charge.captured:
            return await self._transition(order, OrderStatus.PAID, payment_id=charge.payment_id, after=self._paid)
        if charge.status == ChargeStatus.PENDING:
            return await self._wait_settled(order.id)
        return await self._transition(
            order,
            OrderStatus.PAYMENT_FAILED,
            payment_id=charge.payment_id,
            failure_reason=charge.reason,
            after=self._failed,
        )

    async def _transition(
        self,
        order: Order,
        status: OrderStatus,
        *,
        after: Callable[[Order], Awaitable[None]] | None = None,
        **changes: Any,
    ) -> Order:
        """Apply a transition; if another writer moved the order first, answer its outcome."""
        moved = order.move_to(status, **changes)
        try:
            await self.orders.save(moved, order_event(moved))
        except StaleOrder:
            current = await self._require(order.id)
            if current.status == status:
                return current
            raise
        self.on_event()
        if after:
            await after(moved)
        return moved

    async def _paid(self, order: Order) -> None:
        # The order is paid whatever happens next: these follow-ups must not turn it into an error.
        # Only the cart clear stays on the request path (the buyer looks at the cart next); the
        # reservation commit changes nothing the buyer sees (a cancel releases reserved and
        # committed stock alike), so it goes with the invoice, after the answer.
        try:
            await self.carts.clear(order.user_id)
        except Exception:
            log.exception("post-payment cart clear failed", extra={"fields": {"order_id": order.id}})
        self.background.spawn(f"after-paid-{order.id}", self._after_paid(order))

    async def _after_paid(self, order: Order) -> None:
        try:
            await self.catalog.commit(order.id)
        except Exception:
            log.exception("reservation commit failed", extra={"fields": {"order_id": order.id}})
        try:
            await self.invoices.write(order)
        except Exception:  # the invoice is re-made on demand by GET /invoice; never lose the order for it
            log.exception("invoice write failed", extra={"fields": {"order_id": order.id}})

    async def _failed(self, order: Order) -> None:
        await self.catalog.release(order.id)

    async def _wait_settled(self, order_id: str) -> Order:
        deadline = asyncio.get_running_loop().time() + self.settle_wait_seconds
        while asyncio.get_running_loop().time() < deadline:
            order = await self._require(order_id)
            if order.settled:
                return order
            await self._sleep(POLL_SECONDS)
        raise DependencyUnavailable("The payment is still being processed; retry with the same Idempotency-Key.")

    async def settle_abandoned(self, *, older_than_seconds: float) -> int:
        """Settle orders stuck in PENDING_PAYMENT (their checkout lost a dependency and was never
        retried): the charge is idempotent per order, so this charges at most once and releases the
        stock of a failed payment. Returns how many were settled; the rest wait for the next round."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        settled = 0
        for order in await self.orders.awaiting_payment(created_before=cutoff):
            try:
                await self._settle(order)
                settled += 1
            except CloudshopError as exc:
                log.warning(
                    "abandoned order not settled yet", extra={"fields": {"order_id": order.id, "error": exc.detail}}
                )
        return settled

    # --- after checkout ---------------------------------------------------------------------------
    async def get(self, principal: Principal, order_id: str) -> Order:
        order = await self.orders.get(order_id)
        if order is None:
            raise NotFound("No such order.")
        principal.require_owner(order.user_id)
        return order

    async def history(self, principal: Principal, *, limit: int, cursor: str | None) -> tuple[list[Order], str | None]:
        return await self.orders.by_user(principal.user_id, limit=limit, cursor=cursor)

    async def cancel(self, principal: Principal, order_id: str) -> Order:
        order = await self.get(principal, order_id)
        if order.status == OrderStatus.CANCELLED:
            return order
        order = await self._mark_cancelling(order)
        if order.payment_id:
            await self.payments.refund(order.payment_id, amount=None, idempotency_key=f"cancel-{order.id}")
        await self.catalog.release(order.id)
        return await self._transition(order, OrderStatus.CANCELLED)

    async def _mark_cancelling(self, order: Order) -> Order:
        """Record the intent before touching money or stock (refusing illegal moves first): the
        refund's own `payment.refunded` event then leaves the order to this cancel."""
        for _ in range(SAVE_ATTEMPTS):
            if order.cancel_requested:
                return order
            marked = order.requesting_cancel()
            try:
                await self.orders.save(marked, None)
            except StaleOrder:
                order = await self._require(order.id)
                if order.status == OrderStatus.CANCELLED:
                    return order
                continue
            return marked
        raise Conflict("The order is changing concurrently; retry the cancel.")

    async def fulfil(self, principal: Principal, order_id: str) -> Order:
        principal.require_admin()
        return await self._transition(await self._require(order_id), OrderStatus.FULFILLED)

    async def payment_refunded(self, event: PaymentRefunded) -> Order:
        """The payment service refunded this order's payment. Idempotent: a repeat, or a refund of a
        cancelled order, changes nothing. `NotFound` for an order this service never made."""
        for _ in range(SAVE_ATTEMPTS):
            order = await self._require(event.order_id)
            moved = order.after_refund(event)
            if moved is None:
                return order
            try:
                await self.orders.save(moved, order_event(moved))
            except StaleOrder:
                continue
            self.on_event()
            return moved
        raise Conflict(f"Order {event.order_id} kept changing; the refund event will be retried.")

    async def invoice_url(self, principal: Principal, order_id: str) -> tuple[str, int]:
        """A presigned link to the order's invoice, and how many seconds it stays valid."""
        order = await self.get(principal, order_id)
        if (
            order.status not in (OrderStatus.PAID, OrderStatus.FULFILLED, OrderStatus.REFUNDED, OrderStatus.CANCELLED)
            or not order.payment_id
        ):
            raise Conflict("An invoice exists once the order is paid.")
        # Written off the request path after payment; made here if that has not happened (yet).
        key = await self.invoices.ensure(order)
        return await self.invoices.url(key), self.invoices.url_ttl_seconds


class AnalyticsWindows:
    """The analytics job's latest windows, read from its results bucket (boto3 S3, in a thread)."""

    def __init__(self, s3: Any, *, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    async def latest(self, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
        try:
            items, next_cursor = await asyncio.to_thread(list_windows, self.s3, self.bucket, limit=limit, cursor=cursor)
        except InvalidCursorError as exc:
            raise BadRequest("The cursor is not valid.") from exc
        return list(items), next_cursor
