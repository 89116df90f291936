"""Cursors come back from the client: a forged or garbled one is a 400 problem on every list, never a
500 (issue 10). Each list reads its cursor through `cloudshop.cursors`, field by field."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloudshop.auth import TokenIssuer
from cloudshop.settings import Settings
from eks_services.order.bootstrap import app_for, build_runtime
from functions.notification.bootstrap import build_app as notification_app
from functions.product.bootstrap import build_app as product_app
from functions.product.bootstrap import build_catalog, migrate_schema
from functions.product.seed import seed_catalog
from tests.conftest import client_for
from tests.helpers import assert_problem
from tests.services.order_fakes import (
    InMemoryCatalog,
    InMemoryEventPublisher,
    InMemoryInvoices,
    InMemoryPaymentEventSource,
    InMemoryPayments,
)


def forge(value: Any) -> str:
    """A cursor as a client would forge one: well-formed base64 of whatever JSON it likes."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


GARBLED = ["!!!", "e30", "bm90IGpzb24", forge([1, 2]), forge("text"), forge(None), "a" * 400]


@pytest.fixture(scope="module")
def bearer(key_pair: tuple[str, str]) -> dict[str, str]:
    issuer = TokenIssuer(key_pair[0], issuer="cloudshop", access_ttl_seconds=600)
    token = issuer.access_token(user_id="u-cursor", role="customer", email="c@example.com", session_id="s")
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def products(make_settings: Callable[..., Settings], tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(database_url=f"sqlite:///{tmp_path_factory.mktemp('cursors') / 'p.db'}")
    catalog = build_catalog(settings)
    migrate_schema(catalog.products.engine)
    seed_catalog(catalog)
    yield from client_for(product_app(settings))


@pytest.mark.parametrize(
    ("sort", "cursor"),
    [
        # The date was parsed outside the decoder's `try`: a 500.
        ("newest", forge({"s": "newest", "v": "yesterday", "id": "p"})),
        ("newest", forge({"s": "newest", "v": 5, "id": "p"})),
        ("newest", forge({"s": "newest", "v": "2026-01-01T00:00:00", "id": "p"})),
        # A price that is no integer the column holds: a 500 from the database (a 502 at the gateway).
        ("price_asc", forge({"s": "price_asc", "v": [1], "id": "p"})),
        ("price_asc", forge({"s": "price_asc", "v": {"a": 1}, "id": "p"})),
        ("price_asc", forge({"s": "price_asc", "v": None, "id": "p"})),
        ("price_desc", forge({"s": "price_desc", "v": True, "id": "p"})),
        ("price_asc", forge({"s": "price_asc", "v": 10**30, "id": "p"})),
        ("price_asc", forge({"s": "price_asc", "v": 1e308, "id": "p"})),
        ("name", forge({"s": "name", "v": ["a"], "id": "p"})),
        ("name", forge({"s": "name", "v": "a", "id": {"x": 1}})),
        ("name", forge({"s": "name", "v": "a", "id": "p", "extra": 1})),
        ("price_asc", forge({"s": "newest", "v": 100, "id": "p"})),
        *(("newest", cursor) for cursor in GARBLED),
    ],
)
def test_a_forged_product_cursor_is_a_400(products: TestClient, sort: str, cursor: str) -> None:
    answer = products.get("/api/v1/products", params={"sort": sort, "cursor": cursor})
    assert_problem(answer, 400)


def test_the_product_cursors_the_catalog_writes_still_page_every_sort(products: TestClient) -> None:
    for sort in ("newest", "price_asc", "price_desc", "name"):
        first = products.get("/api/v1/products", params={"sort": sort, "limit": 5}).json()
        second = products.get("/api/v1/products", params={"sort": sort, "limit": 5, "cursor": first["next_cursor"]})
        assert second.status_code == 200, (sort, second.text)
        assert not {p["id"] for p in first["items"]} & {p["id"] for p in second.json()["items"]}


@pytest.fixture(scope="module")
def orders(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    settings = make_settings(
        outbox_relay_enabled=False, abandoned_order_sweeper_enabled=False, payment_events_consumer_enabled=False
    )
    runtime = build_runtime(
        settings,
        catalog=InMemoryCatalog({}),
        payments=InMemoryPayments(),
        invoices=InMemoryInvoices(),
        publisher=InMemoryEventPublisher(),
        payment_events=InMemoryPaymentEventSource(),
    )
    yield from client_for(app_for(runtime))


STAMP = "2026-01-01T00:00:00+00:00"


@pytest.mark.parametrize(
    "cursor",
    [
        # `user_id` not a DynamoDB attribute: a 500.
        forge({"user_id": "x"}),
        forge({"user_id": {"S": "u-cursor"}}),
        forge({"user_id": {"S": "u-cursor"}, "order_id": {"S": "o"}, "created_at": {"N": "1"}}),
        forge({"user_id": {"S": "u-cursor"}, "order_id": {"S": "o"}, "created_at": {"S": "soon"}}),
        forge({"user_id": {"S": "u-cursor"}, "order_id": {"S": "o", "N": "1"}, "created_at": {"S": STAMP}}),
        forge({"user_id": {"S": "u-cursor"}, "order_id": {"S": ["o"]}, "created_at": {"S": STAMP}}),
        forge({"user_id": {"S": "someone-else"}, "order_id": {"S": "o"}, "created_at": {"S": STAMP}}),
        *GARBLED,
    ],
)
def test_a_forged_order_history_cursor_is_a_400(orders: TestClient, bearer: dict[str, str], cursor: str) -> None:
    assert_problem(orders.get("/api/v1/orders", params={"cursor": cursor}, headers=bearer), 400)


def test_a_well_formed_order_history_cursor_of_ones_own_is_taken(orders: TestClient, bearer: dict[str, str]) -> None:
    cursor = forge({"user_id": {"S": "u-cursor"}, "order_id": {"S": "ord_1"}, "created_at": {"S": STAMP}})
    answer = orders.get("/api/v1/orders", params={"cursor": cursor}, headers=bearer)
    assert answer.status_code == 200 and answer.json()["items"] == []


@pytest.fixture(scope="module")
def notifications(make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    yield from client_for(notification_app(make_settings()))


@pytest.mark.parametrize("cursor", [forge({"sk": 5}), forge({"sk": ""}), forge({"sk": "x" * 300}), *GARBLED])
def test_a_forged_notification_cursor_is_a_400(notifications: TestClient, bearer: dict[str, str], cursor: str) -> None:
    assert_problem(notifications.get("/api/v1/notifications", params={"cursor": cursor}, headers=bearer), 400)
