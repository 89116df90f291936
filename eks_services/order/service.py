"""Cart and checkout use cases (DESIGN.md §6), async end to end.

Checkout: read the order this key would make and the cart together, refuse a total above the
payment limit, claim the cart at the version read (one cart version is bought once, whatever the
keys), reserve stock for the whole cart (priced by the catalog), write the order and its event in
one conditional write, charge, then PAID (the bought lines leave the cart; reservation committed and
invoice written off the request path), PAYMENT_FAILED (stock released), or, when the provider's
answer is lost, still PENDING_PAYMENT with the stock held until a repeat or the sweeper learns the
outcome. The order id comes from (user, Idempotency-Key), so a retry or a concurrent twin finds the
same order and joins it instead of buying twice.

Storage, the catalog, payments and invoices are injected ports; nothing here knows HTTP or DynamoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

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
    RESERVATIONS_PER_COMMIT_MAX,
    STOCK_RETURNED,
    Cart,
    CartInCheckout,
    CartLine,
    ChargeStatus,
    Order,
    OrderStatus,
    PaymentBeingRefunded,
    PaymentRefunded,
    check_idempotency_key,
    check_quantity,
    check_total,
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
CLAIM_ATTEMPTS = 3
# A cart claim whose order was never written is taken over after this long: far longer than the
# reserve call and the order write between claim and order can take (10 s service and 4 s DynamoDB
# budgets), so only a checkout that died leaves one this old.
CLAIM_STALE_SECONDS = 60.0
# The sweeper: orders (or reservations) per round, worked on this many at a time, each within a
# time bound (a charge normally answers in well under a second; a hung one must not hold a round).
SWEEP_PAGE = 50
SWEEP_CONCURRENCY = 8
SWEEP_ORDER_SECONDS = 5.0
# Paid orders' reservations are committed together after this long (they expire only after the
# reservation TTL, 15 minutes by default), up to the product service's bound per call.
COMMIT_WINDOW_SECONDS = 0.5
CHARGE_REFUSED = "charge_refused"

T = TypeVar("T")


class PaymentOutcomeUnknown(DependencyUnavailable):
    title, slug = "Payment outcome unknown", "payment-outcome-unknown"


class PaymentPending(Conflict):
    """Another request is charging the order right now (the sweeper leaves it to that request)."""


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


class ReservationCommits:
    """The reservations of paid orders, committed together: the first id to arrive opens a window of
    `window_seconds`, and everything that arrived by its end (or `max_batch` ids, at once) goes to
    the catalog in one call. In production each catalog call is a product-function invocation.

    One sender at a time: ids that arrive while a call is out wait for the next window, so a slow
    product service gets fewer, larger calls, never more of them. Losing a batch loses nothing: a
    reservation left uncommitted expires, and the sweeper, finding its order paid, commits it
    (`release_expired_reservations`). The window only delays that."""

    def __init__(
        self,
        catalog: Catalog,
        background: BackgroundWork,
        *,
        window_seconds: float = COMMIT_WINDOW_SECONDS,
        max_batch: int = RESERVATIONS_PER_COMMIT_MAX,
    ) -> None:
        self.catalog = catalog
        self.background = background
        self.window_seconds = window_seconds
        self.max_batch = max_batch
        self._waiting: list[str] = []
        self._batch_full = asyncio.Event()
        self._sending = False

    def add(self, order_id: str) -> None:
        self._waiting.append(order_id)
        if len(self._waiting) >= self.max_batch:
            self._batch_full.set()
        if not self._sending:
            self._sending = True
            self.background.spawn("reservation-commits", self._send())

    async def _send(self) -> None:
        try:
            while self._waiting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._batch_full.wait(), self.window_seconds)
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                if len(self._waiting) < self.max_batch:
                    self._batch_full.clear()
                try:
                    await self.catalog.commit(batch)
                except Exception:  # an uncommitted reservation of a paid order is committed by the sweeper
                    log.exception("reservation commit failed", extra={"fields": {"orders": len(batch)}})
        finally:
            self._sending = False


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
            rev=uuid.uuid4().hex,
        )
        return await self.carts.set_line(user_id, line, max_lines=CART_LINES_MAX)

    async def remove(self, user_id: str, product_id: str) -> Cart:
        return await self.carts.remove_line(user_id, product_id)

    async def clear(self, user_id: str) -> None:
        await self.carts.clear(user_id)


@dataclass
class SweepRound:
    """What one sweeper round did with the orders (or reservations) it looked at."""

    settled: int = 0  # finished: paid, failed, cancelled (reservations: committed or released)
    waiting: int = 0  # a payment still in progress, or its outcome still unknown: next round
    failed: int = 0  # raised or outran its time: skipped, counted, tried again next round

    def add(self, outcome: str) -> None:
        setattr(self, outcome, getattr(self, outcome) + 1)


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
        sweep_order_seconds: float = SWEEP_ORDER_SECONDS,
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
        self.sweep_order_seconds = sweep_order_seconds
        self._sleep = sleep
        self.background = BackgroundWork()
        self.reservation_commits = ReservationCommits(catalog, self.background)
        # Where the sweeper's next round starts: each round takes the next page, so orders that
        # fail every time (or hang) cannot keep the ones behind them from being reached.
        self._unfinished_cursor: str | None = None
        self._reservations_after: str | None = None

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
        # Before anything is claimed or reserved: the cart's prices are a snapshot, so the total is
        # checked again once the catalog has priced the reservation.
        check_total(cart.total, cart.currency or "")
        await self.payments.verify(payment_method)
        claimed = await self._claim_cart(cart, order_id=order_id, fingerprint=fingerprint)
        if isinstance(claimed, Order):
            return claimed
        cart = claimed
        try:
            lines = await self.catalog.reserve(order_id, cart.reservation())
        except OutOfStock:
            await self._release_claim(principal.user_id, order_id)
            raise
        except Conflict as exc:
            # The order id already holds a reservation for other lines: a twin reserved the cart as
            # it was a moment earlier. Its order is the answer.
            return await self._join_twin(order_id, fingerprint, exc)
        except ValidationFailed:
            await self._release_claim(principal.user_id, order_id)
            raise
        try:
            currency = single_currency(lines)
            check_total(sum(line.total for line in lines), currency)
        except ValidationFailed:
            # Reserved, and no order will ever be written for it: give the stock back now.
            await self._release_quietly(order_id)
            await self._release_claim(principal.user_id, order_id)
            raise
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
            cart_version=cart.version,
            cart_lines=cart.checked_out_lines(),
        )
        try:
            await self.orders.create(order, order_event(order))
        except OrderExists:
            # A concurrent twin with the same key got there first; the reservation was the same
            # (idempotent by order id), so there is nothing to undo: join its outcome.
            return await self._join(await self._require(order_id), fingerprint)
        # Any other failure leaves the stock reserved and no order: a retry with the same key
        # carries on from here, and if none comes the reservation expires and the sweeper, finding
        # no order for it, releases it.
        # The relay is not woken for `order.created`: it holds that event until the charge's
        # outcome joins it (one publish, one `mark_sent`; see relay.py), and the settling write
        # wakes it. An order that does not settle now is found by the relay's next poll.
        return await self._settle(order)

    async def _claim_cart(self, cart: Cart, *, order_id: str, fingerprint: str) -> Cart | Order:
        """Hold the cart for this checkout at the version read, so one cart version is bought once:
        another checkout of it (another key) gets `CartInCheckout` until this one has failed. Returns
        the cart as claimed, or the order to answer with when a twin with this key got further."""
        for _ in range(CLAIM_ATTEMPTS):
            replacing = None
            if cart.claim is not None and cart.claim.order_id != order_id:
                replacing = await self._dead_claim(cart)
            if await self.carts.claim(
                cart.user_id, order_id=order_id, version=cart.version, now=datetime.now(UTC), replacing=replacing
            ):
                return cart
            # Changed since we read it, or another checkout claimed it first: look again.
            existing, cart = await self.reader.order_and_cart(order_id, cart.user_id)
            if existing is not None:
                return await self._join(existing, fingerprint)
            if cart.empty:
                raise ValidationFailed("The cart is empty.")
        raise Conflict("The cart is changing; look at it again and check out.")

    async def _dead_claim(self, cart: Cart) -> str:
        """The order id of a claim this checkout may take over (its checkout failed, or died before
        writing its order), or `CartInCheckout` when that claim is alive or its order bought the cart."""
        claim = cart.claim
        assert claim is not None
        holder = await self.orders.get(claim.order_id)
        if holder is None:
            age = (datetime.now(UTC) - claim.claimed_at).total_seconds()
            if age > CLAIM_STALE_SECONDS:
                return claim.order_id
        elif holder.status in STOCK_RETURNED:
            return claim.order_id
        elif holder.status != OrderStatus.PENDING_PAYMENT:
            # Bought, but its lines were never taken out of the cart (that write failed): do it now,
            # so the buyer sees what is left rather than the same cart again.
            await self.carts.checked_out(cart.user_id, order_id=holder.id, lines=holder.cart_lines)
        raise CartInCheckout(
            "This cart is already being checked out, or was just bought; look at the cart and your orders.",
            extra={"order_id": claim.order_id},
        )

    async def _release_claim(self, user_id: str, order_id: str) -> None:
        # Best effort: a claim left behind is taken over once its order is seen failed (or missing).
        try:
            await self.carts.release_claim(user_id, order_id=order_id)
        except Exception:
            log.exception("cart claim release failed", extra={"fields": {"order_id": order_id}})

    async def _release_quietly(self, order_id: str) -> None:
        try:
            await self.catalog.release(order_id)
        except Exception:  # the reservation expires; the sweeper releases it then
            log.exception("reservation release failed", extra={"fields": {"order_id": order_id}})

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

    async def _settle(self, order: Order, *, wait: bool = True) -> Order:
        """Charge (idempotent by order id) and move the order by the outcome. An unknown outcome
        leaves the order PENDING_PAYMENT with its stock: `PaymentOutcomeUnknown` (a 503 that says to
        retry with the same key); the next charge request asks the provider again. With `wait`
        False (the sweeper) a charge another request is making is left to it: `PaymentPending`."""
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
        except ValidationFailed as exc:
            # The payment service will never take this charge (an amount above its limit, a payment
            # method it no longer knows): a failed payment, not an order pending for ever.
            log.warning("charge refused", extra={"fields": {"order_id": order.id, "error": exc.detail}})
            return await self._transition(
                order, OrderStatus.PAYMENT_FAILED, failure_reason=CHARGE_REFUSED, after=self._failed
            )
        except Conflict:
            if not wait:
                raise PaymentPending("Another request is charging this order.") from None
            return await self._wait_settled(order.id)
        if charge.captured:
            return await self._transition(order, OrderStatus.PAID, payment_id=charge.payment_id, after=self._paid)
        if charge.status == ChargeStatus.UNKNOWN:
            raise PaymentOutcomeUnknown(
                "The payment provider has not confirmed the payment's outcome yet; the order stays pending with "
                "its items held. Retry with the same Idempotency-Key.",
                extra={"order_id": order.id},
            )
        if charge.status == ChargeStatus.PENDING:
            if not wait:
                raise PaymentPending("Another request is charging this order.")
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
            await self.orders.save(moved, order_event(moved) if status in EVENT_FOR_STATUS else None)
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
        # Only the cart update stays on the request path (the buyer looks at the cart next); the
        # reservation commit changes nothing the buyer sees (a cancel releases reserved and
        # committed stock alike), so it goes with the invoice, after the answer.
        try:
            await self.carts.checked_out(order.user_id, order_id=order.id, lines=order.cart_lines)
        except Exception:
            # The claim stays with this PAID order; the next checkout of the cart finishes this.
            log.exception("post-payment cart update failed", extra={"fields": {"order_id": order.id}})
        self.reservation_commits.add(order.id)
        self.background.spawn(f"invoice-{order.id}", self._write_invoice(order))

    async def _write_invoice(self, order: Order) -> None:
        try:
            await self.invoices.write(order)
        except Exception:  # the invoice is re-made on demand by GET /invoice; never lose the order for it
            log.exception("invoice write failed", extra={"fields": {"order_id": order.id}})

    async def _failed(self, order: Order) -> None:
        # The stock first: other buyers are waiting for it; the claim only for this buyer's next try.
        await self.catalog.release(order.id)
        await self._release_claim(order.user_id, order.id)

    async def _wait_settled(self, order_id: str) -> Order:
        deadline = asyncio.get_running_loop().time() + self.settle_wait_seconds
        while asyncio.get_running_loop().time() < deadline:
            order = await self._require(order_id)
            if order.settled:
                return order
            await self._sleep(POLL_SECONDS)
        raise DependencyUnavailable("The payment is still being processed; retry with the same Idempotency-Key.")

    # --- the sweeper's use cases --------------------------------------------------------------------
    async def settle_abandoned(self, *, older_than_seconds: float) -> SweepRound:
        """One sweeper round over the next page of unfinished orders: charge the checkouts nobody
        finished (at most once: the charge is idempotent per order; a failed payment releases its
        stock) and finish the cancels whose process died after the claim.

        Every order gets at most `sweep_order_seconds`; one that raises or outruns it is counted and
        skipped, and the next round starts on the next page, so no set of poison orders can keep the
        others waiting."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than_seconds)
        orders, self._unfinished_cursor = await self.orders.unfinished(
            created_before=cutoff, limit=SWEEP_PAGE, cursor=self._unfinished_cursor
        )
        return await self._bounded(orders, lambda order: self._finish(order, cutoff), key=_order_id)

    async def _finish(self, order: Order, cutoff: datetime) -> str:
        if order.status == OrderStatus.PENDING_PAYMENT:
            try:
                await self._settle(order, wait=False)
            except (PaymentPending, PaymentOutcomeUnknown):
                return "waiting"
            return "settled"
        if order.status == OrderStatus.CANCELLING and order.updated_at < cutoff:
            await self._finish_cancel(order)
            return "settled"
        return "waiting"

    async def release_expired_reservations(self) -> SweepRound:
        """Resolve the catalog's expired reservations by their orders: an order that exists holds its
        stock (committed, so it no longer expires); no order (its write failed, or its checkout died
        after reserving) or a failed or cancelled one gives the stock back."""
        order_ids = await self.catalog.expired_reservations(limit=SWEEP_PAGE, after=self._reservations_after)
        self._reservations_after = order_ids[-1] if len(order_ids) == SWEEP_PAGE else None
        return await self._bounded(order_ids, self._resolve_reservation, key=str)

    async def _resolve_reservation(self, order_id: str) -> str:
        order = await self.orders.get(order_id)
        if order is None or order.status in STOCK_RETURNED:
            await self.catalog.release(order_id)
        else:
            await self.catalog.commit([order_id])
        return "settled"

    async def _bounded(
        self, items: Sequence[T], work: Callable[[T], Awaitable[str]], *, key: Callable[[T], str]
    ) -> SweepRound:
        result = SweepRound()
        gate = asyncio.Semaphore(SWEEP_CONCURRENCY)

        async def one(item: T) -> None:
            async with gate:
                try:
                    outcome = await asyncio.wait_for(work(item), self.sweep_order_seconds)
                except Exception as exc:  # one bad item must not stop the others
                    result.add("failed")
                    log.warning("sweeper skipped an item", extra={"fields": {"item": key(item), "error": repr(exc)}})
                else:
                    result.add(outcome)

        await asyncio.gather(*(one(item) for item in items))
        return result

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
        """Claim, then act: CANCELLING is written (over the version read) before any money or stock
        moves, so a fulfil racing this cancel finds CANCELLING and is refused, or gets there first
        and this cancel is refused; never both. A cancel that dies after its claim is finished by a
        repeat or by the sweeper."""
        order = await self.get(principal, order_id)
        order = await self._claim_cancel(order)
        if order.status == OrderStatus.CANCELLED:
            return order
        return await self._finish_cancel(order)

    async def _claim_cancel(self, order: Order) -> Order:
        for _ in range(SAVE_ATTEMPTS):
            if order.status in (OrderStatus.CANCELLING, OrderStatus.CANCELLED):
                return order
            claimed = order.move_to(OrderStatus.CANCELLING)  # IllegalTransition unless it can be cancelled
            try:
                await self.orders.save(claimed, None)
            except StaleOrder:
                order = await self._require(order.id)
                continue
            return claimed
        raise Conflict("The order is changing concurrently; retry the cancel.")

    async def _finish_cancel(self, order: Order) -> Order:
        if order.payment_id:
            try:
                await self.payments.refund(order.payment_id, amount=None, idempotency_key=f"cancel-{order.id}")
            except Conflict:
                # Nothing left to refund is fine when the capture is back with the buyer already
                # (an admin refunded it in full first); anything else is tried again later.
                payment = await self.payments.payment(order.payment_id)
                if payment.refunding or payment.refunded < payment.amount:
                    raise
        await self.catalog.release(order.id)
        return await self._transition(order, OrderStatus.CANCELLED)

    async def to_fulfil(
        self, principal: Principal, *, status: OrderStatus, limit: int, cursor: str | None
    ) -> tuple[list[Order], str | None]:
        """Orders in `status` (PAID: those to fulfil), newest first: for an admin only."""
        principal.require_admin()
        return await self.orders.by_status(status, limit=limit, cursor=cursor)

    async def fulfil(self, principal: Principal, order_id: str) -> Order:
        """Refused for an order that is not PAID (a CANCELLING one included: the state machine), and
        for one whose payment is refunded in full or has a full refund under way: the order learns
        of an admin's refund by an event, so the payment itself is asked."""
        principal.require_admin()
        order = await self._require(order_id)
        order.move_to(OrderStatus.FULFILLED)  # refuse an illegal move before asking anyone
        if order.payment_id:
            payment = await self.payments.payment(order.payment_id)
            if payment.refunded_in_full:
                raise PaymentBeingRefunded(
                    "The order's payment is refunded in full (or being refunded); it cannot be fulfilled.",
                    extra={"payment_id": order.payment_id},
                )
        return await self._transition(order, OrderStatus.FULFILLED)

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
            order.status
            not in (
                OrderStatus.PAID,
                OrderStatus.FULFILLED,
                OrderStatus.REFUNDED,
                OrderStatus.CANCELLING,
                OrderStatus.CANCELLED,
            )
            or not order.payment_id
        ):
            raise Conflict("An invoice exists once the order is paid.")
        # Written off the request path after payment; made here if that has not happened (yet).
        key = await self.invoices.ensure(order)
        return await self.invoices.url(key), self.invoices.url_ttl_seconds


def _order_id(order: Order) -> str:
    return order.id


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
