"""Order service: the state machine, and checkout against real DynamoDB (moto) with in-memory
catalog and payment fakes — fast, so the edge cases can be many. The same flows run through every
real service in tests/e2e."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloudshop.auth import TokenIssuer
from cloudshop.errors import DependencyUnavailable, NotFound, OutOfStock, ValidationFailed
from cloudshop.settings import Settings
from eks_services.order.bootstrap import build_app
from eks_services.order.model import TRANSITIONS, IllegalTransition, OrderStatus
from tests.conftest import client_for
from tests.helpers import assert_problem

ADDRESS = {
    "name": "Asha",
    "line1": "1 MG Road",
    "city": "Bengaluru",
    "state": "KA",
    "postal_code": "560001",
    "country": "IN",
}


class InMemoryCatalog:
    def __init__(self) -> None:
        self.products = {
            "p1": {"id": "p1", "name": "Mug", "price": {"amount": 50000, "currency": "INR"}, "stock": 10},
            "p2": {"id": "p2", "name": "Tea", "price": {"amount": 25000, "currency": "INR"}, "stock": 2},
        }
        self.reservations: dict[str, list[dict[str, Any]]] = {}
        self.released: set[str] = set()
        self.lock = threading.Lock()

    def product(self, product_id: str) -> dict[str, Any]:
        if product_id not in self.products:
            raise NotFound("No product.")
        return self.products[product_id]

    def reserve(self, order_id: str, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        with self.lock:
            if order_id in self.reservations:
                return self.reservations[order_id]
            short = [x["product_id"] for x in lines if self.products[x["product_id"]]["stock"] < x["quantity"]]
            if short:
                raise OutOfStock("short", extra={"products": short})
            for line in lines:
                self.products[line["product_id"]]["stock"] -= line["quantity"]
            reserved = [
                {
                    "product_id": x["product_id"],
                    "name": self.products[x["product_id"]]["name"],
                    "quantity": x["quantity"],
                    "unit_price": self.products[x["product_id"]]["price"],
                }
                for x in lines
            ]
            self.reservations[order_id] = reserved
            return reserved

    def release(self, order_id: str) -> None:
        with self.lock:
            if order_id in self.released or order_id not in self.reservations:
                return
            self.released.add(order_id)
            for line in self.reservations[order_id]:
                self.products[line["product_id"]]["stock"] += line["quantity"]

    def commit(self, order_id: str) -> None:
        pass


class InMemoryPayments:
    OUTCOMES = {
        "pm_card_ok": ("CAPTURED", None),
        "pm_card_declined": ("DECLINED", "card_declined"),
        "pm_card_error": ("FAILED", "provider_error"),
    }

    def __init__(self) -> None:
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: list[tuple[str, int | None]] = []
        self.lock = threading.Lock()

    def verify(self, payment_method: str) -> None:
        if payment_method not in self.OUTCOMES:
            raise ValidationFailed("Unknown payment method.")

    def charge(self, *, order_id: str, user_id: str, amount: int, currency: str, payment_method: str) -> dict[str, Any]:
        with self.lock:
            if order_id not in self.charges:
                status, code = self.OUTCOMES[payment_method]
                self.charges[order_id] = {
                    "id": f"pay_{order_id}",
                    "status": status,
                    "decline_code": code,
                    "amount": {"amount": amount, "currency": currency},
                }
            return self.charges[order_id]

    def refund(self, payment_id: str, *, amount: int | None, idempotency_key: str) -> dict[str, Any]:
        self.refunds.append((payment_id, amount))
        return {"id": "re_1"}


@pytest.fixture
def fakes() -> tuple[InMemoryCatalog, InMemoryPayments]:
    return InMemoryCatalog(), InMemoryPayments()


@pytest.fixture(params=["moto", "dynalite"])
def order_app(
    request: pytest.FixtureRequest,
    make_settings: Callable[..., Settings],
    fakes: tuple[InMemoryCatalog, InMemoryPayments],
) -> Iterator[TestClient]:
    """The order service's DynamoDB adapter against both servers: moto (embedded) and dynalite (full)."""
    catalog, payments = fakes
    settings = make_settings(dynamodb=request.param, outbox_relay_enabled=False)
    app = build_app(settings, catalog=catalog, payments=payments)
    yield from client_for(app)


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


def test_cart_lines_are_checked_against_the_catalog(
    order_app: TestClient, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    cart = order_app.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me).json()
    assert cart["total"] == {"amount": 100000, "currency": "INR"}
    for quantity in (0, 100, 1000, -1, "2", 1.5):
        assert_problem(order_app.put("/api/v1/cart/items/p1", json={"quantity": quantity}, headers=me), 422)
    assert_problem(order_app.put("/api/v1/cart/items/nope", json={"quantity": 1}, headers=me), 422)
    assert_problem(order_app.put("/api/v1/cart/items/p1", json={"quantity": 1, "price": 1}, headers=me), 422)
    assert order_app.get("/api/v1/cart", headers=me).json()["items"][0]["quantity"] == 2
    assert order_app.delete("/api/v1/cart/items/p1", headers=me).json()["items"] == []


def test_paid_checkout_prices_on_the_server_and_clears_the_cart(
    order_app: TestClient, customer: Callable[..., dict[str, str]], fakes: tuple[InMemoryCatalog, InMemoryPayments]
) -> None:
    me = customer()
    order_app.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)
    fakes[0].products["p1"]["price"] = {"amount": 60000, "currency": "INR"}  # repriced after carting

    answer = checkout(order_app, me)

    assert answer.status_code == 201, answer.text
    order = answer.json()
    assert order["status"] == "PAID" and order["total"] == {"amount": 120000, "currency": "INR"}
    assert fakes[0].products["p1"]["stock"] == 8
    assert order_app.get("/api/v1/cart", headers=me).json()["items"] == []
    assert order_app.get(f"/api/v1/orders/{order['id']}", headers=me).json()["status"] == "PAID"


@pytest.mark.parametrize("method", ["pm_card_declined", "pm_card_error"])
def test_failed_payment_releases_the_stock(
    order_app: TestClient,
    customer: Callable[..., dict[str, str]],
    fakes: tuple[InMemoryCatalog, InMemoryPayments],
    method: str,
) -> None:
    me = customer()
    order_app.put("/api/v1/cart/items/p2", json={"quantity": 2}, headers=me)
    answer = checkout(order_app, me, method=method)
    assert answer.status_code == 201 and answer.json()["status"] == "PAYMENT_FAILED"
    assert fakes[0].products["p2"]["stock"] == 2
    assert order_app.get("/api/v1/cart", headers=me).json()["items"], "a failed payment keeps the cart"


# Concurrency is proved on dynalite (as on DynamoDB): moto does not make a conditional write atomic
# under concurrent requests (measured: 9 rounds in 100 of five racing conditional updates let two
# through), so on moto the race itself, not the code, decides this test.
@pytest.mark.parametrize("order_app", ["dynalite"], indirect=True)
def test_same_key_concurrently_gives_one_order_and_equal_answers(
    order_app: TestClient, customer: Callable[..., dict[str, str]], fakes: tuple[InMemoryCatalog, InMemoryPayments]
) -> None:
    me = customer()
    order_app.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    answers: list[Any] = []
    threads = [threading.Thread(target=lambda: answers.append(checkout(order_app, me, key="same"))) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {a.status_code for a in answers} == {201}
    assert len({a.text for a in answers}) == 1
    assert len(fakes[1].charges) == 1 and fakes[0].products["p1"]["stock"] == 9
    assert len(order_app.get("/api/v1/orders", headers=me).json()["items"]) == 1


def test_same_key_with_another_body_is_refused(order_app: TestClient, customer: Callable[..., dict[str, str]]) -> None:
    me = customer()
    order_app.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    assert checkout(order_app, me, key="k").status_code == 201
    assert_problem(checkout(order_app, me, key="k", method="pm_card_declined"), 422)


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
    order_app: TestClient,
    customer: Callable[..., dict[str, str]],
    fakes: tuple[InMemoryCatalog, InMemoryPayments],
    key: str | None,
    body: dict[str, Any],
    status: int,
) -> None:
    me = customer()
    order_app.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    headers = dict(me, **({"Idempotency-Key": key} if key else {}))
    assert_problem(order_app.post("/api/v1/orders", json=body, headers=headers), status)
    assert fakes[0].products["p1"]["stock"] == 10 and not fakes[0].reservations
    assert order_app.get("/api/v1/orders", headers=me).json()["items"] == []


def test_empty_cart_and_out_of_stock(order_app: TestClient, customer: Callable[..., dict[str, str]]) -> None:
    me = customer()
    assert_problem(checkout(order_app, me), 422)
    order_app.put("/api/v1/cart/items/p2", json={"quantity": 3}, headers=me)
    body = assert_problem(checkout(order_app, me, key="k2"), 409)
    assert body["products"] == ["p2"]


def test_nobody_reads_or_cancels_another_users_order(
    order_app: TestClient, customer: Callable[..., dict[str, str]], fakes: tuple[InMemoryCatalog, InMemoryPayments]
) -> None:
    owner, stranger, admin = customer(), customer(), customer("admin")
    order_app.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=owner)
    order = checkout(order_app, owner).json()
    assert_problem(order_app.get(f"/api/v1/orders/{order['id']}", headers=stranger), 404)
    assert_problem(order_app.post(f"/api/v1/orders/{order['id']}/cancel", headers=stranger), 404)
    assert order_app.get(f"/api/v1/orders/{order['id']}", headers=admin).status_code == 200

    cancelled = order_app.post(f"/api/v1/orders/{order['id']}/cancel", headers=owner)
    assert cancelled.json()["status"] == "CANCELLED"
    assert fakes[1].refunds == [(order["payment_id"], None)] and fakes[0].products["p1"]["stock"] == 10
    assert_problem(order_app.post(f"/api/v1/orders/{order['id']}/fulfil", headers=admin), 409)


def test_order_history_is_paginated_newest_first(
    order_app: TestClient, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    ids = []
    for n in range(5):
        order_app.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
        ids.append(checkout(order_app, me, key=f"k{n}").json()["id"])
    seen, cursor = [], None
    while True:
        page = order_app.get(
            "/api/v1/orders", params={"limit": 2, **({"cursor": cursor} if cursor else {})}, headers=me
        ).json()
        seen += [o["id"] for o in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == list(reversed(ids))
    assert_problem(order_app.get("/api/v1/orders", params={"cursor": "nonsense"}, headers=me), 400)


def test_outbox_holds_every_event_until_the_relay_sends_it(
    order_app: TestClient, customer: Callable[..., dict[str, str]], tmp_path: Any
) -> None:
    from cloudshop.stream import FileEventLog
    from eks_services.order.relay import OutboxRelay

    me = customer()
    order_app.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    order = checkout(order_app, me).json()
    relay: OutboxRelay = order_app.app.state.relay  # type: ignore[attr-defined]
    log = FileEventLog(tmp_path)
    relay.publisher, relay.queue_url = log, ""
    while relay.run_once():
        pass
    mine = [e for e in log.read("orders") if e["data"]["order_id"] == order["id"]]  # type: ignore[index]
    assert [e["event_type"] for e in mine] == ["order.created", "order.paid"]
    assert not [e for e in relay.orders.pending_events() if e["order_id"] == order["id"]]
    assert (
        "outbox_pending"
        not in relay.orders.client.get_item(TableName=relay.orders.orders_table, Key={"order_id": {"S": order["id"]}})[
            "Item"
        ]
    )


def test_a_cart_holds_at_most_fifty_products_but_quantities_can_still_change(
    order_app: TestClient, customer: Callable[..., dict[str, str]], fakes: tuple[InMemoryCatalog, InMemoryPayments]
) -> None:
    me = customer()
    for n in range(51):
        fakes[0].products[f"x{n}"] = {
            "id": f"x{n}",
            "name": f"X{n}",
            "price": {"amount": 100, "currency": "INR"},
            "stock": 5,
        }
    for n in range(50):
        assert order_app.put(f"/api/v1/cart/items/x{n}", json={"quantity": 1}, headers=me).status_code == 200
    assert_problem(order_app.put("/api/v1/cart/items/x50", json={"quantity": 1}, headers=me), 409)
    assert order_app.put("/api/v1/cart/items/x0", json={"quantity": 3}, headers=me).status_code == 200
    assert len(order_app.get("/api/v1/cart", headers=me).json()["items"]) == 50


def test_payment_service_down_nothing_lost_nothing_charged_twice(
    order_app: TestClient, customer: Callable[..., dict[str, str]], fakes: tuple[InMemoryCatalog, InMemoryPayments]
) -> None:
    """Given the payment service fails after the order is written, the buyer gets a 503 and the stock
    stays reserved; a retry with the same key, once payments are back, completes it with one charge."""
    catalog, payments = fakes
    me = customer()
    order_app.put("/api/v1/cart/items/p1", json={"quantity": 2}, headers=me)
    real_charge = payments.charge

    def unavailable(**_: Any) -> dict[str, Any]:
        raise DependencyUnavailable("The payment service is unavailable; try again.")

    payments.charge = unavailable  # type: ignore[method-assign]
    assert_problem(checkout(order_app, me, key="k-down"), 503)
    pending = order_app.get("/api/v1/orders", headers=me).json()["items"]
    assert [o["status"] for o in pending] == ["PENDING_PAYMENT"] and catalog.products["p1"]["stock"] == 8

    payments.charge = real_charge  # type: ignore[method-assign]
    retried = checkout(order_app, me, key="k-down")

    assert retried.status_code == 201 and retried.json()["status"] == "PAID"
    assert retried.json()["id"] == pending[0]["id"] and len(payments.charges) == 1
    assert catalog.products["p1"]["stock"] == 8


def test_abandoned_checkouts_are_settled_by_the_sweeper(
    order_app: TestClient, customer: Callable[..., dict[str, str]], fakes: tuple[InMemoryCatalog, InMemoryPayments]
) -> None:
    catalog, payments = fakes
    ok_buyer, declined_buyer = customer(), customer()
    for who in (ok_buyer, declined_buyer):
        order_app.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=who)
    real_charge = payments.charge

    def unavailable(**_: Any) -> dict[str, Any]:
        raise DependencyUnavailable("down")

    payments.charge = unavailable  # type: ignore[method-assign]
    assert_problem(checkout(order_app, ok_buyer, key="a"), 503)
    assert_problem(checkout(order_app, declined_buyer, key="b", method="pm_card_declined"), 503)
    service = order_app.app.state.checkout  # type: ignore[attr-defined]
    assert service.settle_abandoned(older_than_seconds=0) == 0, "still down: nothing settles, nothing is lost"

    payments.charge = real_charge  # type: ignore[method-assign]
    service.settle_abandoned(older_than_seconds=0)

    statuses = {
        who["Authorization"]: order_app.get("/api/v1/orders", headers=who).json()["items"][0]["status"]
        for who in (ok_buyer, declined_buyer)
    }
    assert statuses == {ok_buyer["Authorization"]: "PAID", declined_buyer["Authorization"]: "PAYMENT_FAILED"}
    assert catalog.products["p1"]["stock"] == 9, "the declined order's unit went back on the shelf"
    assert service.settle_abandoned(older_than_seconds=0) == 0, "settled orders leave the index"
