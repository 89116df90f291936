"""Notification API: a customer reads only their own notifications, newest first, page by page."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloudshop.auth import TokenIssuer
from cloudshop.events import Money, OrderEventDataV1, OrderEventV1
from cloudshop.settings import Settings
from functions.notification.bootstrap import build_app, build_service
from functions.notification.service import NotificationService
from tests.conftest import client_for

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TYPES = [
    "order.created",
    "order.paid",
    "order.fulfilled",
    "order.cancelled",
    "order.refunded",
    "order.payment_failed",
    "order.created",
]


@pytest.fixture
def service(settings: Settings) -> NotificationService:
    return build_service(settings)


@pytest.fixture
def api(settings: Settings, service: NotificationService) -> Iterator[TestClient]:
    yield from client_for(build_app(settings, service=service))


@pytest.fixture
def bearer(key_pair: tuple[str, str]) -> Callable[[str], dict[str, str]]:
    issuer = TokenIssuer(key_pair[0], issuer="cloudshop", access_ttl_seconds=900)

    def headers(user_id: str) -> dict[str, str]:
        token = issuer.access_token(user_id=user_id, role="customer", email="c@example.com", session_id="s1")
        return {"Authorization": f"Bearer {token}"}

    return headers


def notify(service: NotificationService, user_id: str, count: int) -> list[str]:
    """`count` events for one user, a minute apart; returns their event ids, oldest first."""
    ids = []
    for i in range(count):
        data = OrderEventDataV1(
            order_id=str(uuid.uuid4()),
            user_id=user_id,
            status="PAID",
            total=Money(amount=129900, currency="INR"),
            items=1,
            lines=[],
        )
        event = OrderEventV1.new(TYPES[i % len(TYPES)], data, occurred_at=START + timedelta(minutes=i))  # type: ignore[arg-type]
        service.handle(event)
        ids.append(event.event_id)
    return ids


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def assert_problem(answer: Any, status: int) -> None:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    assert answer.json()["status"] == status and "Traceback" not in answer.text


def test_a_customer_pages_through_their_own_notifications_newest_first(
    api: TestClient, service: NotificationService, bearer: Callable[[str], dict[str, str]]
) -> None:
    me, someone_else = new_user(), new_user()
    mine = notify(service, me, 5)
    notify(service, someone_else, 3)

    seen, cursor, pages = [], None, 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/v1/notifications", params=params, headers=bearer(me))
        assert page.status_code == 200, page.text
        seen += [n["id"] for n in page.json()["items"]]
        pages += 1
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break

    assert seen == list(reversed(mine)) and pages == 3


def test_a_page_that_ends_exactly_at_the_last_notification_has_no_next_cursor(
    api: TestClient, service: NotificationService, bearer: Callable[[str], dict[str, str]]
) -> None:
    me = new_user()
    notify(service, me, 4)
    first = api.get("/api/v1/notifications", params={"limit": 2}, headers=bearer(me)).json()
    second = api.get(
        "/api/v1/notifications", params={"limit": 2, "cursor": first["next_cursor"]}, headers=bearer(me)
    ).json()
    assert len(second["items"]) == 2 and second["next_cursor"] is None


def test_a_notification_reads_as_the_contract_says(
    api: TestClient, service: NotificationService, bearer: Callable[[str], dict[str, str]]
) -> None:
    me = new_user()
    [event_id] = notify(service, me, 1)

    [item] = api.get("/api/v1/notifications", headers=bearer(me)).json()["items"]

    assert item["id"] == event_id and item["event_type"] == "order.created"
    assert item["title"] == "Order received" and "INR 1,299.00" in item["message"]
    assert datetime.fromisoformat(item["occurred_at"]) == START and datetime.fromisoformat(item["created_at"])


def test_a_customer_without_notifications_gets_an_empty_page(
    api: TestClient, bearer: Callable[[str], dict[str, str]]
) -> None:
    answer = api.get("/api/v1/notifications", headers=bearer(new_user()))
    assert answer.status_code == 200 and answer.json() == {"items": [], "next_cursor": None}


def test_a_cursor_cannot_reach_into_another_customers_notifications(
    api: TestClient, service: NotificationService, bearer: Callable[[str], dict[str, str]]
) -> None:
    victim, me = new_user(), new_user()
    notify(service, victim, 3)
    cursor = api.get("/api/v1/notifications", params={"limit": 1}, headers=bearer(victim)).json()["next_cursor"]

    answer = api.get("/api/v1/notifications", params={"cursor": cursor}, headers=bearer(me))

    assert answer.status_code == 200 and answer.json()["items"] == []


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"limit": 0}, 422),
        ({"limit": 101}, 422),
        ({"limit": "ten"}, 422),
        ({"cursor": "not-a-cursor!"}, 400),
        ({"cursor": "e30"}, 400),  # base64 of "{}"
        ({"cursor": "x" * 501}, 422),
    ],
)
def test_bad_queries_get_a_problem(
    api: TestClient, bearer: Callable[[str], dict[str, str]], params: dict[str, Any], status: int
) -> None:
    assert_problem(api.get("/api/v1/notifications", params=params, headers=bearer(new_user())), status)


def test_notifications_need_an_access_token(api: TestClient) -> None:
    assert_problem(api.get("/api/v1/notifications"), 401)
    assert_problem(api.get("/api/v1/notifications", headers={"Authorization": "Bearer forged"}), 401)


def test_readiness_checks_the_notifications_table(api: TestClient) -> None:
    answer = api.get("/readyz")
    assert answer.status_code == 200 and answer.json()["checks"] == ["notifications"]
