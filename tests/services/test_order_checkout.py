"""Order service: the state machine, and checkout against real DynamoDB (moto and dynalite) with
in-memory catalog, payment, invoice and event fakes (each held to its real adapter's contract in
test_order_ports.py) — fast, so the edge cases can be many. The same flows run through every real
service in tests/e2e."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import jwt
import pytest
from fastapi.testclient import TestClient

from cloudshop import aws
from cloudshop.auth import Principal, TokenIssuer
from cloudshop.aws_json import DynamoDBUnavailable
from cloudshop.dynamodb import DynamoDB, dynamodb_for
from cloudshop.errors import Conflict, DependencyUnavailable, ValidationFailed
from cloudshop.money import AMOUNT_MAX
from cloudshop.settings import Settings
from eks_services.order import service as order_service
from eks_services.order.bootstrap import OrderRuntime, app_for, build_runtime
from eks_services.order.model import (
    TRANSITIONS,
    CartInCheckout,
    ChargeStatus,
    IllegalTransition,
    Line,
    Order,
    OrderStatus,
)
from eks_services.order.service import order_event
from tests.conftest import client_for
from tests.helpers import assert_problem
from tests.services.order_fakes import (
    InMemoryCatalog,
    InMemoryEventPublisher,
    InMemoryInvoices,
    InMemoryPaymentEventSource,
    InMemoryPayments,
)

T = TypeVar("T")

ADDRESS = {
    "name": "Asha",
    "line1": "1 MG Road",
    "city": "Bengaluru",
    "state": "KA",
    "postal_code": "560001",
    "country": "IN",
}


@dataclass
class World:
    """The order service over real DynamoDB (moto or dynalite), with in-memory catalog, payments,
    invoices and event sinks, and the runtime at hand for what HTTP does not reach."""

    http: TestClient
    runtime: OrderRuntime
    catalog: InMemoryCatalog
    payments: InMemoryPayments
    publisher: InMemoryEventPublisher
    payment_events: InMemoryPaymentEventSource
    settings: Settings

    def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run an async call on the app's event loop."""
        return self.http.portal.call(call)  # type: ignore[union-attr]


@pytest.fixture(params=["moto", "dynalite"])
def world(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Iterator[World]:
    """The order service's DynamoDB adapters against both servers: moto (embedded) and dynalite (full)."""
    catalog = InMemoryCatalog({"p1": ("Mug", 50000, 10), "p2": ("Tea", 25000, 2)})
    payments, publisher, source = InMemoryPayments(), InMemoryEventPublisher(), InMemoryPaymentEventSource()
    settings = make_settings(
        dynamodb=request.param,
        outbox_relay_enabled=False,
        abandoned_order_sweeper_enabled=False,
        payment_events_consumer_enabled=False,
    )
    runtime = build_runtime(
        settings,
        catalog=catalog,
        payments=payments,
        invoices=InMemoryInvoices(),
        publisher=publisher,
        payment_events=source,
    )
    for http in client_for(app_for(runtime)):
        yield World(http, runtime, catalog, payments, publisher, source, settings)


@pytest.fixture(scope="session")
def customer(key_pair: tuple[str, str]) -> Callable[..., dict[str, str]]:
    issuer = TokenIssuer(key_pair[0], issuer="cloudshop", access_ttl_seconds=600)

    def make(role: str = "customer") -> dict[str, str]:
        user_id = f"u-{uuid.uuid4().hex[:8]}"
        token = issuer.access_token(user_id=user_id, role=role, email=f"{user_id}@x.io", session_id="s")
        return {"Authorization": f"Bearer {token}"}

    return make


def checkout(app: TestClient, who: dict[str, str], *, key: str | None = "k1", method: str = "pm_card_ok") -> Any:
    headers = dict(who, **({"Idempotency-Key": key} if key else {}))
    return app.post("/api/v1/orders", json={"shipping_address": ADDRESS, "payment_method": method}, headers=headers)


def test_state_machine_allows_only_the_documented_moves() -> None:
    assert TRANSITIONS[OrderStatus.PENDING_PAYMENT] == {OrderStatus.PAID, OrderStatus.PAYMENT_FAILED}
    # A cancel claims first: nothing but CANCELLED follows CANCELLING, so a fulfil after it is refused.
    assert TRANSITIONS[OrderStatus.PAID] == {OrderStatus.FULFILLED, OrderStatus.CANCELLING, OrderStatus.REFUNDED}
    assert TRANSITIONS[OrderStatus.CANCELLING] == {OrderStatus.CANCELLED}
    for terminal in (OrderStatus.CANCELLED, OrderStatus.PAYMENT_FAILED, OrderStatus.REFUNDED):
        assert not TRANSITIONS[terminal]
    from datetime import UTC, datetime

    from eks_services.order.model import Order

    now = datetime.now(UTC)
    order = Order(
        id="o",
        user_id="u",
        status=OrderStatus.PAYMENT_FAILED,
        lines=(),
        currency="INR",
        shipping_address={},
        payment_method="pm_card_ok",
        request_hash="h",
        created_at=now,
        updated_at=now,
    )
    with pytest.raises(IllegalTransition):
        order.move_to(OrderStatus.PAID)


def test_cart_lines_are_checked_against_the_catalog(world: World, customer: Callable[..., dict[str, str]]) -> None:
    me = customer()
    answer = world.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)
    cart = answer.json()
    assert cart["total"] == {"amount": 100000, "currency": "INR"}
    for quantity in (0, 100, 1000, -1, "2", 1.5):
        assert_problem(world.http.put("/api/v1/cart/items/p1", json={"quantity": quantity}, headers=me), 422)
    assert_problem(world.http.put("/api/v1/cart/items/nope", json={"quantity": 1}, headers=me), 422)
    assert_problem(world.http.put("/api/v1/cart/items/p1", json={"quantity": 1, "price": 1}, headers=me), 422)
    assert world.http.get("/api/v1/cart", headers=me).json()["items"][0]["quantity"] == 2
    assert world.http.delete("/api/v1/cart/items/p1", headers=me).json()["items"] == []


def test_paid_checkout_prices_on_the_server_and_clears_the_cart(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)
    world.catalog.reprice("p1", 60000)  # repriced after carting

    answer = checkout(world.http, me)

    assert answer.status_code == 201, answer.text
    order = answer.json()
    assert order["status"] == "PAID" and order["total"] == {"amount": 120000, "currency": "INR"}
    assert world.catalog.stock("p1") == 8
    assert world.http.get("/api/v1/cart", headers=me).json()["items"] == []
    assert world.http.get(f"/api/v1/orders/{order['id']}", headers=me).json()["status"] == "PAID"
    world.run(world.runtime.checkout.background.drain)
    assert world.catalog.status[order["id"]] == "committed", "committed off the request path"


class CountingDynamoDB(DynamoDB):
    """The real client, recording each operation it sends."""

    operations: list[str]

    async def call(self, operation: str, request: dict[str, Any]) -> dict[str, Any]:
        self.operations.append(operation)
        return await super().call(operation, request)


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"])
def test_a_checkout_costs_five_storage_calls_and_two_service_calls(
    make_settings: Callable[..., Settings], customer: Callable[..., dict[str, str]], dynamodb: str
) -> None:
    """One read of order and cart together, claim the cart, reserve, write the order, charge, write
    PAID, take the bought lines out of the cart; the reservation commit and the invoice follow off
    the request path. The claim is the fifth call: it is what buys one cart version once."""
    settings = make_settings(
        dynamodb=dynamodb,
        outbox_relay_enabled=False,
        abandoned_order_sweeper_enabled=False,
        payment_events_consumer_enabled=False,
    )
    counting = dynamodb_for(settings)
    counting.__class__ = CountingDynamoDB
    counting.operations = []  # type: ignore[attr-defined]
    catalog, payments = InMemoryCatalog({"p1": ("Mug", 50000, 10)}), InMemoryPayments()
    runtime = build_runtime(
        settings,
        catalog=catalog,
        payments=payments,
        invoices=InMemoryInvoices(),
        publisher=InMemoryEventPublisher(),
        dynamodb=counting,
    )
    me = customer()
    for http in client_for(app_for(runtime)):
        http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
        counting.operations.clear()  # type: ignore[attr-defined]
        catalog.calls.clear()

        assert checkout(http, me, key="counted").json()["status"] == "PAID"
        http.portal.call(runtime.checkout.background.drain)  # type: ignore[union-attr]

        assert counting.operations == [  # type: ignore[attr-defined]
            "BatchGetItem",
            "UpdateItem",
            "PutItem",
            "UpdateItem",
            "UpdateItem",
        ]
        assert catalog.calls == ["reserve", "commit"], "commit after the answer"
        # verify is cached per token by the HTTP adapter, so after a token's first use it costs nothing.
        assert payments.calls == ["verify", "charge"]
        http.portal.call(counting.aclose)  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["pm_card_declined", "pm_card_error"])
def test_failed_payment_releases_the_stock(world: World, customer: Callable[..., dict[str, str]], method: str) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p2", json={"quantity": 2}, headers=me)
    answer = checkout(world.http, me, method=method)
    assert answer.status_code == 201 and answer.json()["status"] == "PAYMENT_FAILED"
    assert world.catalog.stock("p2") == 2
    assert world.http.get("/api/v1/cart", headers=me).json()["items"], "a failed payment keeps the cart"


# Concurrency is proved on dynalite (as on DynamoDB): moto does not make a conditional write atomic
# under concurrent requests (measured: 9 rounds in 100 of five racing conditional updates let two
# through), so on moto the race itself, not the code, decides this test.
@pytest.mark.parametrize("world", ["dynalite"], indirect=True)
def test_same_key_concurrently_gives_one_order_and_equal_answers(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda: answers.append(checkout(world.http, me, key="same"))) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {201}
    assert len({a.text for a in answers}) == 1
    assert len(world.payments.charges) == 1 and world.catalog.stock("p1") == 9
    assert len(world.http.get("/api/v1/orders", headers=me).json()["items"]) == 1


def test_same_key_with_another_body_is_refused(world: World, customer: Callable[..., dict[str, str]]) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    assert checkout(world.http, me, key="k").status_code == 201
    assert_problem(checkout(world.http, me, key="k", method="pm_card_declined"), 422)


@pytest.mark.parametrize(
    ("key", "body", "status"),
    [
        (None, {"shipping_address": ADDRESS, "payment_method": "pm_card_ok"}, 422),
        ("k", {"shipping_address": ADDRESS, "payment_method": "pm_unknown_token"}, 422),
        ("k", {"shipping_address": ADDRESS, "payment_method": "4242424242424242"}, 422),
        ("k", {"shipping_address": {**ADDRESS, "country": "India"}, "payment_method": "pm_card_ok"}, 422),
        ("k", {"shipping_address": ADDRESS}, 422),
        ("k", {"shipping_address": ADDRESS, "payment_method": "pm_card_ok", "total": 1}, 422),
        ("x" * 200, {"shipping_address": ADDRESS, "payment_method": "pm_card_ok"}, 422),
    ],
)
def test_bad_checkouts_write_nothing(
    world: World,
    customer: Callable[..., dict[str, str]],
    key: str | None,
    body: dict[str, Any],
    status: int,
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    headers = dict(me, **({"Idempotency-Key": key} if key else {}))
    assert_problem(world.http.post("/api/v1/orders", json=body, headers=headers), status)
    assert world.catalog.stock("p1") == 10 and not world.catalog.reservations
    assert world.http.get("/api/v1/orders", headers=me).json()["items"] == []


def test_empty_cart_and_out_of_stock(world: World, customer: Callable[..., dict[str, str]]) -> None:
    me = customer()
    assert_problem(checkout(world.http, me), 422)
    world.http.put("/api/v1/cart/items/p2", json={"quantity": 3}, headers=me)
    body = assert_problem(checkout(world.http, me, key="k2"), 409)
    assert body["products"] == ["p2"] and body["type"].endswith("/out-of-stock")


def test_nobody_reads_or_cancels_another_users_order(world: World, customer: Callable[..., dict[str, str]]) -> None:
    owner, stranger, admin = customer(), customer(), customer("admin")
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=owner)
    order = checkout(world.http, owner).json()
    assert_problem(world.http.get(f"/api/v1/orders/{order['id']}", headers=stranger), 404)
    assert_problem(world.http.post(f"/api/v1/orders/{order['id']}/cancel", headers=stranger), 404)
    assert world.http.get(f"/api/v1/orders/{order['id']}", headers=admin).status_code == 200

    cancelled = world.http.post(f"/api/v1/orders/{order['id']}/cancel", headers=owner)
    assert cancelled.json()["status"] == "CANCELLED"
    assert world.payments.refund_calls == [(order["payment_id"], None)] and world.catalog.stock("p1") == 10
    assert_problem(world.http.post(f"/api/v1/orders/{order['id']}/fulfil", headers=admin), 409)


def test_order_history_is_paginated_newest_first(world: World, customer: Callable[..., dict[str, str]]) -> None:
    me = customer()
    ids = []
    for n in range(5):
        world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
        ids.append(checkout(world.http, me, key=f"k{n}").json()["id"])
    seen, cursor = [], None
    while True:
        page = world.http.get(
            "/api/v1/orders", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=me
        ).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert_problem(world.http.get("/api/v1/orders", params={"cursor": "nonsense"}, headers=me), 400)


def test_outbox_holds_every_event_until_the_relay_sends_it(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    order = checkout(world.http, me).json()
    world.publisher.failing = True
    with pytest.raises(RuntimeError):
        world.run(world.runtime.relay.run_once)
    world.publisher.failing = False

    world.run(world.runtime.relay.drain)

    mine = [e for e in world.publisher.events() if e["data"]["order_id"] == order["id"]]
    assert [e["event_type"] for e in mine] == ["order.created", "order.paid"]
    assert not [e for e in world.run(world.runtime.relay.orders.pending_events) if e.order_id == order["id"]]
    item = aws.client("dynamodb", world.settings).get_item(
        TableName=world.settings.orders_table, Key={"order_id": {"S": order["id"]}}
    )["Item"]
    assert "outbox_pending" not in item and not item.get("outbox", {}).get("M")


def test_a_cart_holds_at_most_fifty_products_but_quantities_can_still_change(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    for n in range(51):
        world.catalog.add(f"x{n}", name=f"X{n}", price=100, stock=5)
    for n in range(50):
        assert world.http.put(f"/api/v1/cart/items/x{n}", json={"quantity": 1}, headers=me).status_code == 200
    assert_problem(world.http.put("/api/v1/cart/items/x50", json={"quantity": 1}, headers=me), 409)
    assert world.http.put("/api/v1/cart/items/x0", json={"quantity": 3}, headers=me).status_code == 200
    assert len(world.http.get("/api/v1/cart", headers=me).json()["items"]) == 50


def test_payment_service_down_nothing_lost_nothing_charged_twice(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    """Given the payment service fails after the order is written, the buyer gets a 503 and the stock
    stays reserved; a retry with the same key, once payments are back, completes it with one charge."""
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)
    world.payments.down = {"charge"}
    assert_problem(checkout(world.http, me, key="k-down"), 503)
    pending = world.http.get("/api/v1/orders", headers=me).json()["items"]
    assert [o["status"] for o in pending] == ["PENDING_PAYMENT"] and world.catalog.stock("p1") == 8

    world.payments.down = set()
    retried = checkout(world.http, me, key="k-down")

    assert retried.status_code == 201 and retried.json()["status"] == "PAID"
    assert retried.json()["id"] == pending[0]["id"] and len(world.payments.charges) == 1
    assert world.catalog.stock("p1") == 8


def test_abandoned_checkouts_are_settled_by_the_sweeper(world: World, customer: Callable[..., dict[str, str]]) -> None:
    ok_buyer, declined_buyer = customer(), customer()
    for who in (ok_buyer, declined_buyer):
        world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=who)
    world.payments.down = {"charge"}
    assert_problem(checkout(world.http, ok_buyer, key="a"), 503)
    assert_problem(checkout(world.http, declined_buyer, key="b", method="pm_card_declined"), 503)
    sweep = partial(world.runtime.checkout.settle_abandoned, older_than_seconds=0)
    assert world.run(sweep).settled == 0, "still down: nothing settles, nothing is lost"

    world.payments.down = set()
    world.run(sweep)

    statuses = {
        who["Authorization"]: world.http.get("/api/v1/orders", headers=who).json()["items"][0]["status"]
        for who in (ok_buyer, declined_buyer)
    }
    assert statuses == {ok_buyer["Authorization"]: "PAID", declined_buyer["Authorization"]: "PAYMENT_FAILED"}
    assert world.catalog.stock("p1") == 9, "the declined order's unit went back on the shelf"
    world.run(sweep)  # the page after (other tests' orders share the table), then from the start again
    assert world.run(sweep).settled == 0, "settled orders leave the index"


def test_invoice_link_once_paid(world: World, customer: Callable[..., dict[str, str]]) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    order = checkout(world.http, me).json()
    answer = world.http.get(f"/api/v1/orders/{order['id']}/invoice", headers=me)
    assert answer.status_code == 200 and answer.json()["url"].endswith(f"{order['id']}.html")


# --- payment events --------------------------------------------------------------------------------
def refunded_event(order: dict[str, Any], *, fully: bool = True, event_id: str | None = None) -> str:
    total = order["total"]
    return json.dumps(
        {
            "event_id": event_id or f"evt-{uuid.uuid4().hex}",
            "event_type": "payment.refunded",
            "version": 1,
            "occurred_at": "2026-01-01T00:00:00+00:00",
            "source": "payment-service",
            "data": {
                "payment_id": order["payment_id"],
                "order_id": order["id"],
                "user_id": order["user_id"],
                "amount": total,
                "refunded_total": total if fully else {"amount": 1, "currency": total["currency"]},
                "captured": total,
                "fully_refunded": fully,
            },
        }
    )


def paid_order(world: World, who: dict[str, str], *, key: str = "k1") -> dict[str, Any]:
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=who)
    order: dict[str, Any] = checkout(world.http, who, key=key).json()
    assert order["status"] == "PAID"
    return order


def consume(world: World) -> int:
    consumer = world.runtime.consumer
    assert consumer is not None
    return world.run(partial(consumer.run_once, wait_seconds=0))


def test_a_full_refund_event_moves_the_order_to_refunded_once(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    order = paid_order(world, me)
    partial_refund, full_refund = refunded_event(order, fully=False), refunded_event(order, event_id="e-full")
    world.payment_events.send(partial_refund)
    assert consume(world) == 1
    assert world.http.get(f"/api/v1/orders/{order['id']}", headers=me).json()["status"] == "PAID"

    world.payment_events.send(full_refund)
    world.payment_events.send(full_refund)  # at least once: the same event again
    assert consume(world) == 2

    assert world.http.get(f"/api/v1/orders/{order['id']}", headers=me).json()["status"] == "REFUNDED"
    assert not world.payment_events.messages, "handled messages are deleted"
    world.run(world.runtime.relay.drain)
    refunded = [e for e in world.publisher.events() if e["event_type"] == "order.refunded"]
    assert len(refunded) == 1 and refunded[0]["data"]["order_id"] == order["id"]


def test_a_cancels_own_refund_event_leaves_the_order_cancelled(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    """The payment service announces the refund a cancel asked for; the order must end CANCELLED
    whether that event arrives before the cancel finishes or after."""
    me = customer()
    order = paid_order(world, me)
    real_release = world.catalog.release

    async def release_while_the_event_arrives(order_id: str) -> None:
        world.payment_events.send(refunded_event(order))
        consumer = world.runtime.consumer
        assert consumer is not None
        await consumer.run_once(wait_seconds=0)
        await real_release(order_id)

    world.catalog.release = release_while_the_event_arrives  # type: ignore[method-assign]
    cancelled = world.http.post(f"/api/v1/orders/{order['id']}/cancel", headers=me)

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    world.payment_events.send(refunded_event(order))
    assert consume(world) == 1
    assert world.http.get(f"/api/v1/orders/{order['id']}", headers=me).json()["status"] == "CANCELLED"


def test_poison_payment_events_end_in_the_dead_letter_queue(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    order = paid_order(world, me)
    unknown_order = json.loads(refunded_event(order))
    unknown_order["data"]["order_id"] = "ord_nobody"
    for body in ("not json", json.dumps({"event_type": "payment.refunded", "data": {}}), json.dumps(unknown_order)):
        world.payment_events.send(body)
    world.payment_events.send(json.dumps({"event_type": "payment.captured", "event_id": "x", "data": {}}))
    world.payment_events.send(refunded_event(order))

    for _ in range(4):
        consume(world)

    assert len(world.payment_events.dead_letters) == 3
    assert not world.payment_events.messages
    assert world.http.get(f"/api/v1/orders/{order['id']}", headers=me).json()["status"] == "REFUNDED"


# --- issue 10: money and stock ---------------------------------------------------------------------
ADMIN = Principal(user_id="admin-1", role="admin")


def fulfil(world: World, admin: dict[str, str], order_id: str) -> Any:
    return world.http.post(f"/api/v1/orders/{order_id}/fulfil", headers=admin)


def user_of(who: dict[str, str]) -> str:
    token = who["Authorization"].removeprefix("Bearer ")
    return str(jwt.decode(token, options={"verify_signature": False})["sub"])


def order_of(world: World, who: dict[str, str], order_id: str) -> dict[str, Any]:
    answer: dict[str, Any] = world.http.get(f"/api/v1/orders/{order_id}", headers=who).json()
    return answer


def cart_of(world: World, who: dict[str, str]) -> list[tuple[str, int]]:
    return [(x["product_id"], x["quantity"]) for x in world.http.get("/api/v1/cart", headers=who).json()["items"]]


# Hole 1: cancel and fulfil race.
def test_a_fulfil_that_comes_while_a_cancel_is_refunding_is_refused_and_the_cancel_finishes(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    """The cancel claims the order (CANCELLING) before it refunds and releases; a fulfil arriving
    meanwhile is refused, so the order never ends FULFILLED with its money and stock given back."""
    me = customer()
    order = paid_order(world, me)
    real_refund = world.payments.refund
    fulfil_answers: list[Exception | None] = []

    async def refund_while_an_admin_fulfils(payment_id: str, *, amount: int | None, idempotency_key: str) -> Any:
        try:
            await world.runtime.checkout.fulfil(ADMIN, order["id"])
            fulfil_answers.append(None)
        except Conflict as exc:
            fulfil_answers.append(exc)
        return await real_refund(payment_id, amount=amount, idempotency_key=idempotency_key)

    world.payments.refund = refund_while_an_admin_fulfils  # type: ignore[method-assign]
    cancelled = world.http.post(f"/api/v1/orders/{order['id']}/cancel", headers=me)

    assert cancelled.status_code == 200, cancelled.text
    assert len(fulfil_answers) == 1 and isinstance(fulfil_answers[0], IllegalTransition)
    assert order_of(world, me, order["id"])["status"] == "CANCELLED"
    assert world.catalog.stock("p1") == 10 and world.payments.refund_calls == [(order["payment_id"], None)]


def test_a_cancel_that_comes_after_a_fulfil_is_refused_and_moves_no_money(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    order = paid_order(world, me)
    assert fulfil(world, customer("admin"), order["id"]).json()["status"] == "FULFILLED"

    assert_problem(world.http.post(f"/api/v1/orders/{order['id']}/cancel", headers=me), 409)

    assert world.payments.refund_calls == [] and world.catalog.stock("p1") == 9


def test_a_cancel_that_died_after_its_claim_is_finished_by_the_sweeper(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    order = paid_order(world, me)
    world.payments.down = {"refund"}
    assert_problem(world.http.post(f"/api/v1/orders/{order['id']}/cancel", headers=me), 503)
    assert order_of(world, me, order["id"])["status"] == "CANCELLING"
    assert_problem(fulfil(world, customer("admin"), order["id"]), 409)  # claimed: nothing else moves it

    world.payments.down = set()
    sweep_until(world, lambda: order_of(world, me, order["id"])["status"] == "CANCELLED")

    assert world.catalog.stock("p1") == 10 and world.payments.refund_calls == [(order["payment_id"], None)]


def sweep_until(world: World, done: Callable[[], bool], *, rounds: int = 5) -> None:
    for _ in range(rounds):
        world.run(partial(world.runtime.checkout.settle_abandoned, older_than_seconds=0))
        if done():
            return
    pytest.fail("the sweeper did not finish it")


# Hole 2: a full refund makes the order unshippable, before its event arrives.
@pytest.mark.parametrize("confirmed", [False, True])
def test_an_order_whose_payment_is_refunded_in_full_cannot_be_fulfilled(
    world: World, customer: Callable[..., dict[str, str]], confirmed: bool
) -> None:
    """An admin refunds the payment in full (still at the provider, or confirmed with its event not
    consumed yet): the order still reads PAID, and a fulfil must not ship it."""
    me = customer()
    order = paid_order(world, me)
    if confirmed:
        world.run(partial(world.payments.refund, order["payment_id"], amount=None, idempotency_key="admin-1"))
    else:
        world.payments.start_refund(order["payment_id"])

    refused = assert_problem(fulfil(world, customer("admin"), order["id"]), 409)

    assert refused["type"].endswith("/payment-refunded")
    assert order_of(world, me, order["id"])["status"] == "PAID"


def test_a_partly_refunded_order_can_still_be_fulfilled(world: World, customer: Callable[..., dict[str, str]]) -> None:
    me = customer()
    order = paid_order(world, me)
    world.run(partial(world.payments.refund, order["payment_id"], amount=100, idempotency_key="goodwill"))
    assert fulfil(world, customer("admin"), order["id"]).json()["status"] == "FULFILLED"


def test_a_cancel_after_an_admin_refunded_everything_still_cancels_and_returns_the_stock(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    order = paid_order(world, me)
    world.run(partial(world.payments.refund, order["payment_id"], amount=None, idempotency_key="admin-1"))

    cancelled = world.http.post(f"/api/v1/orders/{order['id']}/cancel", headers=me)

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED", cancelled.text
    assert world.catalog.stock("p1") == 10


# Hole 3: unbounded totals, and a sweeper that poison orders could block.
def big_cart(world: World, who: dict[str, str]) -> None:
    for pid in ("big1", "big2"):
        world.catalog.add(pid, name="Yacht", price=10**10, stock=500)
        assert world.http.put(f"/api/v1/cart/items/{pid}", json={"quantity": 99}, headers=who).status_code == 200


def test_an_order_above_the_payment_limit_is_refused_before_any_stock_is_reserved(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    big_cart(world, me)  # 2 x 99 x 10^10 = 1.98 x 10^12 minor units, above the payment's 10^12

    refused = assert_problem(checkout(world.http, me), 422)

    assert refused["type"].endswith("/order-total-too-large")
    assert refused["limit"] == {"amount": AMOUNT_MAX, "currency": "INR"}
    assert world.catalog.stock("big1") == world.catalog.stock("big2") == 500 and not world.catalog.reservations
    assert world.http.get("/api/v1/orders", headers=me).json()["items"] == [] and not world.payments.charges


def test_a_cart_repriced_above_the_limit_is_refused_and_its_reservation_released(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.catalog.add("ring", name="Ring", price=10**9, stock=500)
    world.http.put("/api/v1/cart/items/ring", json={"quantity": 99}, headers=me)  # carted at 9.9 x 10^10
    world.catalog.reprice("ring", 2 * 10**10)  # priced at reservation: 1.98 x 10^12

    refused = assert_problem(checkout(world.http, me), 422)

    assert refused["type"].endswith("/order-total-too-large")
    assert world.catalog.stock("ring") == 500, "reserved, then released at once: no order will hold it"
    assert world.http.get("/api/v1/orders", headers=me).json()["items"] == []
    assert cart_of(world, me) == [("ring", 99)] and checkout(world.http, me, key="k2").status_code == 422


def test_a_charge_the_payment_service_refuses_fails_the_order_and_releases_the_stock(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    """The payment's 422 used to leave the order PENDING_PAYMENT for ever with its stock reserved."""
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)

    async def refuse(**_: Any) -> Any:
        raise ValidationFailed("An amount is between 1 and 10 minor units.")

    world.payments.charge = refuse  # type: ignore[method-assign,assignment]
    answer = checkout(world.http, me)

    assert answer.status_code == 201, answer.text
    assert (answer.json()["status"], answer.json()["failure_reason"]) == ("PAYMENT_FAILED", "charge_refused")
    assert world.catalog.stock("p1") == 10


def test_fifty_poison_orders_do_not_keep_the_sweeper_from_the_fifty_first(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    """Each order gets a bounded time, errors are counted and skipped, and the next round takes the
    next page: 50 orders that hang or fail at every charge cannot stop the 51st."""
    checkout_service = world.runtime.checkout
    long_ago = datetime.now(UTC) - timedelta(days=3650)  # older than every other order in the table
    poison, good = [], None
    for n in range(51):
        order = pending_order(f"u-poison-{uuid.uuid4().hex[:6]}", created_at=long_ago + timedelta(seconds=n))
        world.run(partial(checkout_service.orders.create, order, order_event(order)))
        if n < 50:
            poison.append(order.id)
        else:
            good = order
    assert good is not None
    hang = asyncio.Event()
    real_charge = world.payments.charge

    async def poisoned(*, order_id: str, **rest: Any) -> Any:
        if order_id in poison:
            if poison.index(order_id) % 2:
                await hang.wait()  # a charge that never answers
            raise RuntimeError("a poison order")  # an error nobody expected
        return await real_charge(order_id=order_id, **rest)

    world.payments.charge = poisoned  # type: ignore[method-assign,assignment]
    checkout_service.sweep_order_seconds = 0.2

    async def three_rounds() -> list[Any]:
        return [await checkout_service.settle_abandoned(older_than_seconds=0) for _ in range(3)]

    rounds = world.run(lambda: asyncio.wait_for(three_rounds(), 30))

    assert rounds[0].failed == 50, rounds
    assert world.run(partial(checkout_service.orders.get, good.id)).status == OrderStatus.PAID  # type: ignore[union-attr]
    # Leave the table as we found it: the poison orders settle once their charges answer.
    world.payments.charge = real_charge  # type: ignore[method-assign]
    hang.set()
    for _ in range(5):
        world.run(partial(checkout_service.settle_abandoned, older_than_seconds=0))


def pending_order(user_id: str, *, created_at: datetime) -> Order:
    return Order(
        id=f"ord_{uuid.uuid4().hex}",
        user_id=user_id,
        status=OrderStatus.PENDING_PAYMENT,
        lines=(Line("p1", "Mug", 1, 50000, "INR"),),
        currency="INR",
        shipping_address=ADDRESS,
        payment_method="pm_card_ok",
        request_hash="h",
        created_at=created_at,
        updated_at=created_at,
    )


# Hole 4: reserved, then the order write failed.
def test_a_reservation_whose_order_was_never_written_goes_back_on_the_shelf(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 3}, headers=me)
    orders = world.runtime.checkout.orders
    real_create = orders.create

    async def create_fails(*_: Any) -> None:
        raise DynamoDBUnavailable(code="ServiceUnavailable")

    orders.create = create_fails  # type: ignore[method-assign,assignment]
    assert_problem(checkout(world.http, me, key="lost"), 503)
    assert world.catalog.stock("p1") == 7, "reserved, and no order holds it"
    orders.create = real_create  # type: ignore[method-assign]

    world.run(world.runtime.checkout.release_expired_reservations)
    assert world.catalog.stock("p1") == 7, "not expired yet: a retry may still come"
    world.catalog.now = lambda: datetime.now(UTC) + timedelta(hours=1)
    world.run(world.runtime.checkout.release_expired_reservations)

    assert world.catalog.stock("p1") == 10
    # A retry with the same key after that takes the stock again and pays once.
    retried = checkout(world.http, me, key="lost")
    assert retried.status_code == 201 and retried.json()["status"] == "PAID", retried.text
    assert world.catalog.stock("p1") == 7 and list(world.payments.charges) == [retried.json()["id"]]


def test_an_expired_reservation_of_a_written_order_is_kept_and_committed(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    world.payments.down = {"charge"}
    pending = assert_problem(checkout(world.http, me, key="held"), 503)
    assert pending
    world.catalog.now = lambda: datetime.now(UTC) + timedelta(hours=1)

    world.run(world.runtime.checkout.release_expired_reservations)

    (order,) = world.http.get("/api/v1/orders", headers=me).json()["items"]
    assert world.catalog.status[order["id"]] == "committed" and world.catalog.stock("p1") == 9


# Hole 5: an unknown payment outcome is not a failure.
def test_an_unknown_payment_outcome_keeps_the_order_pending_with_its_stock_until_it_is_known(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)

    unknown = assert_problem(checkout(world.http, me, key="k", method="pm_card_unknown_then_ok"), 503)

    assert unknown["type"].endswith("/payment-outcome-unknown")
    (order,) = world.http.get("/api/v1/orders", headers=me).json()["items"]
    assert order["status"] == "PENDING_PAYMENT" and world.catalog.stock("p1") == 8
    world.catalog.now = lambda: datetime.now(UTC) + timedelta(hours=1)
    world.run(world.runtime.checkout.release_expired_reservations)
    assert world.catalog.stock("p1") == 8, "held while the outcome is unknown"

    sweep_until(world, lambda: order_of(world, me, order["id"])["status"] != "PENDING_PAYMENT")

    assert order_of(world, me, order["id"])["status"] == "PAID" and world.catalog.stock("p1") == 8
    assert world.payments.charges[order["id"]].status == ChargeStatus.CAPTURED


def test_an_unknown_outcome_that_turns_out_declined_releases_the_stock_then(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)
    assert_problem(checkout(world.http, me, key="k", method="pm_card_unknown_then_declined"), 503)
    assert world.catalog.stock("p1") == 8

    again = checkout(world.http, me, key="k", method="pm_card_unknown_then_declined")

    assert again.status_code == 201 and again.json()["status"] == "PAYMENT_FAILED"
    assert world.catalog.stock("p1") == 10


# Hole 6: one cart version is bought once; what changed during the checkout stays in the cart.
def test_the_same_cart_checked_out_with_another_key_meanwhile_is_refused(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    real_reserve = world.catalog.reserve
    second: list[Any] = []

    async def reserve_while_a_second_tab_checks_out(order_id: str, lines: Any) -> Any:
        reserved = await real_reserve(order_id, lines)
        if not second:
            second.append(await second_checkout(world, me))
        return reserved

    world.catalog.reserve = reserve_while_a_second_tab_checks_out  # type: ignore[method-assign]
    first = checkout(world.http, me, key="first-tab")

    assert first.status_code == 201 and first.json()["status"] == "PAID"
    assert isinstance(second[0], CartInCheckout) and second[0].extra["order_id"] == first.json()["id"]
    assert world.catalog.stock("p1") == 9 and len(world.payments.charges) == 1
    assert cart_of(world, me) == []


async def second_checkout(world: World, who: dict[str, str]) -> Exception | Order:
    """The same buyer's checkout with another key, run inside the first one's request."""
    principal = Principal(user_id=user_of(who), role="customer")
    try:
        return await world.runtime.checkout.checkout(
            principal, idempotency_key="second-tab", body={"shipping_address": ADDRESS, "payment_method": "pm_card_ok"}
        )
    except Exception as exc:
        return exc


@pytest.mark.parametrize("world", ["dynalite"], indirect=True)
def test_five_concurrent_checkouts_of_one_cart_with_five_keys_buy_it_once(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)
    answers: list[Any] = []
    threads = [
        threading.Thread(target=lambda n=n: answers.append(checkout(world.http, me, key=f"tab-{n}"))) for n in range(5)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status_code for a in answers].count(201) == 1, [a.text for a in answers]
    # The others find the cart held by the winner, or (if it finished first) already bought and empty.
    losers = {a.json()["type"].rsplit("/", 1)[1] for a in answers if a.status_code != 201}
    assert losers <= {"cart-in-checkout", "validation"}, [a.text for a in answers]
    assert world.catalog.stock("p1") == 8 and len(world.http.get("/api/v1/orders", headers=me).json()["items"]) == 1


def test_lines_added_or_changed_during_checkout_stay_in_the_cart(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.catalog.add("p3", name="Pot", price=1000, stock=10)
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)
    world.http.put("/api/v1/cart/items/p3", json={"quantity": 1}, headers=me)
    real_charge = world.payments.charge
    principal_id = user_of(me)

    async def charge_while_the_buyer_edits_the_cart(**request: Any) -> Any:
        carts = world.runtime.services.carts
        await carts.set_quantity(principal_id, "p2", 1)  # added
        await carts.set_quantity(principal_id, "p3", 4)  # changed
        return await real_charge(**request)

    world.payments.charge = charge_while_the_buyer_edits_the_cart  # type: ignore[method-assign]
    order = checkout(world.http, me)

    assert order.status_code == 201 and order.json()["status"] == "PAID"
    assert [(x["product_id"], x["quantity"]) for x in order.json()["lines"]] == [("p1", 2), ("p3", 1)]
    assert cart_of(world, me) == [("p2", 1), ("p3", 4)]


def test_a_failed_payment_frees_the_cart_for_the_next_checkout(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    assert checkout(world.http, me, key="a", method="pm_card_declined").json()["status"] == "PAYMENT_FAILED"

    paid = checkout(world.http, me, key="b")

    assert paid.status_code == 201 and paid.json()["status"] == "PAID" and world.catalog.stock("p1") == 9


def test_a_checkout_that_died_holding_the_cart_is_taken_over_once_its_claim_is_stale(
    world: World, customer: Callable[..., dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    real_reserve = world.catalog.reserve

    async def catalog_down(*_: Any) -> Any:
        raise DependencyUnavailable("The product service is unavailable.")

    world.catalog.reserve = catalog_down  # type: ignore[method-assign,assignment]
    assert_problem(checkout(world.http, me, key="died"), 503)
    world.catalog.reserve = real_reserve  # type: ignore[method-assign]
    assert assert_problem(checkout(world.http, me, key="other"), 409)["type"].endswith("/cart-in-checkout")

    monkeypatch.setattr(order_service, "CLAIM_STALE_SECONDS", 0.0)
    taken_over = checkout(world.http, me, key="other")

    assert taken_over.status_code == 201 and taken_over.json()["status"] == "PAID"
    assert world.catalog.stock("p1") == 9
