"""The DynamoDB calls of one checkout, counted through the real adapters on moto and dynalite: the
bench's unit of work (issue 9), i.e. the buyer's cart PUT, its POST /orders and the outbox relay round
that publishes the order's events. A count, not a time: a call added to the path fails here.

Why these and no fewer: the order and the cart are items of two tables, and dynalite (the full
profile's DynamoDB, where the bench runs) has no `TransactWriteItems`, so every write below is its
own single-item conditional write (see `eks_services/order/repository.py`)."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloudshop.auth import Principal
from cloudshop.dynamodb import DynamoDB, dynamodb_for
from cloudshop.settings import Settings
from eks_services.order.bootstrap import OrderRuntime, app_for, build_runtime
from tests.conftest import client_for
from tests.services.order_fakes import InMemoryCatalog, InMemoryEventPublisher, InMemoryInvoices, InMemoryPayments
from tests.services.test_order_checkout import ADDRESS, checkout, customer

__all__ = ["customer"]  # the checkout tests' fixture, used here too


class CountingDynamoDB(DynamoDB):
    """The real client, recording each call as (operation, tables it touches)."""

    calls: list[tuple[str, str]]
    prefix: str = ""

    async def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        tables = [request["TableName"]] if "TableName" in request else sorted(request.get("RequestItems", {}))
        self.calls.append((operation, "+".join(t.removeprefix(self.prefix) for t in tables)))
        return await super().call(operation, request)


@dataclass
class Counted:
    http: TestClient
    runtime: OrderRuntime
    db: CountingDynamoDB
    events: InMemoryEventPublisher

    def calls_of(self, work: Callable[[], Any]) -> list[tuple[str, str]]:
        self.db.calls.clear()
        work()
        return list(self.db.calls)


class ChargingPayments(InMemoryPayments):
    """A charge takes as long as a call to the payment service does under load: long enough for
    other checkouts' relay rounds to fall between an order's write and its outcome."""

    async def charge(self, **request: Any) -> Any:
        await asyncio.sleep(0.025)
        return await super().charge(**request)


@pytest.fixture(params=["moto", "dynalite"])
def counted(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Iterator[Counted]:
    # Tables of its own, so the relay's round holds this test's events and nothing another test left.
    settings = make_settings(
        prefix="calls-",
        dynamodb=request.param,
        outbox_relay_enabled=False,
        abandoned_order_sweeper_enabled=False,
        payment_events_consumer_enabled=False,
    )
    db = dynamodb_for(settings)
    db.__class__ = CountingDynamoDB
    assert isinstance(db, CountingDynamoDB)
    db.calls, db.prefix = [], "calls-"
    events = InMemoryEventPublisher()
    runtime = build_runtime(
        settings,
        catalog=InMemoryCatalog({"p1": ("Mug", 50000, 1000)}),
        payments=ChargingPayments(),
        invoices=InMemoryInvoices(),
        publisher=events,
        dynamodb=db,
    )
    for http in client_for(app_for(runtime)):
        http.portal.call(runtime.relay.drain)  # type: ignore[union-attr]
        yield Counted(http, runtime, db, events)
        http.portal.call(db.aclose)  # type: ignore[union-attr]


def test_a_checkout_costs_eight_dynamodb_calls_with_its_cart_put_and_its_events(
    counted: Counted, customer: Callable[..., dict[str, str]]
) -> None:
    """Given a buyer who has checked out before (the bench's buyers: the cart item exists, emptied),
    a cart PUT is one write that returns the cart, POST /orders is five calls, and the relay round
    that publishes its two events is one query and one write."""
    me = customer()
    counted.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    assert checkout(counted.http, me, key="before").json()["status"] == "PAID"
    counted.http.portal.call(counted.runtime.checkout.background.drain)  # type: ignore[union-attr]
    counted.http.portal.call(counted.runtime.relay.drain)  # type: ignore[union-attr]

    put = counted.calls_of(lambda: counted.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me))
    paid: list[Any] = []

    def pay() -> None:
        paid.append(checkout(counted.http, me, key="counted").json())
        counted.http.portal.call(counted.runtime.checkout.background.drain)  # type: ignore[union-attr]

    post = counted.calls_of(pay)
    relay = counted.calls_of(lambda: counted.http.portal.call(counted.runtime.relay.run_once))  # type: ignore[union-attr]

    assert paid[0]["status"] == "PAID" and paid[0]["total"]["amount"] == 100000
    assert put == [("UpdateItem", "carts")], "the line written, the cart it leaves returned (ALL_NEW)"
    assert post == [
        ("BatchGetItem", "carts+orders"),  # this key's order (a twin's or a retry's) and the cart, together
        ("UpdateItem", "carts"),  # the claim: one cart version is bought once
        ("PutItem", "orders"),  # the order PENDING_PAYMENT and its order.created event
        ("UpdateItem", "orders"),  # PAID and its order.paid event
        ("UpdateItem", "carts"),  # the bought lines out of the cart, the claim dropped
    ]
    assert relay == [("Query", "orders"), ("UpdateItem", "orders")], "both events in one round, one mark_sent"
    assert [e.order_id for e in counted.events.published[-2:]] == [paid[0]["id"]] * 2
    assert len(put) + len(post) + len(relay) == 8


def test_a_first_cart_put_reads_only_to_tell_an_empty_cart_from_a_full_one(
    counted: Counted, customer: Callable[..., dict[str, str]]
) -> None:
    """A buyer's very first line: the common-case write is refused (no lines yet), the read tells
    "no cart" from "cart full", the lines are started by a second write that returns the cart."""
    me = customer()

    put = counted.calls_of(lambda: counted.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me))

    assert put == [("UpdateItem", "carts"), ("GetItem", "carts"), ("UpdateItem", "carts")]
    assert counted.http.get("/api/v1/cart", headers=me).json()["items"][0]["quantity"] == 1


def test_concurrent_checkouts_have_their_events_marked_sent_with_one_write_each(counted: Counted) -> None:
    """Given 10 buyers checking out 3 times each at once with the relay running (woken by every
    settled order), each order's two events are published in one round and marked sent in one write:
    no order.created goes out alone while its charge is under way."""
    buyers = [Principal(user_id=f"u-{uuid.uuid4().hex[:8]}", role="customer") for _ in range(10)]
    rounds = 3
    cart, checkouts, relay = counted.runtime.services.carts, counted.runtime.checkout, counted.runtime.relay
    body = {"shipping_address": ADDRESS, "payment_method": "pm_card_ok"}

    async def buy(buyer: Principal) -> None:
        await cart.set_quantity(buyer.user_id, "p1", 1)
        await checkouts.checkout(buyer, idempotency_key="first", body=body)  # the cart item exists from now
        await checkouts.background.drain()
        await relay.drain()

    async def shop(buyer: Principal) -> None:
        for n in range(rounds):
            await cart.set_quantity(buyer.user_id, "p1", 1)
            assert (await checkouts.checkout(buyer, idempotency_key=f"k{n}", body=body)).payment_id

    async def busy_shop() -> None:
        relay.start()
        try:
            await asyncio.gather(*(shop(buyer) for buyer in buyers))
            await checkouts.background.drain()
            for _ in range(200):  # the last settled orders' round: woken, after a coalescing pause
                if not await relay.orders.pending_events():
                    break
                await asyncio.sleep(0.02)
        finally:
            await relay.stop()

    for buyer in buyers:
        counted.http.portal.call(buy, buyer)  # type: ignore[union-attr]
    published = len(counted.events.published)
    calls = Counter(counted.calls_of(lambda: counted.http.portal.call(busy_shop)))  # type: ignore[union-attr]

    orders = len(buyers) * rounds
    assert len(counted.events.published) - published == 2 * orders
    assert calls.pop(("Query", "orders")) <= orders, "a relay round serves several orders"
    assert calls == {
        ("UpdateItem", "carts"): 3 * orders,  # the cart PUT, the claim, the bought lines out
        ("BatchGetItem", "carts+orders"): orders,
        ("PutItem", "orders"): orders,
        ("UpdateItem", "orders"): 2 * orders,  # PAID, and one mark_sent for both events
    }
