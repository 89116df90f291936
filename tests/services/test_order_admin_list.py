"""The admin console's list of orders to fulfil: `GET /api/v1/admin/orders`, against real DynamoDB
(moto and dynalite) with the same fixtures as the checkout tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.helpers import assert_problem
from tests.services.test_forged_cursors import GARBLED, STAMP, forge
from tests.services.test_order_checkout import World, checkout, customer, world

__all__ = ["customer", "world"]  # the checkout tests' fixtures, used here too


def test_an_admin_lists_paid_orders_newest_first_across_pages(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    buyer, admin = customer(), customer("admin")
    ids = []
    for n in range(5):
        world.http.put("/api/v1/cart/items/p1", json={"quantity": 1}, headers=buyer)
        ids.append(checkout(world.http, buyer, key=f"k{n}").json()["id"])
    assert world.http.post(f"/api/v1/orders/{ids[1]}/fulfil", headers=admin).status_code == 200
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = world.http.get("/api/v1/admin/orders", params=params, headers=admin)
        assert page.status_code == 200, page.text
        body = page.json()
        assert all(o["status"] == "PAID" for o in body["items"])
        seen += [o["id"] for o in body["items"] if o["id"] in ids]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert seen == [ids[4], ids[3], ids[2], ids[0]]
    # The table is shared with other tests' orders: only this test's orders are counted.
    fulfilled = world.http.get(
        "/api/v1/admin/orders", params={"status": "FULFILLED", "limit": 100}, headers=admin
    ).json()
    assert [o["id"] for o in fulfilled["items"] if o["id"] in ids] == [ids[1]]


def test_only_an_admin_lists_orders_and_bad_queries_are_problems(
    world: World, customer: Callable[..., dict[str, str]]
) -> None:
    buyer, admin = customer(), customer("admin")
    assert_problem(world.http.get("/api/v1/admin/orders", headers=buyer), 403)
    assert_problem(world.http.get("/api/v1/admin/orders", params={"status": "LOST"}, headers=admin), 422)
    for limit in (0, 101):
        assert_problem(world.http.get("/api/v1/admin/orders", params={"limit": limit}, headers=admin), 422)
    assert_problem(world.http.get("/api/v1/admin/orders", params={"cursor": "nonsense"}, headers=admin), 400)


@pytest.mark.parametrize(
    "cursor",
    [
        forge({"status": "PAID"}),
        forge({"status": {"S": "PAID"}}),
        forge({"status": {"S": "PAID"}, "order_id": {"S": "o"}, "created_at": {"N": "1"}}),
        forge({"status": {"S": "PAID"}, "order_id": {"S": "o"}, "created_at": {"S": "soon"}}),
        forge({"status": {"S": "FULFILLED"}, "order_id": {"S": "o"}, "created_at": {"S": STAMP}}),
        forge({"user_id": {"S": "u"}, "order_id": {"S": "o"}, "created_at": {"S": STAMP}}),
        *GARBLED,
    ],
)
def test_a_forged_admin_orders_cursor_is_a_400(
    world: World, customer: Callable[..., dict[str, str]], cursor: str
) -> None:
    params = {"status": "PAID", "cursor": cursor}
    assert_problem(world.http.get("/api/v1/admin/orders", params=params, headers=customer("admin")), 400)


def test_a_well_formed_admin_orders_cursor_is_taken(world: World, customer: Callable[..., dict[str, str]]) -> None:
    cursor = forge({"status": {"S": "PAID"}, "order_id": {"S": "ord_1"}, "created_at": {"S": STAMP}})
    answer = world.http.get("/api/v1/admin/orders", params={"cursor": cursor}, headers=customer("admin"))
    assert answer.status_code == 200, answer.text
