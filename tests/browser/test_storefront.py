"""The storefront and the admin console, clicked through in Chromium against `cloudshop up`.

Each test is a person's journey, found on the page the way a person (or a screen reader) finds it: by
role and accessible name. Every step is photographed into test-artifacts/browser/.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ADDRESS, ADMIN, Platform

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def png(width: int = 96, height: int = 96, rgb: tuple[int, int, int] = (29, 78, 216)) -> bytes:
    """A small solid PNG, made here (no imaging library needed)."""
    row = b"\x00" + bytes(rgb) * width
    raw = zlib.compress(row * height)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def no_policy_violations(page: Any) -> None:
    """The page ran without a script error and the CSP never had to block anything."""
    assert [e for e in page.errors if "Content Security Policy" in e or "Uncaught" in e] == []


def nav(page: Any, name: str) -> Any:
    """A link of the site's main navigation, by its exact name."""
    return page.get_by_role("navigation", name="Main").get_by_role("link", name=name, exact=True)


def log_in(page: Any, email: str, password: str) -> None:
    page.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


def fill_address(page: Any) -> None:
    page.get_by_label("Full name").fill(ADDRESS["name"])
    page.get_by_label("Address line 1").fill(ADDRESS["line1"])
    page.get_by_label("City").fill(ADDRESS["city"])
    page.get_by_label("State or region").fill(ADDRESS["state"])
    page.get_by_label("Postal code").fill(ADDRESS["postal_code"])
    page.get_by_label("Country code").fill(ADDRESS["country"])


def pay_with(page: Any, token: str) -> None:
    page.get_by_role("radio", name=re.compile(token)).check()
    page.get_by_role("button", name="Place order and pay").click()


def test_a_new_buyer_registers_searches_fills_the_cart_is_declined_then_pays_and_sees_order_notification_invoice(
    platform: Platform, open_page: Callable[..., Any], shot: Callable[..., Path]
) -> None:
    page = open_page()
    page.goto("/")
    expect(page.get_by_role("heading", level=1, name="All products")).to_be_visible()
    expect(page.get_by_role("list", name="Products").get_by_role("listitem")).to_have_count(12)
    shot(page, "shop")
    pages = page.get_by_role("navigation", name="Pages")
    pages.get_by_role("link", name="Next page").click()
    expect(pages.get_by_text("Page 2")).to_be_visible()
    pages.get_by_role("link", name="Previous page").click()
    expect(pages.get_by_text("Page 1")).to_be_visible()

    # Register: the new account is logged in at once.
    nav(page, "Register").click()
    expect(page.get_by_role("heading", level=1, name="Create an account")).to_be_focused()
    email = f"asha-{uuid.uuid4().hex[:8]}@example.com"
    page.get_by_label("Name").fill("Asha")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill("correct-horse-42")
    shot(page, "register")
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_text(email)).to_be_visible()

    # Search, and add from the results.
    page.get_by_role("searchbox", name="Search products").fill("chess")
    page.get_by_role("button", name="Search", exact=True).click()
    results = page.get_by_role("list", name="Products")
    expect(results.get_by_role("link", name=re.compile("Chess Set"))).to_be_visible()
    results.get_by_role("button", name="Add Chess Set to cart").click()
    expect(results.get_by_text("Added. 1 in your cart.")).to_be_visible()
    expect(page.get_by_role("link", name="Cart, 1 item")).to_be_visible()
    shot(page, "search")

    # Browse a category, page through it, open a product and add two.
    page.get_by_role("navigation", name="Categories").get_by_role("link", name="books").click()
    expect(page.get_by_role("heading", level=1, name="Books")).to_be_visible()
    page.get_by_role("link", name=re.compile("Learning Spark")).click()
    expect(page.get_by_role("heading", level=1, name="Learning Spark")).to_be_focused()
    page.get_by_label("Quantity").fill("2")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.get_by_text("Added. 2 in your cart.")).to_be_visible()
    shot(page, "product")

    # The cart: change a quantity, remove a line.
    page.get_by_role("link", name=re.compile("^Cart")).click()
    quantity = page.get_by_label("Quantity of Learning Spark")
    expect(quantity).to_have_value("2")
    quantity.fill("3")
    quantity.press("Enter")
    expect(page.get_by_role("status").filter(has_text="Learning Spark: quantity 3.")).to_be_visible()
    page.get_by_role("button", name="Remove Chess Set").click()
    expect(page.get_by_role("status").filter(has_text="Chess Set removed from your cart.")).to_be_visible()
    expect(page.get_by_role("link", name="Cart, 3 items")).to_be_visible()
    shot(page, "cart")

    # Checkout: the declined card says so, and nothing is lost.
    page.get_by_role("link", name="Go to checkout").click()
    fill_address(page)
    pay_with(page, "pm_card_declined")
    alert = page.get_by_test_id("checkout-error")
    expect(alert).to_contain_text("declined")
    expect(alert).to_contain_text("Nothing was charged")
    shot(page, "declined", full_page=True)

    # The approved card: the order is PAID.
    pay_with(page, "pm_card_ok")
    expect(page.get_by_role("heading", level=1, name=re.compile(r"^Order #"))).to_be_visible()
    expect(page.locator("[data-status]")).to_have_attribute("data-status", "PAID")
    expect(page.get_by_role("status").filter(has_text="Your payment went through")).to_be_visible()
    expect(page.get_by_role("link", name="Cart, 0 items")).to_be_visible()
    order_heading = page.get_by_role("heading", level=1).inner_text()
    shot(page, "paid")

    # The order history shows it, live.
    nav(page, "Orders").click()
    row = page.get_by_role("row", name=re.compile(order_heading.removeprefix("Order ")))
    expect(row.get_by_text("Paid")).to_be_visible()
    shot(page, "orders")

    # The notification arrives through the queue within seconds.
    nav(page, "Notifications").click()
    expect(page.get_by_role("heading", name="Order confirmed")).to_be_visible(timeout=20_000)
    shot(page, "notifications")

    # The invoice, from the order page.
    page.get_by_role("link", name=re.compile(order_heading.removeprefix("Order "))).first.click()
    page.get_by_role("button", name="Download invoice").click()
    link = page.get_by_role("link", name=re.compile("Open the invoice"))
    expect(link).to_be_focused()
    with page.expect_popup() as popup:
        link.click()
    invoice = popup.value
    invoice.wait_for_load_state()
    expect(invoice.locator("body")).to_contain_text("Learning Spark")
    shot(invoice, "invoice")

    # Silent refresh: an access token about to lapse is rotated before the next call, unnoticed.
    stale = page.evaluate("JSON.parse(localStorage.getItem('cloudshop.session'))")
    page.evaluate(
        """() => {
          const s = JSON.parse(localStorage.getItem('cloudshop.session'));
          localStorage.setItem('cloudshop.session', JSON.stringify({ ...s, expires_at: Date.now() }));
        }"""
    )
    page.goto("/orders")
    expect(page.get_by_role("row", name=re.compile(order_heading.removeprefix("Order ")))).to_be_visible()
    fresh = page.evaluate("JSON.parse(localStorage.getItem('cloudshop.session'))")
    assert fresh["refresh_token"] != stale["refresh_token"] and fresh["expires_at"] > stale["expires_at"]

    # Log out: the session ends here and at the server.
    page.get_by_role("button", name="Log out").click()
    expect(nav(page, "Log in")).to_be_visible()
    assert page.evaluate("localStorage.getItem('cloudshop.session')") is None
    assert platform.api.post("/auth/refresh", json={"refresh_token": fresh["refresh_token"]}).status_code == 401
    no_policy_violations(page)


def test_an_admin_creates_a_product_with_an_image_and_sees_it_in_the_shop(
    platform: Platform, open_page: Callable[..., Any], shot: Callable[..., Path], tmp_path: Path
) -> None:
    name = f"Brass Lantern {uuid.uuid4().hex[:4]}"
    image = tmp_path / "lantern.png"
    image.write_bytes(png())
    page = open_page()
    log_in(page, ADMIN["email"], ADMIN["password"])
    nav(page, "Admin").click()
    expect(page.get_by_role("heading", level=1, name="Admin: Products")).to_be_focused()
    page.get_by_role("button", name="New product").click()
    form = page.get_by_role("form", name="New product")
    form.get_by_label("Name").fill(name)
    form.get_by_label("Description").fill("Hand-polished brass, for the porch.")
    form.get_by_label("Category").fill("home")
    form.get_by_label("Price (INR)").fill("1499.50")
    form.get_by_label("Stock").fill("7")
    form.get_by_label("Image").set_input_files(str(image))
    shot(page, "new-product")
    form.get_by_role("button", name="Create product").click()
    expect(page.get_by_role("status").filter(has_text=f"{name} created with its image.")).to_be_visible()
    shot(page, "created")

    # Edit it: a new price and a restock of 5, through the same form.
    form = page.get_by_role("form", name=f"Edit {name}")
    form.get_by_label("Price (INR)").fill("1399.50")
    form.get_by_label("Adjust stock (now 7)").fill("5")
    form.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status").filter(has_text=f"{name} saved.")).to_be_visible()
    expect(page.get_by_role("form", name=f"Edit {name}").get_by_label("Adjust stock (now 12)")).to_be_visible()

    # In the shop, for anyone: found by search, with its photo (a presigned link to the object store).
    visitor = open_page()
    visitor.goto(f"/?q={name.split()[-1]}")
    card = visitor.get_by_role("list", name="Products").get_by_role("listitem").filter(has_text=name)
    photo = card.get_by_role("img", name=name)
    expect(photo).to_be_visible()
    expect(card.get_by_text("₹1,399.50")).to_be_visible()
    # Loaded and decoded: the presigned link works and the CSP lets the object store's images in.
    assert photo.evaluate("async img => { await img.decode(); return img.naturalWidth; }") == 96
    card.get_by_role("link", name=re.compile(name)).click()
    expect(visitor.get_by_role("heading", level=1, name=name)).to_be_visible()
    expect(visitor.get_by_text("12 in stock")).to_be_visible()
    shot(visitor, "in-the-shop")
    no_policy_violations(page)
    no_policy_violations(visitor)


def test_a_buyer_whose_item_sold_out_sees_which_one(
    platform: Platform, open_page: Callable[..., Any], shot: Callable[..., Path]
) -> None:
    admin = platform.admin()
    product = {
        "name": f"Last Lantern {uuid.uuid4().hex[:4]}",
        "description": "One of a kind.",
        "category": "home",
        "price": {"amount": 99900, "currency": "INR"},
        "stock": 1,
    }
    created = platform.api.post("/products", json=product, headers=admin)
    assert created.status_code == 201, created.text
    lantern = created.json()
    email, password, _ = platform.new_buyer("Ravi")
    page = open_page()
    log_in(page, email, password)
    page.goto(f"/products/{lantern['id']}")
    page.get_by_role("button", name="Add to cart").click()
    expect(page.get_by_text("Added. 1 in your cart.")).to_be_visible()
    page.goto("/?q=mug")
    page.get_by_role("button", name="Add Ceramic Mug Set to cart").click()
    expect(page.get_by_role("link", name="Cart, 2 items")).to_be_visible()

    # Meanwhile the last one goes (the admin writes it off).
    sold = platform.api.patch(f"/products/{lantern['id']}", json={"stock_adjustment": -1}, headers=admin)
    assert sold.status_code == 200 and sold.json()["stock"] == 0

    page.get_by_role("link", name=re.compile("^Cart")).click()
    page.get_by_role("link", name="Go to checkout").click()
    fill_address(page)
    pay_with(page, "pm_card_ok")
    alert = page.get_by_test_id("checkout-error")
    expect(alert).to_contain_text(f"Not enough stock for: {product['name']} (sold out)")
    expect(alert).not_to_contain_text("Ceramic Mug Set")
    short = page.get_by_role("row", name=re.compile(product["name"]))
    expect(short).to_contain_text("not enough stock")
    expect(page.get_by_role("link", name="Cart, 2 items")).to_be_visible()
    shot(page, "out-of-stock", full_page=True)
    no_policy_violations(page)


def test_an_admin_fulfils_and_refunds_an_order_found_by_its_id(
    platform: Platform, open_page: Callable[..., Any], shot: Callable[..., Path]
) -> None:
    _, _, buyer = platform.new_buyer("Meera")
    item = platform.api.get("/products", params={"q": "french press"}).json()["items"][0]
    platform.api.put(f"/cart/items/{item['id']}", json={"quantity": 1}, headers=buyer).raise_for_status()
    order = platform.api.post(
        "/orders",
        json={"shipping_address": ADDRESS, "payment_method": "pm_card_ok"},
        headers=buyer | {"Idempotency-Key": uuid.uuid4().hex},
    ).json()
    assert order["status"] == "PAID"

    page = open_page()
    log_in(page, ADMIN["email"], ADMIN["password"])
    page.goto("/admin/orders")
    page.get_by_label("Order id").fill(order["id"])
    page.get_by_role("button", name="Find order").click()
    status = page.locator("article [data-status]")
    expect(status).to_have_attribute("data-status", "PAID")
    page.get_by_role("button", name="Fulfil").click()
    expect(status).to_have_attribute("data-status", "FULFILLED")
    page.get_by_role("button", name="Refund").click()
    expect(page.get_by_role("status").filter(has_text="Refunded in full.")).to_be_visible()
    # The refund reaches the order as an event (payment outbox -> SQS -> order service): live status.
    expect(status).to_have_attribute("data-status", "REFUNDED", timeout=20_000)
    shot(page, "refunded", full_page=True)
    no_policy_violations(page)


def test_an_admin_fulfils_an_order_from_the_list_of_orders_to_fulfil(
    platform: Platform, open_page: Callable[..., Any], shot: Callable[..., Path]
) -> None:
    _, _, buyer = platform.new_buyer("Ishaan")
    item = platform.api.get("/products", params={"q": "french press"}).json()["items"][0]
    platform.api.put(f"/cart/items/{item['id']}", json={"quantity": 1}, headers=buyer).raise_for_status()
    order = platform.api.post(
        "/orders",
        json={"shipping_address": ADDRESS, "payment_method": "pm_card_ok"},
        headers=buyer | {"Idempotency-Key": uuid.uuid4().hex},
    ).json()
    assert order["status"] == "PAID"

    page = open_page()
    log_in(page, ADMIN["email"], ADMIN["password"])
    page.goto("/admin/orders")
    expect(page.get_by_role("heading", name="Orders to fulfil")).to_be_visible()
    expect(page.get_by_label("Status")).to_have_value("PAID")
    row = page.locator(f'tr[data-order-id="{order["id"]}"]')  # newest first: on the first page
    expect(row).to_be_visible()
    shot(page, "orders-to-fulfil", full_page=True)
    row.get_by_role("button").click()
    status = page.locator("article [data-status]")
    expect(status).to_have_attribute("data-status", "PAID")
    expect(page.locator("#admin-order-title")).to_be_focused()
    page.get_by_role("button", name="Fulfil").click()
    expect(status).to_have_attribute("data-status", "FULFILLED")
    expect(row).to_have_count(0)  # it left the list of orders to fulfil
    page.get_by_label("Status").select_option("FULFILLED")
    expect(page.locator(f'tr[data-order-id="{order["id"]}"]')).to_be_visible()
    no_policy_violations(page)


def test_the_admin_chart_shows_the_windows_of_cloudshop_analytics_once(
    platform: Platform, open_page: Callable[..., Any], shot: Callable[..., Path]
) -> None:
    _, _, buyer = platform.new_buyer("Kiran")
    book = platform.api.get("/products", params={"category": "books", "limit": 1}).json()["items"][0]
    platform.api.put(f"/cart/items/{book['id']}", json={"quantity": 2}, headers=buyer).raise_for_status()
    paid = platform.api.post(
        "/orders",
        json={"shipping_address": ADDRESS, "payment_method": "pm_card_ok"},
        headers=buyer | {"Idempotency-Key": uuid.uuid4().hex},
    ).json()
    assert paid["status"] == "PAID"
    # The outbox relay appends order.paid to the embedded profile's event log within a second or so.
    segments = platform.state_dir / "events" / "orders"
    deadline = time.monotonic() + 20
    while not any(
        paid["id"] in line and "order.paid" in line
        for segment in segments.glob("*.jsonl")
        for line in segment.read_text().splitlines()
    ):
        assert time.monotonic() < deadline, f"order.paid of {paid['id']} never reached {segments}"
        time.sleep(0.2)
    batch = subprocess.run(
        [sys.executable, "-m", "cloudshop.cli", "analytics", "--once", "--state-dir", str(platform.state_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert batch.returncode == 0, batch.stdout[-3000:] + batch.stderr[-3000:]

    page = open_page(width=1100, height=900)
    log_in(page, ADMIN["email"], ADMIN["password"])
    nav(page, "Admin").click()
    page.get_by_role("navigation", name="Admin sections").get_by_role("link", name="Analytics").click()
    expect(page.get_by_role("heading", level=1, name="Admin: Analytics")).to_be_focused()
    for metric in ("unique-users", "orders", "revenue"):
        chart = page.locator(f"figure[data-metric={metric}]")
        expect(chart.get_by_role("img")).to_be_visible()
        assert chart.locator("rect[data-point]").count() >= 1
    orders = [
        float(v)
        for v in page.locator("figure[data-metric=orders] rect").evaluate_all("bars => bars.map(b => b.dataset.point)")
    ]
    revenue = [
        float(v)
        for v in page.locator("figure[data-metric=revenue] rect").evaluate_all("bars => bars.map(b => b.dataset.point)")
    ]
    assert sum(orders) >= 1 and max(revenue) >= paid["total"]["amount"]
    shot(page, "analytics", full_page=True)
    page.get_by_text("The windows as a table").click()
    expect(page.get_by_role("table", name="Analytics windows").get_by_role("row")).not_to_have_count(1)
    no_policy_violations(page)


def test_on_a_phone_the_shop_fits_and_works_with_the_keyboard(
    platform: Platform, open_page: Callable[..., Any], shot: Callable[..., Path]
) -> None:
    page = open_page(width=375, height=740)
    page.goto("/")
    expect(page.get_by_role("heading", level=1, name="All products")).to_be_visible()
    # Nothing wider than the screen: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    shot(page, "phone-shop")

    # The first Tab reaches the skip link; it jumps over the navigation to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()

    # The menu opens from its button, and after following a link the new page's title has the focus.
    menu = page.get_by_role("button", name="Menu")
    expect(menu).to_have_attribute("aria-expanded", "false")
    menu.focus()
    page.keyboard.press("Enter")
    expect(menu).to_have_attribute("aria-expanded", "true")
    login = nav(page, "Log in")
    login.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1, name="Log in")).to_be_focused()
    assert page.title() == "Log in · cloudshop"
    shot(page, "phone-login")
    no_policy_violations(page)
