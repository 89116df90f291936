"""One contract per order-service port, run against the in-memory fake and the real adapter alike:
storage on moto and dynalite, the catalog against the real product app, payments against the real
payment app (both over HTTP through `AsyncServiceClient`, on an in-process ASGI transport). A fake
that passes these can stand in for the real thing in the fast tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from cloudshop.auth import InternalTokens
from cloudshop.clients import AsyncServiceClient
from cloudshop.dynamodb import dynamodb_for
from cloudshop.errors import BadRequest, Conflict, NotFound, OutOfStock, ValidationFailed
from cloudshop.money import AMOUNT_MAX
from cloudshop.settings import Settings
from eks_services.order.clients import HttpCatalog, HttpPayments
from eks_services.order.model import CartLine, ChargeStatus, CheckedOutLine, Line, Order, OrderStatus, ReservationLine
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
    cancelling = paid.move_to(OrderStatus.CANCELLING)
    await storage.orders.save(cancelling, None)
    assert await storage.orders.get(order.id) == cancelling


async def test_the_outbox_holds_each_event_until_it_is_marked_sent(storage: Storage) -> None:
    order = new_order()
    await storage.orders.create(order, order_event(order))
    paid = order.move_to(OrderStatus.PAID, payment_id="pay_1")
    await storage.orders.save(paid, order_event(paid))
    await storage.orders.save(paid.move_to(OrderStatus.CANCELLING), None)  # a change without an event adds none

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


async def test_orders_of_a_status_page_newest_first_and_refuse_other_cursors(storage: Storage) -> None:
    start = datetime.now(UTC)
    made = [new_order(created_at=start + timedelta(seconds=n)) for n in range(5)]
    for order in made:
        await storage.orders.create(order, order_event(order))
    paid = [o.move_to(OrderStatus.PAID, payment_id=f"pay_{n}") for n, o in enumerate(made[:4])]
    for order in paid:
        await storage.orders.save(order, None)
    await storage.orders.save(paid[1].move_to(OrderStatus.FULFILLED), None)
    mine = {o.id for o in made}
    seen: list[str] = []
    cursor: str | None = None
    foreign: str | None = None
    while True:
        page, cursor = await storage.orders.by_status(OrderStatus.PAID, limit=2, cursor=cursor)
        assert all(o.status == OrderStatus.PAID for o in page)
        seen += [o.id for o in page if o.id in mine]
        if cursor is None:
            break
        foreign = cursor
    assert seen == [paid[3].id, paid[2].id, paid[0].id]
    assert foreign is not None
    with pytest.raises(BadRequest):
        await storage.orders.by_status(OrderStatus.FULFILLED, limit=2, cursor=foreign)
    with pytest.raises(BadRequest):
        await storage.orders.by_status(OrderStatus.PAID, limit=2, cursor="nonsense")
    fulfilled, _ = await storage.orders.by_status(OrderStatus.FULFILLED, limit=100, cursor=None)
    assert paid[1].id in {o.id for o in fulfilled}


async def test_unfinished_orders_are_found_until_they_settle(storage: Storage) -> None:
    old = new_order(created_at=datetime.now(UTC) - timedelta(minutes=10))
    await storage.orders.create(old, order_event(old))
    cutoff = datetime.now(UTC) - timedelta(minutes=5)

    assert old.id in await unfinished_ids(storage, cutoff)
    paid = old.move_to(OrderStatus.PAID, payment_id="pay_1")
    await storage.orders.save(paid, order_event(paid))
    assert old.id not in await unfinished_ids(storage, cutoff)
    cancelling = paid.move_to(OrderStatus.CANCELLING)
    await storage.orders.save(cancelling, None)
    assert old.id in await unfinished_ids(storage, cutoff), "a cancel that has claimed the order is unfinished"
    cancelled = cancelling.move_to(OrderStatus.CANCELLED)
    await storage.orders.save(cancelled, order_event(cancelled))
    assert old.id not in await unfinished_ids(storage, cutoff)


async def unfinished_ids(storage: Storage, cutoff: datetime, *, limit: int = 1000) -> list[str]:
    """Every unfinished order's id, page by page."""
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page, cursor = await storage.orders.unfinished(created_before=cutoff, limit=limit, cursor=cursor)
        seen += [o.id for o in page]
        if cursor is None:
            return seen


async def test_unfinished_orders_page_oldest_first_without_repeats(storage: Storage) -> None:
    start = datetime.now(UTC) - timedelta(days=3650)  # older than any other order in the table
    made = [new_order(created_at=start + timedelta(seconds=n)) for n in range(5)]
    for order in made:
        await storage.orders.create(order, order_event(order))
    cutoff = start + timedelta(seconds=5)

    first, cursor = await storage.orders.unfinished(created_before=cutoff, limit=2)
    second, cursor = await storage.orders.unfinished(created_before=cutoff, limit=2, cursor=cursor)
    rest, _ = await storage.orders.unfinished(created_before=cutoff, limit=2, cursor=cursor)

    assert [o.id for o in [*first, *second, *rest]] == [o.id for o in made]


async def test_an_order_keeps_the_cart_version_and_lines_it_bought(storage: Storage) -> None:
    bought = (CheckedOutLine("p1", 2, "rev-1"), CheckedOutLine("p2", 1, ""))
    order = replace(new_order(), cart_version=7, cart_lines=bought)
    await storage.orders.create(order, order_event(order))
    assert await storage.orders.get(order.id) == order


# --- Carts and the checkout read ------------------------------------------------------------------------
def line(product_id: str, quantity: int = 1) -> CartLine:
    return CartLine(product_id, f"Product {product_id}", quantity, 1000, "INR", rev=f"{product_id}-{quantity}")


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
    await storage.carts.set_line(user, line("d"), max_lines=2)
    assert [x.product_id for x in (await storage.carts.get(user)).lines] == ["d"], "a cleared cart fills again"


async def test_every_change_of_the_lines_makes_a_new_cart_version(storage: Storage) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    versions = [(await storage.carts.get(user)).version]
    for change in (
        storage.carts.set_line(user, line("a"), max_lines=5),
        storage.carts.set_line(user, line("a", 2), max_lines=5),
        storage.carts.set_line(user, line("b"), max_lines=5),
        storage.carts.remove_line(user, "b"),
        storage.carts.clear(user),
    ):
        await change
        versions.append((await storage.carts.get(user)).version)
    assert versions == sorted(set(versions)), versions
    await storage.carts.set_line(user, line("a"), max_lines=5)
    cart = await storage.carts.get(user)
    assert cart.lines[0].rev == line("a").rev and cart.version > versions[-1]


async def test_a_change_of_the_lines_answers_the_cart_it_left(storage: Storage) -> None:
    """What a cart PUT or DELETE shows comes from its own write, not from a read after it."""
    user = f"u-{uuid.uuid4().hex[:8]}"
    now = datetime.now(UTC)
    first = await storage.carts.set_line(user, line("b"), max_lines=5)  # a new cart: its lines are started
    assert first == await storage.carts.get(user) and [x.product_id for x in first.lines] == ["b"]
    assert await storage.carts.claim(user, order_id="ord_x", version=first.version, now=now, replacing=None)

    added = await storage.carts.set_line(user, line("a", 3), max_lines=5)
    assert added == await storage.carts.get(user)
    assert [(x.product_id, x.quantity, x.rev) for x in added.lines] == [("a", 3, "a-3"), ("b", 1, "b-1")]
    assert added.version > first.version and added.claim is not None and added.claim.order_id == "ord_x"

    removed = await storage.carts.remove_line(user, "a")
    assert removed == await storage.carts.get(user) and [x.product_id for x in removed.lines] == ["b"]
    assert await storage.carts.remove_line(user, "never-there") == removed, "nothing removed: the cart as it is"
    await storage.carts.checked_out(user, order_id="ord_x", lines=removed.checked_out_lines())
    again = await storage.carts.set_line(user, line("c"), max_lines=5)  # an emptied cart fills again
    assert again == await storage.carts.get(user) and [x.product_id for x in again.lines] == ["c"]
    assert (await storage.carts.remove_line(f"u-{uuid.uuid4().hex[:8]}", "a")).empty, "no cart at all"


async def test_a_cart_is_claimed_by_one_checkout_at_the_version_it_read(storage: Storage) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await storage.carts.set_line(user, line("a", 2), max_lines=5)
    cart = await storage.carts.get(user)
    now = datetime.now(UTC)

    assert not await storage.carts.claim(user, order_id="ord_x", version=cart.version - 1, now=now, replacing=None)
    assert await storage.carts.claim(user, order_id="ord_x", version=cart.version, now=now, replacing=None)
    assert await storage.carts.claim(user, order_id="ord_x", version=cart.version, now=now, replacing=None), "a repeat"
    assert not await storage.carts.claim(user, order_id="ord_y", version=cart.version, now=now, replacing=None)
    claimed = await storage.carts.get(user)
    assert claimed.claim is not None and (claimed.claim.order_id, claimed.claim.version) == ("ord_x", cart.version)
    assert claimed.version == cart.version and claimed.lines == cart.lines, "a claim is not a change of the lines"

    assert await storage.carts.claim(user, order_id="ord_y", version=cart.version, now=now, replacing="ord_x")
    await storage.carts.release_claim(user, order_id="ord_x")  # not its claim any more: nothing happens
    assert (await storage.carts.get(user)).claim.order_id == "ord_y"  # type: ignore[union-attr]
    await storage.carts.release_claim(user, order_id="ord_y")
    assert (await storage.carts.get(user)).claim is None
    assert not await storage.carts.claim("u-nobody", order_id="ord_z", version=0, now=now, replacing=None)


async def test_after_a_checkout_only_the_bought_lines_leave_the_cart(storage: Storage) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    for product_id in ("a", "b", "c"):
        await storage.carts.set_line(user, line(product_id), max_lines=5)
    cart = await storage.carts.get(user)
    now = datetime.now(UTC)
    assert await storage.carts.claim(user, order_id="ord_x", version=cart.version, now=now, replacing=None)
    # During the checkout: b changes, c goes, d arrives.
    await storage.carts.set_line(user, line("b", 5), max_lines=5)
    await storage.carts.remove_line(user, "c")
    await storage.carts.set_line(user, line("d"), max_lines=5)

    await storage.carts.checked_out(user, order_id="ord_x", lines=cart.checked_out_lines())
    await storage.carts.checked_out(user, order_id="ord_x", lines=cart.checked_out_lines())  # idempotent

    after = await storage.carts.get(user)
    assert [(x.product_id, x.quantity) for x in after.lines] == [("b", 5), ("d", 1)] and after.claim is None


async def test_with_nothing_changed_the_whole_cart_and_its_claim_go(storage: Storage) -> None:
    user = f"u-{uuid.uuid4().hex[:8]}"
    await storage.carts.set_line(user, line("a"), max_lines=5)
    await storage.carts.set_line(user, line("b", 2), max_lines=5)
    cart = await storage.carts.get(user)
    now = datetime.now(UTC)
    assert await storage.carts.claim(user, order_id="ord_x", version=cart.version, now=now, replacing=None)

    await storage.carts.checked_out(user, order_id="ord_x", lines=cart.checked_out_lines())

    after = await storage.carts.get(user)
    assert after.empty and after.claim is None and after.version > cart.version


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
def http_client(app: Any, *, name: str, internal_secrets: dict[str, str]) -> AsyncServiceClient:
    return AsyncServiceClient(
        name=name,
        base_url="http://service",
        tokens=InternalTokens(internal_secrets, service="order"),
        timeout_seconds=10,
        retries=0,
        transport=httpx.ASGITransport(app=app),
    )


@pytest.fixture(params=["memory", "http"])
async def catalog(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    internal_secrets: dict[str, str],
    tmp_path: Any,
) -> AsyncIterator[tuple[Catalog, dict[str, str]]]:
    """A catalog with a mug (10 in stock) and tea (2 in stock): (port, product ids). Its reservations
    expire at once unless committed, so the expiry is seen without waiting."""
    if request.param == "memory":
        fake = InMemoryCatalog({"mug": ("Mug", 50000, 10), "tea": ("Tea", 25000, 2)}, reservation_ttl_seconds=0)
        yield fake, {"mug": "mug", "tea": "tea"}
        return
    from functions.product.bootstrap import build_app, build_catalog, migrate_schema

    settings = make_settings(database_url=f"sqlite:///{tmp_path}/catalog.db", reservation_ttl_seconds=0)
    service = build_catalog(settings)
    migrate_schema(service.products.engine)
    ids = {}
    for key, name, price, stock in (("mug", "Mug", 50000, 10), ("tea", "Tea", 25000, 2)):
        product = service.create(
            name=name, description="", category="home", price_amount=price, currency="INR", stock=stock
        )
        ids[key] = product.id
    client = http_client(build_app(settings), name="product", internal_secrets=internal_secrets)
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
    await port.commit(["ord_3", "ord_never_reserved"])  # an id with nothing reserved is no error
    await port.commit(["ord_3"])  # nor is a repeat


async def test_uncommitted_reservations_expire_and_a_released_one_asked_again_takes_the_stock_again(
    catalog: tuple[Catalog, dict[str, str]],
) -> None:
    port, ids = catalog
    for order_id in ("ord_a", "ord_b", "ord_c"):
        await port.reserve(order_id, [ReservationLine(ids["mug"], 1)])
    await port.commit(["ord_b"])
    await port.release("ord_c")

    assert await port.expired_reservations(limit=10) == ["ord_a"], "committed and released ones never expire"
    assert await port.expired_reservations(limit=10, after="ord_a") == []

    # The buyer retries with the same key after the sweeper released it: the stock is taken again.
    await port.release("ord_a")
    assert await port.expired_reservations(limit=10) == []
    await port.reserve("ord_a", [ReservationLine(ids["mug"], 1)])
    assert await port.expired_reservations(limit=10) == ["ord_a"]
    await port.reserve("ord_x", [ReservationLine(ids["mug"], 8)])  # 10 - b - a - x: nothing left
    with pytest.raises(OutOfStock):
        await port.reserve("ord_y", [ReservationLine(ids["mug"], 1)])
    await port.release("ord_c")  # already released: still nothing back
    with pytest.raises(OutOfStock):
        await port.reserve("ord_y", [ReservationLine(ids["mug"], 1)])


@pytest.fixture(params=["memory", "http"])
async def payments(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], internal_secrets: dict[str, str]
) -> AsyncIterator[Payments]:
    if request.param == "memory":
        yield InMemoryPayments()
        return
    from eks_services.payment.bootstrap import build_app

    settings = make_settings(outbox_relay_enabled=False)
    client = http_client(build_app(settings), name="payment", internal_secrets=internal_secrets)
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


async def test_an_amount_above_the_payment_limit_is_refused_not_charged(payments: Payments) -> None:
    with pytest.raises(ValidationFailed):
        await payments.charge(
            order_id=f"ord_{uuid.uuid4().hex}",
            user_id="u-1",
            amount=AMOUNT_MAX + 1,
            currency="INR",
            payment_method="pm_card_ok",
        )


@pytest.mark.parametrize(
    ("token", "outcome"), [("pm_card_unknown_then_ok", True), ("pm_card_unknown_then_declined", False)]
)
async def test_an_unknown_outcome_is_asked_again_by_the_next_charge(
    payments: Payments, token: str, outcome: bool
) -> None:
    order_id = f"ord_{uuid.uuid4().hex}"
    await payments.verify(token)

    first = await payments.charge(order_id=order_id, user_id="u-1", amount=700, currency="INR", payment_method=token)
    assert first.status == ChargeStatus.UNKNOWN and not first.captured
    assert (await payments.payment(first.payment_id)).status == ChargeStatus.UNKNOWN

    again = await payments.charge(order_id=order_id, user_id="u-1", amount=700, currency="INR", payment_method=token)
    assert again.payment_id == first.payment_id and again.captured is outcome
    assert again.status == (ChargeStatus.CAPTURED if outcome else ChargeStatus.DECLINED)


async def test_the_payment_reads_back_with_its_refunds(payments: Payments) -> None:
    order_id = f"ord_{uuid.uuid4().hex}"
    charge = await payments.charge(
        order_id=order_id, user_id="u-1", amount=5000, currency="INR", payment_method="pm_card_ok"
    )
    read = await payments.payment(charge.payment_id)
    assert (read.status, read.refunded, read.refunding, read.refunded_in_full) == (ChargeStatus.CAPTURED, 0, 0, False)

    await payments.refund(charge.payment_id, amount=2000, idempotency_key="part")
    read = await payments.payment(charge.payment_id)
    assert (read.status, read.refunded, read.refunded_in_full) == (ChargeStatus.PARTIALLY_REFUNDED, 2000, False)

    await payments.refund(charge.payment_id, amount=None, idempotency_key="rest")
    read = await payments.payment(charge.payment_id)
    assert (read.status, read.refunded, read.refunded_in_full) == (ChargeStatus.REFUNDED, 5000, True)
    with pytest.raises(Conflict):
        await payments.refund(charge.payment_id, amount=None, idempotency_key="more")
    with pytest.raises(NotFound):
        await payments.payment("pay_nobody")
