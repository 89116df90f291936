"""Issue 10, "Money and stock", on the full profile: every service its own process on PostgreSQL,
dynalite, Kafka and moto, reached through the gateway. The races run many rounds on the real
servers, where conditional writes are atomic (dynalite, as DynamoDB) and stock is a PostgreSQL row.
"""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from cloudshop.money import AMOUNT_MAX
from tests.e2e.test_checkout_flow import auth, checkout, eventually, new_product, stock
from tests.fixtures.platform import RunningPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

ROUNDS = 20


def at_once(*calls: Any) -> list[httpx.Response]:
    """Run the calls on threads released together, so they reach the services as close as can be."""
    start = threading.Barrier(len(calls))

    def run(call: Any) -> httpx.Response:
        start.wait()
        answer: httpx.Response = call()
        return answer

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def test_cancel_and_fulfil_racing_never_end_inconsistent(platform: RunningPlatform) -> None:
    """A PAID order cancelled by its buyer while an admin fulfils it: exactly one wins, and the order,
    its payment and the stock always tell the same story (cancelled: refunded, stock back; fulfilled:
    captured, stock gone). The cancel used to refund and release before its conditional write, so the
    order could end FULFILLED with its payment REFUNDED and its stock back on the shelf."""
    with platform.client() as http, platform.client() as other:
        admin = platform.admin(http)
        buyer = platform.new_customer(http)
        product = new_product(platform, http, stock=ROUNDS * 2)
        outcomes: list[str] = []
        for round_ in range(ROUNDS):
            assert (
                http.put(f"/api/v1/cart/items/{product}", json={"quantity": 2}, headers=auth(buyer)).status_code == 200
            )
            before = stock(http, product)
            order = checkout(http, buyer, key=f"race-{round_}-{uuid.uuid4().hex}").json()
            assert order["status"] == "PAID", order

            cancel, fulfil = at_once(
                lambda: http.post(f"/api/v1/orders/{order['id']}/cancel", headers=auth(buyer)),
                lambda: other.post(f"/api/v1/orders/{order['id']}/fulfil", headers=admin),
            )

            status = http.get(f"/api/v1/orders/{order['id']}", headers=auth(buyer)).json()["status"]
            payment = http.get(f"/api/v1/payments/{order['payment_id']}", headers=auth(buyer)).json()
            story = (status, cancel.status_code, fulfil.status_code, payment["status"], stock(http, product))
            if status == "CANCELLED":
                assert story == ("CANCELLED", 200, 409, "REFUNDED", before), story
                assert payment["refunded"] == order["total"]
            else:
                assert story == ("FULFILLED", 409, 200, "CAPTURED", before - 2), story
                assert payment["refunded"]["amount"] == 0
            outcomes.append(status)
    assert len(outcomes) == ROUNDS


def test_five_parallel_checkouts_of_one_cart_with_five_keys_buy_it_once(platform: RunningPlatform) -> None:
    """Each round, one cart checked out from five tabs at once, each with its own Idempotency-Key:
    one order, one capture, the stock taken once; the other tabs are told the cart is taken."""
    with platform.client() as http:
        product = new_product(platform, http, stock=100)
        for _ in range(5):
            buyer = platform.new_customer(http)
            http.put(f"/api/v1/cart/items/{product}", json={"quantity": 3}, headers=auth(buyer))
            before = stock(http, product)

            answers = at_once(*(lambda n=n: checkout(http, buyer, key=f"tab-{n}-{uuid.uuid4().hex}") for n in range(5)))

            paid = [a.json() for a in answers if a.status_code == 201]
            assert len(paid) == 1 and paid[0]["status"] == "PAID", [a.text for a in answers]
            for answer in answers:
                if answer.status_code != 201:
                    problem = answer.json()
                    assert answer.status_code in (409, 422), answer.text
                    assert problem["type"].endswith(("/cart-in-checkout", "/validation")), answer.text
            assert stock(http, product) == before - 3
            orders = http.get("/api/v1/orders", headers=auth(buyer)).json()["items"]
            assert [o["id"] for o in orders] == [paid[0]["id"]]
            payment = http.get(f"/api/v1/payments/{paid[0]['payment_id']}", headers=auth(buyer)).json()
            assert payment["status"] == "CAPTURED" and payment["amount"] == paid[0]["total"]
            assert http.get("/api/v1/cart", headers=auth(buyer)).json()["items"] == []


def test_a_payment_whose_outcome_was_lost_holds_the_stock_and_settles_on_the_retry(platform: RunningPlatform) -> None:
    with platform.client() as http:
        buyer = platform.new_customer(http)
        product = new_product(platform, http, stock=5)
        http.put(f"/api/v1/cart/items/{product}", json={"quantity": 2}, headers=auth(buyer))
        key = uuid.uuid4().hex

        first = checkout(http, buyer, key=key, method="pm_card_unknown_then_ok")

        assert first.status_code == 503 and first.json()["type"].endswith("/payment-outcome-unknown"), first.text
        (pending,) = http.get("/api/v1/orders", headers=auth(buyer)).json()["items"]
        assert pending["status"] == "PENDING_PAYMENT" and stock(http, product) == 3

        retried = checkout(http, buyer, key=key, method="pm_card_unknown_then_ok")

        assert retried.status_code == 201 and retried.json()["status"] == "PAID", retried.text
        assert retried.json()["id"] == pending["id"] and stock(http, product) == 3
        payment = http.get(f"/api/v1/payments/{retried.json()['payment_id']}", headers=auth(buyer)).json()
        assert payment["status"] == "CAPTURED"


def test_an_order_above_the_payment_limit_is_refused_before_reserving(platform: RunningPlatform) -> None:
    with platform.client() as http:
        buyer = platform.new_customer(http)
        products = [new_product(platform, http, stock=200, price=10**10) for _ in range(2)]
        for product in products:
            http.put(f"/api/v1/cart/items/{product}", json={"quantity": 99}, headers=auth(buyer))

        answer = checkout(http, buyer)

        assert answer.status_code == 422, answer.text
        problem = answer.json()
        assert problem["type"].endswith("/order-total-too-large")
        assert problem["limit"] == {"amount": AMOUNT_MAX, "currency": "INR"}
        assert [stock(http, p) for p in products] == [200, 200]
        assert http.get("/api/v1/orders", headers=auth(buyer)).json()["items"] == []


def test_a_fully_refunded_order_cannot_ship_and_becomes_refunded(platform: RunningPlatform) -> None:
    with platform.client() as http:
        admin = platform.admin(http)
        buyer = platform.new_customer(http)
        product = new_product(platform, http, stock=5)
        http.put(f"/api/v1/cart/items/{product}", json={"quantity": 1}, headers=auth(buyer))
        order = checkout(http, buyer).json()
        refund = http.post(
            f"/api/v1/payments/{order['payment_id']}/refunds", json={}, headers=admin | {"Idempotency-Key": "all"}
        )
        assert refund.status_code == 201, refund.text

        refused = http.post(f"/api/v1/orders/{order['id']}/fulfil", headers=admin)

        assert refused.status_code == 409, refused.text
        eventually(
            lambda: http.get(f"/api/v1/orders/{order['id']}", headers=auth(buyer)).json()["status"] == "REFUNDED",
            what="the order to follow its refunded payment",
        )
