"""Checkout through the gateway and every real service: PostgreSQL, Kafka, moto (DynamoDB, S3, SQS,
SES), each service its own uvicorn process — the platform of `cloudshop up --profile full`."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import httpx
import pytest
from kafka import KafkaConsumer

from tests.fixtures.platform import RunningPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

ADDRESS = {
    "name": "Asha",
    "line1": "1 MG Road",
    "city": "Bengaluru",
    "state": "KA",
    "postal_code": "560001",
    "country": "IN",
}


def auth(customer: dict[str, str]) -> dict[str, str]:
    return {"Authorization": customer["Authorization"]}


def new_product(platform: RunningPlatform, http: httpx.Client, *, stock: int, price: int = 49900) -> str:
    answer = http.post(
        "/api/v1/products",
        headers=platform.admin(http),
        json={
            "name": f"E2E item {uuid.uuid4().hex[:6]}",
            "description": "",
            "category": "toys",
            "price": {"amount": price, "currency": "INR"},
            "stock": stock,
        },
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def stock(http: httpx.Client, product_id: str) -> int:
    return int(http.get(f"/api/v1/products/{product_id}").json()["stock"])


def checkout(
    http: httpx.Client, customer: dict[str, str], *, key: str | None = None, method: str = "pm_card_ok"
) -> httpx.Response:
    headers = auth(customer) | {"Idempotency-Key": key or uuid.uuid4().hex}
    return http.post("/api/v1/orders", headers=headers, json={"shipping_address": ADDRESS, "payment_method": method})


def eventually(probe: Callable[[], Any], *, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"timed out waiting for {what}")


def kafka_events(
    platform: RunningPlatform, *, order_ids: set[str], event_type: str, timeout: float = 60.0
) -> list[dict[str, Any]]:
    """Read the `orders` topic from the start until every order has its event (or time runs out)."""
    consumer = KafkaConsumer(
        "orders",
        bootstrap_servers=platform.kafka.bootstrap_servers,
        group_id=f"e2e-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for message in consumer:
                event = json.loads(message.value)
                if event["event_type"] == event_type and event["data"]["order_id"] in order_ids:
                    assert message.key.decode() == event["data"]["order_id"]
                    seen.append(event)
            if {e["data"]["order_id"] for e in seen} >= order_ids:
                break
    finally:
        consumer.close()
    return seen


def test_happy_path_pays_reduces_stock_publishes_notifies_and_invoices(platform: RunningPlatform) -> None:
    ses = boto3.client("ses", endpoint_url=platform.settings.aws_endpoint_url, region_name=platform.settings.aws_region)
    sent_before = ses.get_send_quota()["SentLast24Hours"]
    with platform.client() as http:
        buyer = platform.new_customer(http)
        product = new_product(platform, http, stock=5, price=129900)
        assert http.put(f"/api/v1/cart/items/{product}", json={"quantity": 2}, headers=auth(buyer)).status_code == 200

        answer = checkout(http, buyer)

        assert answer.status_code == 201, answer.text
        order = answer.json()
        assert order["status"] == "PAID" and order["total"] == {"amount": 259800, "currency": "INR"}
        assert stock(http, product) == 3
        payment = http.get(f"/api/v1/payments/{order['payment_id']}", headers=auth(buyer)).json()
        assert payment["status"] == "CAPTURED" and payment["amount"] == order["total"]

        events = kafka_events(platform, order_ids={order["id"]}, event_type="order.paid")
        assert events and events[0]["data"]["total"] == order["total"]

        notifications = eventually(
            lambda: [
                n
                for n in http.get("/api/v1/notifications", headers=auth(buyer)).json()["items"]
                if n.get("order_id") == order["id"]
            ],
            what="the order notification (SQS → notification handler)",
        )
        assert any(n["event_type"] == "order.paid" for n in notifications) or notifications
        eventually(lambda: ses.get_send_quota()["SentLast24Hours"] > sent_before, what="the order email")

        invoice = http.get(f"/api/v1/orders/{order['id']}/invoice", headers=auth(buyer))
        assert invoice.status_code == 200, invoice.text
        document = httpx.get(invoice.json()["url"])
        assert document.status_code == 200 and order["id"] in document.text


@pytest.mark.parametrize(("method", "payment_status"), [("pm_card_declined", "DECLINED"), ("pm_card_error", "FAILED")])
def test_failed_payments_restore_stock_and_capture_nothing(
    platform: RunningPlatform, method: str, payment_status: str
) -> None:
    with platform.client() as http:
        buyer = platform.new_customer(http)
        product = new_product(platform, http, stock=4)
        http.put(f"/api/v1/cart/items/{product}", json={"quantity": 3}, headers=auth(buyer))

        order = checkout(http, buyer, method=method).json()

        assert order["status"] == "PAYMENT_FAILED"
        assert stock(http, product) == 4
        if order["payment_id"]:
            payment = http.get(f"/api/v1/payments/{order['payment_id']}", headers=auth(buyer)).json()
            assert payment["status"] == payment_status


def test_five_concurrent_requests_with_one_key_make_one_order_and_one_charge(platform: RunningPlatform) -> None:
    with platform.client() as http:
        buyer = platform.new_customer(http)
        product = new_product(platform, http, stock=10)
        http.put(f"/api/v1/cart/items/{product}", json={"quantity": 1}, headers=auth(buyer))

        with ThreadPoolExecutor(5) as pool:
            answers = list(pool.map(lambda _: checkout(http, buyer, key="one-key"), range(5)))

        assert {a.status_code for a in answers} == {201}
        assert len({json.dumps(a.json(), sort_keys=True) for a in answers}) == 1
        orders = http.get("/api/v1/orders", headers=auth(buyer)).json()["items"]
        assert len(orders) == 1 and stock(http, product) == 9
        assert (
            http.get(f"/api/v1/payments/{orders[0]['payment_id']}", headers=auth(buyer)).json()["status"] == "CAPTURED"
        )


def test_forty_buyers_racing_for_ten_items_on_postgresql(platform: RunningPlatform) -> None:
    assert platform.settings.database_url.startswith("postgresql")
    with platform.client() as http:
        product = new_product(platform, http, stock=10)
        buyers = [platform.new_customer(http) for _ in range(40)]
        for buyer in buyers:
            http.put(f"/api/v1/cart/items/{product}", json={"quantity": 1}, headers=auth(buyer))

        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda b: checkout(http, b), buyers))

        statuses = sorted(a.status_code for a in answers)
        paid = [a for a in answers if a.status_code == 201 and a.json()["status"] == "PAID"]
        assert len(paid) == 10, statuses
        assert statuses.count(409) == 30, statuses
        assert stock(http, product) == 0


def test_events_written_while_kafka_is_down_all_arrive_after_it_returns(platform: RunningPlatform) -> None:
    with platform.client() as http:
        product = new_product(platform, http, stock=50)
        buyers = [platform.new_customer(http) for _ in range(20)]
        for buyer in buyers:
            http.put(f"/api/v1/cart/items/{product}", json={"quantity": 1}, headers=auth(buyer))
        platform.kafka.stop()
        try:
            orders = [checkout(http, buyer).json() for buyer in buyers]
        finally:
            platform.kafka.start()
        assert all(o["status"] == "PAID" for o in orders)

        order_ids = {o["id"] for o in orders}
        events = kafka_events(platform, order_ids=order_ids, event_type="order.paid", timeout=90)
        # At least once on the wire; a consumer that deduplicates by event_id sees each exactly once.
        unique = {e["event_id"]: e for e in events}
        assert {e["data"]["order_id"] for e in unique.values()} == order_ids
        assert len(unique) == 20


def test_nobody_touches_another_users_order_or_payment(platform: RunningPlatform) -> None:
    with platform.client() as http:
        owner, stranger = platform.new_customer(http), platform.new_customer(http)
        product = new_product(platform, http, stock=5)
        http.put(f"/api/v1/cart/items/{product}", json={"quantity": 1}, headers=auth(owner))
        order = checkout(http, owner).json()

        assert http.get(f"/api/v1/orders/{order['id']}", headers=auth(stranger)).status_code == 404
        assert http.post(f"/api/v1/orders/{order['id']}/cancel", headers=auth(stranger)).status_code == 404
        assert http.get(f"/api/v1/payments/{order['payment_id']}", headers=auth(stranger)).status_code == 404
        refund = http.post(
            f"/api/v1/payments/{order['payment_id']}/refunds",
            json={"amount": 100},
            headers=auth(owner) | {"Idempotency-Key": "r1"},
        )
        assert refund.status_code == 403
        admin_refund = http.post(
            f"/api/v1/payments/{order['payment_id']}/refunds",
            json={},
            headers=platform.admin(http) | {"Idempotency-Key": "r1"},
        )
        assert admin_refund.status_code in (200, 201), admin_refund.text
        assert eventually(
            lambda: http.get(f"/api/v1/orders/{order['id']}", headers=auth(owner)).json()["status"] == "REFUNDED",
            what="the order to become REFUNDED",
        )


def test_cancel_refunds_and_returns_stock(platform: RunningPlatform) -> None:
    with platform.client() as http:
        buyer = platform.new_customer(http)
        product = new_product(platform, http, stock=5)
        http.put(f"/api/v1/cart/items/{product}", json={"quantity": 2}, headers=auth(buyer))
        order = checkout(http, buyer).json()
        assert stock(http, product) == 3

        cancelled = http.post(f"/api/v1/orders/{order['id']}/cancel", headers=auth(buyer))

        assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
        assert stock(http, product) == 5
        payment = http.get(f"/api/v1/payments/{order['payment_id']}", headers=auth(buyer)).json()
        assert payment["status"] == "REFUNDED" and payment["refunded"] == order["total"]


@pytest.mark.parametrize(
    ("setup", "key", "method", "status"),
    [
        ("quantity-0", "k", "pm_card_ok", 422),
        ("quantity-1000", "k", "pm_card_ok", 422),
        ("unknown-product", "k", "pm_card_ok", 422),
        ("empty", "k", "pm_card_ok", 422),
        ("ok", None, "pm_card_ok", 422),
        ("ok", "k", "pm_card_unknown", 422),
    ],
)
def test_bad_checkout_input_is_a_4xx_and_writes_nothing(
    platform: RunningPlatform, setup: str, key: str | None, method: str, status: int
) -> None:
    with platform.client() as http:
        buyer = platform.new_customer(http)
        product = new_product(platform, http, stock=5)
        quantities = {"quantity-0": 0, "quantity-1000": 1000}
        if setup in quantities:
            answer = http.put(
                f"/api/v1/cart/items/{product}", json={"quantity": quantities[setup]}, headers=auth(buyer)
            )
            assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
        elif setup == "unknown-product":
            answer = http.put("/api/v1/cart/items/no-such-product", json={"quantity": 1}, headers=auth(buyer))
            assert answer.status_code == 422
        elif setup == "ok":
            http.put(f"/api/v1/cart/items/{product}", json={"quantity": 1}, headers=auth(buyer))

        headers = auth(buyer) | ({"Idempotency-Key": key} if key else {})
        answer = http.post(
            "/api/v1/orders", headers=headers, json={"shipping_address": ADDRESS, "payment_method": method}
        )

        assert answer.status_code == status, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert http.get("/api/v1/orders", headers=auth(buyer)).json()["items"] == []
        assert stock(http, product) == 5
