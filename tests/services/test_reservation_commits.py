"""Fewer product-service calls per checkout (issue 9): paid orders' reservations committed together,
and products looked up for cart lines kept for a few seconds. Counts, not times."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from cloudshop.errors import DependencyUnavailable, NotFound
from cloudshop.settings import Settings
from eks_services.order.clients import PRODUCTS_KEPT_MAX, HttpCatalog
from eks_services.order.model import RESERVATIONS_PER_COMMIT_MAX, ReservationLine
from eks_services.order.service import BackgroundWork, ReservationCommits
from tests.services.order_fakes import InMemoryCatalog
from tests.services.test_order_checkout import World, checkout, customer, world
from tests.services.test_order_ports import http_client

__all__ = ["customer", "world"]  # fixtures of the checkout tests, used here too

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class FailingCatalog(InMemoryCatalog):
    async def commit(self, order_ids: Sequence[str]) -> None:
        self.calls.append("commit")
        raise DependencyUnavailable("The product service is down.")


class RecordingCatalog(InMemoryCatalog):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches: list[list[str]] = []

    async def commit(self, order_ids: Sequence[str]) -> None:
        self.batches.append(list(order_ids))
        await super().commit(order_ids)


async def reserved(catalog: InMemoryCatalog, order_ids: Sequence[str]) -> None:
    for order_id in order_ids:
        await catalog.reserve(order_id, [ReservationLine("mug", 1)])


async def test_reservations_that_arrive_within_the_window_are_committed_in_one_call() -> None:
    catalog = RecordingCatalog({"mug": ("Mug", 50000, 10)})
    await reserved(catalog, ["o1", "o2", "o3"])
    background = BackgroundWork()
    commits = ReservationCommits(catalog, background, window_seconds=0.05)

    for order_id in ("o1", "o2", "o3"):
        commits.add(order_id)
    assert catalog.batches == [], "nothing is sent before the window closes"
    await background.drain()

    assert catalog.batches == [["o1", "o2", "o3"]]
    assert {catalog.status[x] for x in ("o1", "o2", "o3")} == {"committed"}


async def test_a_full_batch_goes_at_once_and_the_rest_waits_for_its_own_window() -> None:
    catalog = RecordingCatalog({"mug": ("Mug", 50000, 10)})
    await reserved(catalog, ["o1", "o2", "o3"])
    background = BackgroundWork()
    commits = ReservationCommits(catalog, background, window_seconds=0.5, max_batch=2)

    for order_id in ("o1", "o2", "o3"):
        commits.add(order_id)
    for _ in range(5):  # a few turns of the loop: far less than the window
        await asyncio.sleep(0)
    assert catalog.batches == [["o1", "o2"]], "the full batch did not wait for the window"

    await asyncio.wait_for(background.drain(), 5)
    assert catalog.batches == [["o1", "o2"], ["o3"]]
    assert catalog.status["o3"] == "committed"


async def test_a_failed_commit_is_logged_not_raised_and_the_next_ids_still_go(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failing = FailingCatalog({"mug": ("Mug", 50000, 10)})
    background = BackgroundWork()
    commits = ReservationCommits(failing, background, window_seconds=0)
    commits.add("o1")
    await background.drain()  # the order is paid whatever happens to its commit
    commits.add("o2")
    await background.drain()
    assert failing.calls == ["commit", "commit"]
    assert caplog.text.count("reservation commit failed") == 2


def test_concurrent_paid_checkouts_commit_their_reservations_in_one_catalog_call(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    buyers = [customer() for _ in range(4)]
    for me in buyers:
        world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    world.catalog.calls.clear()

    orders = [checkout(world.http, me).json() for me in buyers]
    world.run(world.runtime.checkout.background.drain)

    assert [order["status"] for order in orders] == ["PAID"] * 4
    assert world.catalog.calls.count("reserve") == 4
    assert world.catalog.calls.count("commit") == 1, "one commit for the four, after the answers"
    assert {world.catalog.status[order["id"]] for order in orders} == {"committed"}


def test_a_paid_order_whose_commit_was_lost_is_committed_by_the_sweeper(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    me = customer()
    world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=me)
    service = world.runtime.checkout
    service.reservation_commits = ReservationCommits(FailingCatalog(), service.background, window_seconds=0)

    order = checkout(world.http, me).json()
    world.run(service.background.drain)
    assert order["status"] == "PAID" and world.catalog.status[order["id"]] == "reserved"

    world.catalog.expires[order["id"]] = world.catalog.now()  # its reservation expires now
    world.run(service.release_expired_reservations)
    assert world.catalog.status[order["id"]] == "committed"
    assert world.catalog.stock("p1") == 9


# --- the HTTP adapter against the real product service -------------------------------------------


class CountingCaller:
    """The real service client, counting the requests it sends."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.sent: list[tuple[str, str, Any]] = []

    async def request(self, method: str, path: str, *, json: Any = None, params: Any = None, retry: Any = None) -> Any:
        self.sent.append((method, path, json))
        return await self.client.request(method, path, json=json, params=params, retry=retry)


@pytest.fixture
async def product_service(
    make_settings: Callable[..., Settings], internal_secrets: dict[str, str], tmp_path: Any
) -> AsyncIterator[tuple[CountingCaller, Any]]:
    """The product service's app over SQLite, called as the order service calls it: (caller, catalog)."""
    from functions.product.bootstrap import build_app, build_catalog, migrate_schema

    settings = make_settings(database_url=f"sqlite:///{tmp_path}/catalog.db")
    service = build_catalog(settings)
    migrate_schema(service.products.engine)
    client = http_client(build_app(settings), name="product", internal_secrets=internal_secrets)
    yield CountingCaller(client), service
    await client.aclose()


async def test_a_product_looked_up_for_a_cart_line_is_kept_for_its_ttl(
    product_service: tuple[CountingCaller, Any],
) -> None:
    caller, service = product_service
    mug = service.create(name="Mug", description="", category="home", price_amount=500, currency="INR", stock=3)
    now = [0.0]
    catalog = HttpCatalog(caller, product_ttl_seconds=5, clock=lambda: now[0])

    assert (await catalog.product(mug.id)).unit_price == 500
    service.update(mug.id, {"price": {"amount": 700, "currency": "INR"}})
    now[0] = 4.9
    assert (await catalog.product(mug.id)).unit_price == 500, "kept: no second request"
    assert len(caller.sent) == 1
    now[0] = 5.0
    assert (await catalog.product(mug.id)).unit_price == 700, "asked again once the TTL is over"
    assert len(caller.sent) == 2

    for _ in range(2):
        with pytest.raises(NotFound):
            await catalog.product("no-such-product")
    assert len(caller.sent) == 4, "a missing product is asked for every time: a new one is seen at once"


async def test_the_products_kept_are_bounded(product_service: tuple[CountingCaller, Any]) -> None:
    caller, service = product_service
    mug = service.create(name="Mug", description="", category="home", price_amount=500, currency="INR", stock=3)
    catalog = HttpCatalog(caller, clock=lambda: 0.0)
    catalog._products = {f"p{i}": (1.0, None) for i in range(PRODUCTS_KEPT_MAX)}  # type: ignore[misc]
    await catalog.product(mug.id)
    assert len(catalog._products) <= PRODUCTS_KEPT_MAX


async def test_commits_go_in_calls_of_the_product_services_bound_each_id_once(
    product_service: tuple[CountingCaller, Any],
) -> None:
    caller, service = product_service
    mug = service.create(name="Mug", description="", category="home", price_amount=500, currency="INR", stock=300)
    catalog = HttpCatalog(caller)
    order_ids = [f"ord_{i:03d}" for i in range(250)]
    for order_id in order_ids:
        await catalog.reserve(order_id, [ReservationLine(mug.id, 1)])
    caller.sent.clear()

    await catalog.commit(order_ids + order_ids[:10])

    batches = [body["order_ids"] for _, path, body in caller.sent]
    assert [len(batch) for batch in batches] == [100, 100, 50]
    assert [order_id for batch in batches for order_id in batch] == order_ids
    assert await catalog.expired_reservations(limit=10) == [], "all committed: none can expire"
    await catalog.commit(order_ids[:5])  # a repeat is a no-op


def test_the_commit_bound_is_the_product_services_own() -> None:
    """From the product service's committed openapi.json, so the two services cannot drift apart."""
    from cloudshop.contracts import SERVICES

    spec = json.loads((SERVICES["product"][1] / "openapi.json").read_text())
    operation = spec["paths"]["/api/v1/internal/reservations/commit"]["post"]
    schema_ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][schema_ref.rsplit("/", 1)[-1]]
    assert schema["properties"]["order_ids"]["maxItems"] == RESERVATIONS_PER_COMMIT_MAX
