"""`cloudshop up` as a user runs it: a subprocess on the embedded profile, driven through the gateway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.platform import free_base_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADMIN = {"email": "admin@cloudshop.local", "password": "cloudshop-admin-1"}


@pytest.fixture(scope="module")
def cloudshop_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    state = tmp_path_factory.mktemp("up")
    base = free_base_port()
    log = state / "up.log"
    # A fresh laptop: no AWS credentials, no database or broker settings in the environment.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AWS_") and k not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")
    }
    with open(log, "w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudshop.cli", "up", "--state-dir", str(state), "--base-port", str(base)],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
    gateway = f"http://127.0.0.1:{base}"
    started = time.monotonic()
    while time.monotonic() - started < 90:
        if process.poll() is not None:
            pytest.fail(f"cloudshop up exited with {process.returncode}:\n{log.read_text()}")
        # The banner comes once every service answers its health check; the catalog must then be served.
        if "cloudshop is up" in log.read_text():
            assert httpx.get(f"{gateway}/api/v1/products", timeout=5).status_code == 200
            break
        time.sleep(0.5)
    else:
        process.kill()
        pytest.fail(f"cloudshop up did not serve the catalog within 90s:\n{log.read_text()}")
    yield gateway, process, log
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise


def test_a_visitor_registers_logs_in_and_browses_and_the_admin_adds_a_product(
    cloudshop_up: tuple[str, subprocess.Popen[str], Path],
) -> None:
    gateway, _, log = cloudshop_up
    api = httpx.Client(base_url=f"{gateway}/api/v1", timeout=30)
    email = f"visitor-{uuid.uuid4().hex[:8]}@example.com"

    assert (
        api.post("/auth/register", json={"email": email, "password": "visitor-pass-1", "name": "V"}).status_code == 201
    )
    tokens = api.post("/auth/login", json={"email": email, "password": "visitor-pass-1"}).json()
    me = api.get("/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.status_code == 200 and me.json()["email"] == email

    catalog = api.get("/products", params={"limit": 100}).json()
    assert len(catalog["items"]) >= 50 or catalog["next_cursor"]
    assert len({p["category"] for p in catalog["items"]}) >= 5
    assert api.get("/products", params={"q": "chess"}).json()["items"][0]["name"] == "Chess Set"

    # Through the gateway: no token, no entry; a customer token, no catalog writes.
    product = {
        "name": "Gateway Lamp",
        "description": "",
        "category": "home",
        "price": {"amount": 99900, "currency": "INR"},
        "stock": 3,
    }
    assert api.post("/products", json=product).status_code == 401
    # Internal routes take a service token only; a customer token does not open them.
    reservation = {"order_id": "o-1", "lines": [{"product_id": "p", "quantity": 1}]}
    customer = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert api.post("/internal/reservations", json=reservation, headers=customer).status_code == 401
    assert (
        api.post("/products", json=product, headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code
        == 403
    )

    admin = api.post("/auth/login", json=ADMIN).json()
    created = api.post("/products", json=product, headers={"Authorization": f"Bearer {admin['access_token']}"})
    assert created.status_code == 201, created.text
    assert api.get(f"/products/{created.json()['id']}").json()["stock"] == 3

    # Logged out means logged out, at the gateway too.
    api.post("/auth/logout", json={"refresh_token": tokens["refresh_token"]})
    assert api.get("/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 401
    assert "cloudshop is up" in log.read_text()


@pytest.mark.spark
def test_a_purchase_shows_up_in_the_analytics_windows(cloudshop_up: tuple[str, subprocess.Popen[str], Path]) -> None:
    gateway, _, log = cloudshop_up
    api = httpx.Client(base_url=f"{gateway}/api/v1", timeout=30)
    email = f"analyst-{uuid.uuid4().hex[:8]}@example.com"
    api.post("/auth/register", json={"email": email, "password": "visitor-pass-1", "name": "A"})
    login = api.post("/auth/login", json={"email": email, "password": "visitor-pass-1"}).json()
    buyer = {"Authorization": f"Bearer {login['access_token']}"}
    product = api.get("/products", params={"limit": 1}).json()["items"][0]
    api.put(f"/cart/items/{product['id']}", json={"quantity": 2}, headers=buyer)
    address = {"name": "A", "line1": "1 Road", "city": "Pune", "state": "MH", "postal_code": "411001", "country": "IN"}
    order = api.post(
        "/orders",
        json={"shipping_address": address, "payment_method": "pm_card_ok"},
        headers=buyer | {"Idempotency-Key": uuid.uuid4().hex},
    ).json()
    assert order["status"] == "PAID"
    time.sleep(2)  # the outbox relay publishes to the file log within a second

    batch = subprocess.run(
        [sys.executable, "-m", "cloudshop.cli", "analytics", "--once", "--state-dir", str(log.parent)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert batch.returncode == 0, batch.stdout[-3000:] + batch.stderr[-3000:]

    admin = {"Authorization": f"Bearer {api.post('/auth/login', json=ADMIN).json()['access_token']}"}
    assert api.get("/analytics/windows", headers=buyer).status_code == 403
    windows = api.get("/analytics/windows", params={"limit": 5}, headers=admin).json()["items"]
    assert windows and windows[0]["orders"] >= 1 and windows[0]["unique_users"] >= 1
    assert {"amount": order["total"]["amount"], "currency": "INR"} in windows[0]["revenue"] or windows[0]["revenue"]
    assert api.get("/analytics/windows", params={"cursor": "bogus"}, headers=admin).status_code == 400


def test_ctrl_c_stops_every_child(cloudshop_up: tuple[str, subprocess.Popen[str], Path]) -> None:
    gateway, process, log = cloudshop_up
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=40) == 0, log.read_text()
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{gateway}/healthz", timeout=2)
    assert "stopped." in log.read_text()


def test_a_taken_port_is_named(tmp_path: Path) -> None:
    import socket

    base = free_base_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base + 2))
        taken.listen()
        answer = subprocess.run(
            [sys.executable, "-m", "cloudshop.cli", "up", "--state-dir", str(tmp_path), "--base-port", str(base)],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert answer.returncode != 0
    assert f"{base + 2} (product)" in answer.stderr + answer.stdout
