"""Product service API: the public catalog, admin writes, presigned image uploads and the
all-or-nothing, idempotent stock reservation — on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cloudshop.auth import InternalTokens, TokenIssuer
from cloudshop.settings import Settings
from cloudshop.sql import Engine, Statement
from functions.product.bootstrap import build_app, build_catalog, migrate_schema
from functions.product.model import ReservationLine
from functions.product.seed import seed_catalog
from tests.conftest import client_for
from tests.helpers import assert_problem

PRODUCT = {
    "name": "Tea Kettle",
    "description": "Steel",
    "category": "home",
    "price": {"amount": 149900, "currency": "INR"},
    "stock": 5,
}


@pytest.fixture
def catalog_app(make_settings: Callable[..., Settings], database_url: str) -> Iterator[TestClient]:
    settings = make_settings(database_url=database_url)
    catalog = build_catalog(settings)
    migrate_schema(catalog.products.engine)
    seed_catalog(catalog)
    yield from client_for(build_app(settings))


@pytest.fixture(scope="session")
def tokens(key_pair: tuple[str, str], internal_secrets: dict[str, str]) -> dict[str, dict[str, str]]:
    issuer = TokenIssuer(key_pair[0], issuer="cloudshop", access_ttl_seconds=600)

    def bearer(role: str) -> dict[str, str]:
        token = issuer.access_token(user_id=f"{role}-1", role=role, email=f"{role}@x.io", session_id="s")
        return {"Authorization": f"Bearer {token}"}

    service = InternalTokens(internal_secrets, service="order").token("product")
    return {"admin": bearer("admin"), "customer": bearer("customer"), "service": {"x-service-token": service}}


def test_catalog_is_seeded_listed_and_paginated_without_repeats(catalog_app: TestClient) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 7, "sort": "price_asc"}
        if cursor:
            params["cursor"] = cursor
        page = catalog_app.get("/api/v1/products", params=params).json()
        seen += [p["id"] for p in page["items"]]
        prices = [p["price"]["amount"] for p in page["items"]]
        assert prices == sorted(prices)
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)) >= 50


def test_search_and_category_filter(catalog_app: TestClient) -> None:
    books = catalog_app.get("/api/v1/products", params={"category": "books", "limit": 100}).json()["items"]
    assert books and all(p["category"] == "books" for p in books)
    found = catalog_app.get("/api/v1/products", params={"q": "KAFKA"}).json()["items"]
    assert [p["name"] for p in found] == ["Kafka: The Definitive Guide"]
    # LIKE wildcards in the query are literal characters, not patterns.
    assert catalog_app.get("/api/v1/products", params={"q": "%"}).json()["items"] == []


def test_admin_creates_updates_and_deletes(catalog_app: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    created = catalog_app.post("/api/v1/products", json=PRODUCT, headers=tokens["admin"])
    assert created.status_code == 201, created.text
    product = created.json()
    assert product["price"] == {"amount": 149900, "currency": "INR"} and product["stock"] == 5

    patched = catalog_app.patch(
        f"/api/v1/products/{product['id']}", json={"stock_adjustment": 3, "name": "Kettle"}, headers=tokens["admin"]
    )
    assert patched.json()["stock"] == 8 and patched.json()["name"] == "Kettle"
    assert_problem(
        catalog_app.patch(f"/api/v1/products/{product['id']}", json={"stock_adjustment": -9}, headers=tokens["admin"]),
        409,
    )

    assert catalog_app.delete(f"/api/v1/products/{product['id']}", headers=tokens["admin"]).status_code == 204
    assert_problem(catalog_app.get(f"/api/v1/products/{product['id']}"), 404)


def test_customers_and_anonymous_cannot_write_the_catalog(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    assert_problem(catalog_app.post("/api/v1/products", json=PRODUCT, headers=tokens["customer"]), 403)
    assert_problem(catalog_app.post("/api/v1/products", json=PRODUCT), 401)
    some_id = catalog_app.get("/api/v1/products").json()["items"][0]["id"]
    assert_problem(catalog_app.delete(f"/api/v1/products/{some_id}", headers=tokens["customer"]), 403)
    # A customer token is no service token.
    assert_problem(
        catalog_app.post(
            "/api/v1/internal/reservations",
            headers=tokens["customer"],
            json={"order_id": "o", "lines": [{"product_id": some_id, "quantity": 1}]},
        ),
        401,
    )


@pytest.mark.parametrize(
    "change",
    [
        {"price": {"amount": -1, "currency": "INR"}},
        {"price": {"amount": 10**12, "currency": "INR"}},
        {"price": {"amount": 10.5, "currency": "INR"}},
        {"price": {"amount": "100", "currency": "INR"}},
        {"price": {"amount": 100, "currency": "USD"}},
        {"stock": -1},
        {"stock": 10**9},
        {"name": "x" * 201},
        {"category": "Bad Category!"},
        {"colour": "red"},
    ],
)
def test_bad_products_are_refused_and_nothing_is_written(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]], change: dict[str, Any]
) -> None:
    before = len(catalog_app.get("/api/v1/products", params={"limit": 100, "category": "home"}).json()["items"])
    answer = catalog_app.post("/api/v1/products", json={**PRODUCT, **change}, headers=tokens["admin"])
    assert_problem(answer, 422)
    after = len(catalog_app.get("/api/v1/products", params={"limit": 100, "category": "home"}).json()["items"])
    assert before == after


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 1000}, {"cursor": "garbage"}, {"sort": "random"}, {"category": "UPPER"}, {"q": "x" * 101}],
)
def test_bad_list_queries_get_4xx(catalog_app: TestClient, params: dict[str, Any]) -> None:
    answer = catalog_app.get("/api/v1/products", params=params)
    assert 400 <= answer.status_code < 500 and answer.headers["content-type"].startswith("application/problem+json")


def test_image_upload_by_presigned_post(catalog_app: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    product = catalog_app.get("/api/v1/products").json()["items"][0]
    answer = catalog_app.post(
        f"/api/v1/products/{product['id']}/image", json={"content_type": "image/png"}, headers=tokens["admin"]
    )
    assert answer.status_code == 201, answer.text
    upload = answer.json()["upload"]
    posted = httpx.post(upload["url"], data=upload["fields"], files={"file": ("a.png", b"\x89PNG fake", "image/png")})
    assert posted.status_code in (200, 204), posted.text
    image_url = catalog_app.get(f"/api/v1/products/{product['id']}").json()["image_url"]
    assert httpx.get(image_url).content == b"\x89PNG fake"
    assert_problem(
        catalog_app.post(
            f"/api/v1/products/{product['id']}/image", json={"content_type": "text/html"}, headers=tokens["admin"]
        ),
        422,
    )


def reserve(app: TestClient, tokens: dict[str, dict[str, str]], order_id: str, lines: list[tuple[str, int]]) -> Any:
    return app.post(
        "/api/v1/internal/reservations",
        headers=tokens["service"],
        json={"order_id": order_id, "lines": [{"product_id": p, "quantity": q} for p, q in lines]},
    )


def new_product(app: TestClient, tokens: dict[str, dict[str, str]], stock: int) -> str:
    return str(app.post("/api/v1/products", json={**PRODUCT, "stock": stock}, headers=tokens["admin"]).json()["id"])


def stock_of(app: TestClient, product_id: str) -> int:
    return int(app.get(f"/api/v1/products/{product_id}").json()["stock"])


def test_reservation_is_all_or_nothing_and_names_the_short_products(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    plenty, scarce = new_product(catalog_app, tokens, 10), new_product(catalog_app, tokens, 1)
    answer = reserve(catalog_app, tokens, "ord-a", [(plenty, 2), (scarce, 2)])
    body = assert_problem(answer, 409)
    assert body["products"] == [scarce]
    assert (stock_of(catalog_app, plenty), stock_of(catalog_app, scarce)) == (10, 1)

    unknown = reserve(catalog_app, tokens, "ord-b", [(plenty, 1), ("no-such-product", 1)])
    assert assert_problem(unknown, 422)["products"] == ["no-such-product"]
    assert stock_of(catalog_app, plenty) == 10


def test_reservation_is_idempotent_by_order_and_release_returns_stock_once(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    product = new_product(catalog_app, tokens, 5)
    first = reserve(catalog_app, tokens, "ord-1", [(product, 2)])
    again = reserve(catalog_app, tokens, "ord-1", [(product, 2)])
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json() == again.json()
    assert first.json()["lines"][0]["unit_price"] == {"amount": 149900, "currency": "INR"}
    assert stock_of(catalog_app, product) == 3
    assert_problem(reserve(catalog_app, tokens, "ord-1", [(product, 3)]), 409)

    for _ in range(2):
        catalog_app.post("/api/v1/internal/reservations/ord-1/release", headers=tokens["service"])
    assert stock_of(catalog_app, product) == 5


def test_concurrent_reservations_never_oversell(catalog_app: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    product = new_product(catalog_app, tokens, 7)
    results: list[int] = []
    lock = threading.Lock()

    def buy() -> None:
        answer = reserve(catalog_app, tokens, f"ord-{uuid.uuid4().hex}", [(product, 1)])
        with lock:
            results.append(answer.status_code)

    threads = [threading.Thread(target=buy) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [201] * 7 + [409] * 13
    assert stock_of(catalog_app, product) == 0


def test_a_reservation_expires_only_uncommitted_and_only_after_its_ttl(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """Issue 10: stock reserved for an order that was never written was held for ever. A reservation
    now carries an expiry; the order service's sweeper commits or releases what `expired` lists."""
    settings = make_settings(database_url=database_url, reservation_ttl_seconds=600)
    catalog = build_catalog(settings)
    migrate_schema(catalog.products.engine)
    product = catalog.create(name="Lamp", description="", category="home", price_amount=1000, currency="INR", stock=10)

    for order_id in ("ord-kept", "ord-lost", "ord-sold"):
        catalog.reserve(order_id, [ReservationLine(product.id, 1)])
    catalog.products.commit("ord-kept")
    catalog.products.release("ord-sold")
    now = datetime.now(UTC)

    assert catalog.products.expired(now=now, limit=10) == [], "not before its expiry"
    assert catalog.products.expired(now=now + timedelta(seconds=601), limit=10) == ["ord-lost"]

    assert catalog.products.release("ord-lost")
    assert catalog.products.get(product.id).stock == 9  # only the committed one is held
    catalog.reserve("ord-lost", [ReservationLine(product.id, 1)])  # asked again: taken again
    assert catalog.products.get(product.id).stock == 8


def test_text_with_a_nul_character_is_a_422_on_every_database(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    # PostgreSQL cannot store a NUL (a 500 before issue 10), SQLite would: refused alike on both.
    created = catalog_app.post("/api/v1/products", json={**PRODUCT, "name": "Zqx\x00Kettle"}, headers=tokens["admin"])
    searched = catalog_app.get("/api/v1/products", params={"q": "kettle\x00"})

    assert_problem(created, 422)
    assert_problem(searched, 422)
    assert catalog_app.get("/api/v1/products", params={"q": "Zqx"}).json()["items"] == []


def test_a_patch_cannot_null_a_field(catalog_app: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    product = catalog_app.post("/api/v1/products", json=PRODUCT, headers=tokens["admin"]).json()
    for field in ("price", "name", "category", "description", "stock_adjustment"):
        answer = catalog_app.patch(f"/api/v1/products/{product['id']}", json={field: None}, headers=tokens["admin"])
        assert_problem(answer, 422)
    assert catalog_app.get(f"/api/v1/products/{product['id']}").json()["price"] == PRODUCT["price"]


@contextmanager
def statement_verbs(engine: Engine) -> Iterator[list[str]]:
    """The first word of every statement the engine sends inside the block (BEGIN included), as the
    engine's hooks see it."""
    verbs: list[str] = []

    def record(statement: Statement) -> None:
        verbs.append(statement.sql.split(None, 1)[0].upper())

    engine.hooks.append(record)
    try:
        yield verbs
    finally:
        engine.hooks.remove(record)


def test_a_commit_that_commits_is_one_statement_and_a_repeat_or_a_release_answers_the_status(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """Issue 9: every checkout commits its reservation; the status it answers comes from the update,
    and only a commit that changes nothing (a repeat) reads it."""
    settings = make_settings(database_url=database_url)
    catalog = build_catalog(settings)
    migrate_schema(catalog.products.engine)
    product = catalog.create(name="Lamp", description="", category="home", price_amount=1000, currency="INR", stock=10)
    catalog.reserve("ord-commit", [ReservationLine(product.id, 1)])
    with statement_verbs(catalog.products.engine) as statements:
        assert catalog.commit_reservation("ord-commit") == "committed"
    assert [verb for verb in statements if verb != "BEGIN"] == ["UPDATE"]

    assert catalog.commit_reservation("ord-commit") == "committed"
    assert catalog.commit_reservation("ord-none") is None
    assert catalog.release_reservation("ord-commit") == ("released", True)
    assert catalog.release_reservation("ord-commit") == ("released", False)
    assert catalog.commit_reservation("ord-commit") == "released"
    assert catalog.products.get(product.id).stock == 10


def test_a_first_reservation_reads_nothing_and_twins_of_one_order_take_the_stock_once(
    make_settings: Callable[..., Settings], database_url: str
) -> None:
    """Issue 9: the reservation's insert is its own check. A first reservation sends its three
    writes and no read; repeats of the order, even concurrent ones, answer the one reservation."""
    settings = make_settings(database_url=database_url)
    catalog = build_catalog(settings)
    migrate_schema(catalog.products.engine)
    product = catalog.create(name="Lamp", description="", category="home", price_amount=1000, currency="INR", stock=10)
    with statement_verbs(catalog.products.engine) as statements:
        catalog.reserve("ord-first", [ReservationLine(product.id, 1)])
    # SQLite sends its BEGIN IMMEDIATE as a statement; psycopg opens the transaction itself.
    assert [verb for verb in statements if verb != "BEGIN"] == ["INSERT", "UPDATE", "INSERT"]

    answers: list[bool] = []
    lock = threading.Lock()

    def twin() -> None:
        _, created = catalog.products.reserve("ord-twin", [ReservationLine(product.id, 2)])
        with lock:
            answers.append(created)

    threads = [threading.Thread(target=twin) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 7 + [True]
    assert catalog.products.get(product.id).stock == 10 - 1 - 2


# --- batch commit: the order service commits its paid orders in one call ---------------------------


def commit_batch(app: TestClient, headers: dict[str, str], body: Any) -> httpx.Response:
    return app.post("/api/v1/internal/reservations/commit", headers=headers, json=body)


def test_a_batch_commit_commits_the_reserved_ones_and_answers_how_many(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    # Given two reserved orders, one released, and an id nobody reserved
    product = new_product(catalog_app, tokens, 10)
    for order_id in ("ord-b1", "ord-b2", "ord-b3"):
        assert reserve(catalog_app, tokens, order_id, [(product, 1)]).status_code == 201
    catalog_app.post("/api/v1/internal/reservations/ord-b3/release", headers=tokens["service"])
    batch = {"order_ids": ["ord-b1", "ord-b2", "ord-b3", "ord-unknown", "ord-b1"]}

    # When the batch is committed, and committed again
    first = commit_batch(catalog_app, tokens["service"], batch)
    again = commit_batch(catalog_app, tokens["service"], batch)

    # Then only the reserved ones count, once, and a repeat commits none
    assert (first.status_code, first.headers["content-type"], first.json()) == (
        200,
        "application/json",
        {"committed": 2},
    )
    assert (again.status_code, again.json()) == (200, {"committed": 0})
    # The released one stays released and its stock stays back; the single commit still answers.
    assert stock_of(catalog_app, product) == 8
    single = catalog_app.post("/api/v1/internal/reservations/ord-b1/commit", headers=tokens["service"])
    assert single.json() == {"order_id": "ord-b1", "status": "committed"}
    released = catalog_app.post("/api/v1/internal/reservations/ord-b3/commit", headers=tokens["service"])
    assert released.json() == {"order_id": "ord-b3", "status": "released"}


def test_batch_committed_reservations_never_expire(
    make_settings: Callable[..., Settings], database_url: str, tokens: dict[str, dict[str, str]]
) -> None:
    # Given reservations that expire at once (a zero TTL)
    settings = make_settings(database_url=database_url, reservation_ttl_seconds=0)
    migrate_schema(build_catalog(settings).products.engine)
    with TestClient(build_app(settings), raise_server_exceptions=False) as app:
        product = new_product(app, tokens, 10)
        for order_id in ("ord-kept-1", "ord-kept-2", "ord-lost"):
            assert reserve(app, tokens, order_id, [(product, 1)]).status_code == 201

        # When two of them are committed in a batch
        committed = commit_batch(app, tokens["service"], {"order_ids": ["ord-kept-1", "ord-kept-2"]})

        # Then only the other one is listed as expired
        expired = app.post("/api/v1/internal/reservations/expired", json={}, headers=tokens["service"])
    assert committed.json() == {"committed": 2}
    assert expired.json() == {"order_ids": ["ord-lost"]}


def test_a_batch_commit_is_one_statement(make_settings: Callable[..., Settings], database_url: str) -> None:
    settings = make_settings(database_url=database_url)
    catalog = build_catalog(settings)
    migrate_schema(catalog.products.engine)
    product = catalog.create(name="Lamp", description="", category="home", price_amount=1000, currency="INR", stock=10)
    batch = [f"ord-s{i}" for i in range(5)]
    for order_id in batch:
        catalog.reserve(order_id, [ReservationLine(product.id, 1)])
    with statement_verbs(catalog.products.engine) as statements:
        assert catalog.commit_reservations([*batch, "ord-none"]) == 5
    # SQLite sends its BEGIN IMMEDIATE as a statement; on PostgreSQL it runs in autocommit.
    assert [verb for verb in statements if verb != "BEGIN"] == ["UPDATE"]
    assert {catalog.products.reservation_status(order_id) for order_id in batch} == {"committed"}
    assert catalog.commit_reservations(batch) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"order_ids": []},
        {"order_ids": [f"ord-{i}" for i in range(101)]},
        {"order_ids": ["ord-1"] * 101},  # the bound is on the list as sent, duplicates included
        {"order_ids": ["ord 1"]},
        {"order_ids": [" ord-1"]},
        {"order_ids": ["ord/1"]},
        {"order_ids": ["x" * 65]},
        {"order_ids": [""]},
        {"order_ids": [1]},
        {"order_ids": "ord-1"},
        {"order_ids": ["ord-1"], "status": "committed"},
        {},
    ],
    ids=[
        "empty",
        "101-ids",
        "101-duplicates",
        "space",
        "padded",
        "slash",
        "too-long",
        "empty-id",
        "number",
        "not-a-list",
        "extra-field",
        "no-ids",
    ],
)
def test_a_batch_commit_out_of_bounds_is_a_422_problem_and_commits_nothing(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]], body: dict[str, Any]
) -> None:
    product = new_product(catalog_app, tokens, 5)
    reserve(catalog_app, tokens, "ord-1", [(product, 1)])

    body_problem = assert_problem(commit_batch(catalog_app, tokens["service"], body), 422)

    assert body_problem["errors"]
    assert commit_batch(catalog_app, tokens["service"], {"order_ids": ["ord-1"]}).json() == {"committed": 1}


def test_a_batch_of_a_hundred_ids_is_accepted(catalog_app: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    answer = commit_batch(catalog_app, tokens["service"], {"order_ids": [f"ord-{i}" for i in range(100)]})
    assert (answer.status_code, answer.json()) == (200, {"committed": 0})


def test_only_the_order_service_may_commit_a_batch_as_it_may_commit_one(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]], internal_secrets: dict[str, str]
) -> None:
    product = new_product(catalog_app, tokens, 5)
    reserve(catalog_app, tokens, "ord-1", [(product, 1)])
    # A service token of a service the route does not admit, signed with a secret the product holds
    payment = InternalTokens({"payment-product": internal_secrets["order-product"]}, service="payment")
    refused = {
        "no token": ({}, 401),
        "a customer's access token": (tokens["customer"], 401),
        "an admin's access token": (tokens["admin"], 401),
        "another service's token": ({"x-service-token": payment.token("product")}, 403),
    }

    for headers, status in refused.values():
        assert_problem(commit_batch(catalog_app, headers, {"order_ids": ["ord-1"]}), status)
        assert_problem(catalog_app.post("/api/v1/internal/reservations/ord-1/commit", headers=headers), status)

    assert commit_batch(catalog_app, tokens["service"], {"order_ids": ["ord-1"]}).json() == {"committed": 1}


@pytest.mark.postgres
def test_one_statement_work_runs_without_a_transaction_around_it_on_postgresql(
    make_settings: Callable[..., Settings], postgres_server: Any
) -> None:
    """In a transaction, psycopg sends a BEGIN before the statement and a COMMIT or ROLLBACK after
    it: three round trips for a read or a commit, which are one statement each. On PostgreSQL those
    run in autocommit; a reservation, several statements, keeps its transaction, and a connection
    goes back to the pool as it came."""
    # PostgreSQL only: SQLite keeps its transactions, each taking the file's write lock up front.
    name = f"t_{uuid.uuid4().hex[:12]}"
    postgres_server.create_database(name)
    settings = make_settings(database_url=str(postgres_server.url_for(name)))
    catalog = build_catalog(settings)
    migrate_schema(catalog.products.engine)
    product = catalog.create(name="Lamp", description="", category="home", price_amount=1000, currency="INR", stock=10)
    modes: list[tuple[str, bool]] = []

    def record(statement: Statement) -> None:
        modes.append((statement.operation, statement.connection.autocommit))

    catalog.products.engine.hooks.append(record)
    try:
        catalog.products.get(product.id)
        catalog.reserve("ord-modes", [ReservationLine(product.id, 1)])
        catalog.commit_reservation("ord-modes")
    finally:
        catalog.products.engine.hooks.remove(record)
    assert modes == [("SELECT", True), ("INSERT", False), ("UPDATE", False), ("INSERT", False), ("UPDATE", True)]
    # A transaction takes its connection from the pool as the pool holds it: in transaction mode.
    with catalog.products.engine.transaction() as conn:
        assert conn.raw.autocommit is False


def test_answers_have_the_response_models_fields_in_their_order(
    catalog_app: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    """The routes encode their answers themselves (`functions.product.api.answer`): the bytes pydantic
    wrote from the response models before."""
    from functions.product.api import CommitOut, ExpiredOut, ProductOut, ProductPage

    created = catalog_app.post("/api/v1/products", json=PRODUCT, headers=tokens["admin"])
    assert created.status_code == 201
    product_id = created.json()["id"]
    for answer, model in [
        (created, ProductOut),
        (catalog_app.get(f"/api/v1/products/{product_id}"), ProductOut),
        (catalog_app.get("/api/v1/products", params={"limit": 2}), ProductPage),
        (catalog_app.post("/api/v1/internal/reservations/expired", json={}, headers=tokens["service"]), ExpiredOut),
        (commit_batch(catalog_app, tokens["service"], {"order_ids": ["ord-none"]}), CommitOut),
    ]:
        assert answer.headers["content-type"] == "application/json"
        assert answer.content == model.model_validate_json(answer.content).model_dump_json().encode()
