"""Cart and checkout use cases (DESIGN.md §6).

Checkout: reserve stock for the whole cart (priced by the catalog), write the order and its event in
one transaction, charge, then PAID (stock committed, cart cleared, invoice queued) or PAYMENT_FAILED
(stock released). The order id comes from (user, Idempotency-Key), so a retry or a concurrent twin
finds the same order and joins it instead of buying twice.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudshop.auth import Principal
from cloudshop.errors import (
    CloudshopError,
    Conflict,
    DependencyUnavailable,
    IdempotencyKeyReused,
    NotFound,
    OutOfStock,
    ValidationFailed,
)
from cloudshop.events import Money, OrderEventDataV1, OrderEventV1, OrderLineV1
from eks_services.order.invoice import InvoiceWriter
from eks_services.order.model import (
    CART_LINES_MAX,
    EVENT_FOR_STATUS,
    Order,
    OrderStatus,
    check_idempotency_key,
    check_quantity,
    order_id_for,
    price_lines,
    request_hash,
)
from eks_services.order.ports import Catalog, Payments
from eks_services.order.repository import (
    DynamoDBCartRepository,
    DynamoDBOrderRepository,
    OrderExists,
    StaleOrder,
)

log = logging.getLogger("cloudshop.order")


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


class CartService:
    def __init__(self, *, carts: DynamoDBCartRepository, catalog: Catalog) -> None:
        self.carts = carts
        self.catalog = catalog

    def view(self, user_id: str) -> dict[str, Any]:
        lines = self.carts.get(user_id)
        items = [
            {
                "product_id": pid,
                "name": line["name"],
                "quantity": line["quantity"],
                "unit_price": {"amount": line["unit_price"], "currency": line["currency"]},
                "line_total": {"amount": line["unit_price"] * line["quantity"], "currency": line["currency"]},
            }
            for pid, line in sorted(lines.items())
        ]
        currency = items[0]["unit_price"]["currency"] if items else None
        total = sum(i["line_total"]["amount"] for i in items)
        return {
            "items": items,
            "total": {"amount": total, "currency": currency} if currency else None,
            "next_cursor": None,
        }

    def set_quantity(self, user_id: str, product_id: str, quantity: int) -> dict[str, Any]:
        check_quantity(quantity)
        try:
            product = self.catalog.product(product_id)
        except NotFound as exc:
            raise ValidationFailed(f"Unknown product {product_id}.", extra={"products": [product_id]}) from exc
        self.carts.set_line(
            user_id,
            product_id,
            {
                "quantity": quantity,
                "name": product["name"],
                "unit_price": product["price"]["amount"],
                "currency": product["price"]["currency"],
            },
            max_lines=CART_LINES_MAX,
        )
        return self.view(user_id)

    def remove(self, user_id: str, product_id: str) -> dict[str, Any]:
        self.carts.remove_line(user_id, product_id)
        return self.view(user_id)


class CheckoutService:
    settle_wait_seconds = 20.0

    def __init__(
        self,
        *,
        orders: DynamoDBOrderRepository,
        carts: DynamoDBCartRepository,
        catalog: Catalog,
        payments: Payments,
        invoices: InvoiceWriter,
        on_event: Any = None,
    ) -> None:
        self.orders = orders
        self.carts = carts
        self.catalog = catalog
        self.payments = payments
        self.invoices = invoices
        # Wakes the outbox relay as soon as an event is written, instead of at its next poll.
        self.on_event = on_event or (lambda: None)
        self._background = ThreadPoolExecutor(max_workers=2, thread_name_prefix="invoice")

    # --- checkout ---------------------------------------------------------------------------------
    def checkout(self, principal: Principal, *, idempotency_key: str | None, body: dict[str, Any]) -> Order:
        key = check_idempotency_key(idempotency_key)
        fingerprint = request_hash(body)
        order_id = order_id_for(principal.user_id, key)
        existing = self.orders.get(order_id)
        if existing is not None:
            return self._join(existing, fingerprint)

        cart = self.carts.get(principal.user_id)
        if not cart:
            # A twin request with this key may have finished (and emptied the cart) since we looked.
            return self._join_twin(order_id, fingerprint, ValidationFailed("The cart is empty."))
        payment_method = str(body["payment_method"])
        self.payments.verify(payment_method)
        try:
            reserved = self.catalog.reserve(
                order_id, [{"product_id": pid, "quantity": line["quantity"]} for pid, line in sorted(cart.items())]
            )
        except OutOfStock:
            raise
        except Conflict as exc:
            # The order id already holds a reservation for other lines: a twin reserved the cart as
            # it was a moment earlier. Its order is the answer.
            return self._join_twin(order_id, fingerprint, exc)
        lines, currency = price_lines(reserved)
        now = datetime.now(UTC)
        order = Order(
            id=order_id,
            user_id=principal.user_id,
            status=OrderStatus.PENDING_PAYMENT,
            lines=lines,
            currency=currency,
            shipping_address=body["shipping_address"],
            payment_method=payment_method,
            request_hash=fingerprint,
            created_at=now,
            updated_at=now,
            customer_email=principal.email,
        )
        try:
            self.orders.create(order, order_event(order))
        except OrderExists:
            # A concurrent twin with the same key got there first; the reservation was the same
            # (idempotent by order id), so there is nothing to undo: join its outcome.
            return self._join(self.orders.require(order_id), fingerprint)
        self.on_event()
        return self._settle(order)

    def _join_twin(self, order_id: str, fingerprint: str, otherwise: CloudshopError) -> Order:
        existing = self.orders.get(order_id)
        if existing is None:
            raise otherwise
        return self._join(existing, fingerprint)

    def _join(self, order: Order, fingerprint: str) -> Order:
        if order.request_hash != fingerprint:
            raise IdempotencyKeyReused("This Idempotency-Key was used for a different checkout.")
        if order.status == OrderStatus.PAYMENT_FAILED:
            # Releasing is idempotent; repeating it here heals a first attempt that could not reach
            # the catalog after the payment failed.
            self.catalog.release(order.id)
        if order.settled:
            return order
        # Still pending: the first request may be mid-payment, or may have died. Settling again is
        # safe (the charge is idempotent per order, transitions are conditional), and it is what
        # completes a checkout whose first attempt lost its payment service.
        return self._settle(order)

    def _settle(self, order: Order) -> Order:
        try:
            payment = self.payments.charge(
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
            return self._wait_settled(order.id)
        if payment.get("status") in ("CAPTURED",):
            return self._transition(order, OrderStatus.PAID, payment_id=payment["id"], after=self._paid)
        if payment.get("status") == "PENDING":
            return self._wait_settled(order.id)
        reason = payment.get("decline_code") or payment.get("failure_reason") or "payment failed"
        return self._transition(
            order,
            OrderStatus.PAYMENT_FAILED,
            payment_id=payment.get("id"),
            failure_reason=str(reason),
            after=self._failed,
        )

    def _transition(self, order: Order, status: OrderStatus, *, after: Any = None, **changes: Any) -> Order:
        """Apply a transition; if another writer moved the order first, answer its outcome."""
        moved = order.move_to(status, **changes)
        try:
            self.orders.save(moved, order_event(moved))
        except StaleOrder:
            current = self.orders.require(order.id)
            if current.status == status:
                return current
            raise
        self.on_event()
        if after:
            after(moved)
        return moved

    def _paid(self, order: Order) -> None:
        # The order is paid whatever happens next: these follow-ups must not turn it into an error.
        # (An uncommitted reservation is still released correctly by a cancel.)
        for step in (lambda: self.catalog.commit(order.id), lambda: self.carts.clear(order.user_id)):
            try:
                step()
            except Exception:
                log.exception("post-payment step failed", extra={"fields": {"order_id": order.id}})
        self._background.submit(self._write_invoice, order)

    def _failed(self, order: Order) -> None:
        self.catalog.release(order.id)

    def _write_invoice(self, order: Order) -> None:
        try:
            self.invoices.write(order)
        except Exception:  # the invoice is re-made on demand by GET /invoice; never lose the order for it
            log.exception("invoice write failed", extra={"fields": {"order_id": order.id}})

    def _wait_settled(self, order_id: str) -> Order:
        deadline = time.monotonic() + self.settle_wait_seconds
        while time.monotonic() < deadline:
            order = self.orders.require(order_id)
            if order.settled:
                return order
            time.sleep(0.05)
        raise DependencyUnavailable("The payment is still being processed; retry with the same Idempotency-Key.")

    def settle_abandoned(self, *, older_than_seconds: float) -> int:
        """Settle orders stuck in PENDING_PAYMENT (their checkout lost a dependency and was never
        retried): the charge is idempotent per order, so this charges at most once and releases the
        stock of a failed payment. Returns how many were settled; the rest wait for the next round."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        settled = 0
        for order in self.orders.awaiting_payment(created_before=cutoff):
            try:
                self._settle(order)
                settled += 1
            except CloudshopError as exc:
                log.warning(
                    "abandoned order not settled yet", extra={"fields": {"order_id": order.id, "error": exc.detail}}
                )
        return settled

    # --- after checkout ---------------------------------------------------------------------------
    def get(self, principal: Principal, order_id: str) -> Order:
        order = self.orders.get(order_id)
        if order is None:
            raise NotFound("No such order.")
        principal.require_owner(order.user_id)
        return order

    def cancel(self, principal: Principal, order_id: str) -> Order:
        order = self.get(principal, order_id)
        if order.status == OrderStatus.CANCELLED:
            return order
        order.move_to(OrderStatus.CANCELLED)  # refuse illegal moves before touching money or stock
        if order.payment_id:
            self.payments.refund(order.payment_id, amount=None, idempotency_key=f"cancel-{order.id}")
        self.catalog.release(order.id)
        return self._transition(order, OrderStatus.CANCELLED)

    def fulfil(self, principal: Principal, order_id: str) -> Order:
        principal.require_admin()
        return self._transition(self.orders.require(order_id), OrderStatus.FULFILLED)

    def payment_refunded(self, order_id: str) -> Order:
        order = self.orders.require(order_id)
        if order.status == OrderStatus.REFUNDED:
            return order
        return self._transition(order, OrderStatus.REFUNDED)

    def invoice_url(self, principal: Principal, order_id: str) -> dict[str, Any]:
        order = self.get(principal, order_id)
        if (
            order.status not in (OrderStatus.PAID, OrderStatus.FULFILLED, OrderStatus.REFUNDED, OrderStatus.CANCELLED)
            or not order.payment_id
        ):
            raise Conflict("An invoice exists once the order is paid.")
        # Written off the request path after payment; made here if that has not happened (yet).
        key = self.invoices.key(order) if self.invoices.exists(order) else self.invoices.write(order)
        return {"url": self.invoices.url(key), "expires_in": self.invoices.url_ttl_seconds}
