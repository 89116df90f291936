"""One contract per order-service port, run against the in-memory fake and the real adapter alike:
storage on moto and dynalite, the catalog against the real product app, payments against the real
payment app (both over HTTP through `AsyncServiceClient`, on an in-process ASGI transport). A fake
that passes these can stand in for the real thing in the fast tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cloudshop.auth import InternalTokens
from cloudshop.clients import AsyncServiceClient
from cloudshop.dynamodb import dynamodb_for
from cloudshop.errors import BadRequest, Conflict, NotFound, OutOfStock, ValidationFailed
from cloudshop.settings import Settings
from eks_services.order.clients import HttpCatalog, HttpPayments
from eks_services.order.model import CartLine, ChargeStatus, Line, Order, OrderStatus, ReservationLine
from eks_services.order.ports import Carts, Catalog, CheckoutReader, Orders, Payments
from eks_services.order.repository import (
    DynamoDBCartRepository,
    DynamoDBCheckoutReader,
    DynamoDBOrderRepository,
    OrderExists,
    StaleOrder,
)
from eks_services.order.service import order_event
from tests.services.order_fakes import (
    InMemoryCarts,
    InMemoryCatalog,
    InMemoryCheckoutReader,
    InMemoryOrders,
    InMemoryPayments,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Storage:
    orders: Orders
    carts: Carts
    reader: CheckoutReader


@pytest.fixture(params=["memory", "moto", "dynalite"])
async def storage(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> AsyncIterator[Storage]:
    if request.param == "memory":
        orders, carts = InMemoryOrders(), InMemoryCarts()
        yield Storage(orders, carts, InMemoryCheckoutReader(orders, carts))
        return
    settings = make_settings(dynamodb=request.param)
    db = dynamodb_for(settings)
    real_orders = DynamoDBOrderRepository(db, table=settings.orders_table)
    real_carts = DynamoDBCartRepository(db, table=settings.carts_table, ttl_seconds=3600)
    yield Storage(real_orders, real_carts, DynamoDBCheckoutReader(real_orders, real_carts))
    await db.aclose()


def new_order(*, user_id: str | None = None, created_at: datetime | None = None) -> Order:
    now = created_at or datetime.now(UTC)
    return Order(
        id=f"ord_{uuid.uuid4().hex}",
        user_id=user_id or f"u-{uuid.uuid4().hex[:8]}",
        status=OrderStatus.PENDING_PAYMENT,
        lines=(Line("p1", "Mug", 2, 50000, "INR"),),
        currency="INR",
        shipping_address={"name": "Asha", "country": "IN"},
        payment_method="pm_card_ok",
        request_hash="h",
        created_at=now,
        updated_at=now,
        customer_email="a@example.com",
    )


# --- Orders ------------------------------------------------------------------------------------------
async def test_an_order_is_created_once_and_read_back_whole(storage: Storage) -> None:
    order = new_order()
    await storage.orders.create(order, order_event(order))
    with pytest.raises(OrderExists):
        await storage.orders.create(order, order_event(order))
    assert await storage.orders.get(order.id) == order
    assert await storage.orders.get("ord_missing") is None


async def test_a_change_is_saved_only_over_the_version_it_was_made_from(storage: Storage) -> None:
    order = new_order()
    await storage.orders.create(order, order_event(order))
    paid = order.move_to(OrderStatus.PAID, payment_id="pay_1")
    await storage.orders.save(paid, order_event(paid))
    with pytest.raises(StaleOrder):
        await storage.orders.save(order.move_to(OrderStatus.PAYMENT_FAILED, failure_reason="x"), None)
    marked = paid.requesting_cancel()
    await storage.orders.save(marked, None)
    assert await storage.orders.get(order.id) == marked


async def test_the_outbox_holds_each_event_until_it_is_marked_sent(storage: Storage) -> None:
    order = new_order()
    await storage.orders.create(order, order_event(order))
    paid = order.move_to(OrderStatus.PAID, payment_id="pay_1")
    await storage.orders.save(paid, order_event(paid))
    await storage.orders.save(paid.requesting_cancel(), None)  # a change without an event adds none

    mine = [e for e in await storage.orders.pending_events(limit=1000) if e.order_id == order.id]
    assert [e.payload.count('"order.') for e in mine] == [1, 1]
    assert mine[0].event_id in mine[0].payload and '"order.created"' in mine[0].payload

    await storage.orders.mark_sent(order.id, [mine[0].event_id])
    left = [e for e in await storage.orders.pending_events(limit=1000) if e.order_id == order.id]
    assert [e.event_id for e in left] == [mine[1].event_id]
    await storage.orders.mark_sent(order.id, [mine[1].event_id])
    assert not [e for e in await storage.orders.pending_events(limit=1000) if e.order_id == order.id]


async def test_history_pages_newest_first_and_refuses_foreign_cursors(storage: Storage) -> None:
    user, stranger = f"u-{uuid.uuid4().hex[:8]}", f"u-{uuid.uuid4().hex[:8]}"
    start = datetime.now(UTC)
    made = [new_order(user_id=user, created_at=start + timedelta(seconds=n)) for n in range(5)]
    for order in made:
        await storage.orders.create(order, order_event(order))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await storage.orders.by_user(user, limit=2, cursor=cursor)
        seen += [o.id for o in page]
        if cursor is None:
            break
        foreign = cursor
    assert seen == [o.id for o in reversed(made)]
    with pytest.raises(BadRequest):
        await storage.orders.by_user(stranger, limit=2, cursor=foreign)
    with pytest.raises(BadRequest):
        await storage.orders.by_user(user, limit=2, cursor="nonsense")


async def test_orders_awaiting_payment_are_found_until_they_settle(storage: Storage) -> None:
    old = new_order(created_at=datetime.now(UTC) - timedelta(minutes=10))
    await storage.orders.create(old, order_event(old))
    cutoff = datetime.now(UTC) - timedelta(minutes=5)
    assert old.id in [o.id for o in await storage.orders.awaiting_payment(created_before=cutoff, limit=1000)]
    paid = old.move_to(OrderStatus.PAID, payment_id="pay_1")
    await storage.orders.save(paid, order_event(paid))
    assert old.id not in [o.id for o in await storage.orders.awaiting_payment(created_before=cutoff, limit=1000)]


# --- Carts and the checkout read ------------------------------------------------------------------------
def line(product_id: str, quantity: int = 1) -> CartLine:
    return CartLine(product_id, f"Product {product_id}", quantity, 1000, "INR")


async def test_a_cart_keeps_lines_by_product_up_to_its_limit(storage: Storage) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    assert (await storage.carts.get(user)).empty
    await storage.carts.set_line(user, line("b"), max_lines=2)
    await storage.carts.set_line(user, line("a", 3), max_lines=2)
    await storage.carts.set_line(user, line("a", 4), max_lines=2)
    with pytest.raises(Conflict):
        await storage.carts.set_line(user, line("c"), max_lines=2)
    cart = await storage.carts.get(user)
    assert [(x.product_id, x.quantity) for x in cart.lines] == [("a", 4), ("b", 1)] and cart.total == 5000
    await storage.carts.remove_line(user, "a")
    await storage.carts.remove_line(user, "never-there")
    assert [x.product_id for x in (await storage.carts.get(user)).lines] == ["b"]
    await storage.carts.clear(user)
    assert (await storage.carts.get(user)).empty


async def test_the_checkout_read_returns_the_order_and_the_cart_together(storage: Storage) -> None:
    order = new_order()
    await storage.carts.set_line(order.user_id, line("a", 2), max_lines=50)
    missing, cart = await storage.reader.order_and_cart(order.id, order.user_id)
    assert missing is None and [(x.product_id, x.quantity) for x in cart.lines] == [("a", 2)]
    await storage.orders.create(order, order_event(order))
    found, _ = await storage.reader.order_and_cart(order.id, order.user_id)
    assert found == order
    nobody_order, empty = await storage.reader.order_and_cart("ord_none", "u-none")
    assert nobody_order is None and empty.empty


# --- Catalog and Payments: fakes against the real services over HTTP ------------------------------------
def http_client(app: Any, *, name: str, internal_secret: str) -> AsyncServiceClient:
    return AsyncServiceClient(
        name=name,
        base_url="http://service",
        tokens=InternalTokens(internal_secret, service="order"),
        timeout_seconds=10,
        retries=0,
        transport=httpx.ASGITransport(app=app),
    )


@pytest.fixture(params=["memory", "http"])
async def catalog(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], internal_secret: str, tmp_path: Any
) -> AsyncIterator[tuple[Catalog, dict[str, str]]]:
    """A catalog with a mug (10 in stock) and tea (2 in stock): (port, product ids)."""
    if request.param == "memory":
        fake = InMemoryCatalog({"mug": ("Mug", 50000, 10), "tea": ("Tea", 25000, 2)})
        yield fake, {"mug": "mug", "tea": "tea"}
        return
    from functions.product.bootstrap import build_app, build_catalog, migrate_schema

    settings = make_settings(database_url=f"sqlite:///{tmp_path}/catalog.db")
    service = build_catalog(settings)
    migrate_schema(service.products.engine)
    ids = {}
    for key, name, price, stock in (("mug", "Mug", 50000, 10), ("tea", "Tea", 25000, 2)):
        product = service.create(
            name=name, description="", category="home", price_amount=price, currency="INR", stock=stock
        )
        ids[key] = product.id
    client = http_client(build_app(settings), name="product", internal_secret=internal_secret)
    yield HttpCatalog(client), ids
    await client.aclose()


async def test_the_catalog_prices_and_reserves_all_lines_or_none(catalog: tuple[Catalog, dict[str, str]]) -> None:
    port, ids = catalog
    product = await port.product(ids["mug"])
    assert (product.name, product.unit_price, product.currency) == ("Mug", 50000, "INR")
    with pytest.raises(NotFound):
        await port.product("no-such-product")

    with pytest.raises(OutOfStock) as short:
        await port.reserve("ord_short", [ReservationLine(ids["mug"], 1), ReservationLine(ids["tea"], 3)])
    assert short.value.extra["products"] == [ids["tea"]] and short.value.status == 409

    lines = [ReservationLine(ids["mug"], 2), ReservationLine(ids["tea"], 2)]
    reserved = await port.reserve("ord_1", lines)
    assert {(x.product_id, x.quantity, x.unit_price) for x in reserved} == {
        (ids["mug"], 2, 50000),
        (ids["tea"], 2, 25000),
    }
    assert await port.reserve("ord_1", lines) == reserved, "a repeat answers the first reservation"
    with pytest.raises(Conflict) as other:
        await port.reserve("ord_1", [ReservationLine(ids["mug"], 1)])
    assert not isinstance(other.value, OutOfStock)
    with pytest.raises(OutOfStock):
        await port.reserve("ord_2", [ReservationLine(ids["tea"], 1)])

    await port.release("ord_1")
    await port.release("ord_1")
    await port.reserve("ord_3", [ReservationLine(ids["tea"], 2)])
    await port.commit("ord_3")
    await port.commit("ord_3")


@pytest.fixture(params=["memory", "http"])
async def payments(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], internal_secret: str
) -> AsyncIterator[Payments]:
    if request.param == "memory":
        yield InMemoryPayments()
        return
    from eks_services.payment.bootstrap import build_app

    settings = make_settings(outbox_relay_enabled=False)
    client = http_client(build_app(settings), name="payment", internal_secret=internal_secret)
    yield HttpPayments(client)
    await client.aclose()


async def test_payments_charge_once_per_order_and_refund_once_per_key(payments: Payments) -> None:
    await payments.verify("pm_card_ok")
    with pytest.raises(ValidationFailed):
        await payments.verify("pm_card_unknown")

    order_id, user = f"ord_{uuid.uuid4().hex}", f"u-{uuid.uuid4().hex[:8]}"
    charge = await payments.charge(
        order_id=order_id, user_id=user, amount=5000, currency="INR", payment_method="pm_card_ok"
    )
    assert (
        charge.captured and charge.status == ChargeStatus.CAPTURED and (charge.amount, charge.currency) == (5000, "INR")
    )
    again = await payments.charge(
        order_id=order_id, user_id=user, amount=5000, currency="INR", payment_method="pm_card_ok"
    )
    assert again.payment_id == charge.payment_id
    with pytest.raises(Conflict):
        await payments.charge(order_id=order_id, user_id=user, amount=6000, currency="INR", payment_method="pm_card_ok")

    declined = await payments.charge(
        order_id=f"ord_{uuid.uuid4().hex}", user_id=user, amount=5000, currency="INR", payment_method="pm_card_declined"
    )
    assert not declined.captured and declined.status == ChargeStatus.DECLINED and declined.reason

    refund = await payments.refund(charge.payment_id, amount=None, idempotency_key=f"cancel-{order_id}")
    assert (refund.amount, refund.currency) == (5000, "INR")
    replay = await payments.refund(charge.payment_id, amount=None, idempotency_key=f"cancel-{order_id}")
    assert replay.refund_id == refund.refund_id
