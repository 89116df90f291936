"""One checkout is one trace: `cloudshop up` (embedded profile: the order relay to the file log and
SQS, the notification poller feeding the Lambda handler) writes every process's spans to
`<state>/traces/spans.jsonl`, and the checkout's spans form one tree rooted at the gateway."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cloudshop.local.traces import read_spans, traces_of_order
from tests.fixtures.platform import cloudshop_up, free_base_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ADDRESS = {"name": "T", "line1": "1 Road", "city": "Pune", "state": "MH", "postal_code": "411001", "country": "IN"}
SERVICES = {"gateway", "order", "product", "payment", "notification"}


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    state = tmp_path_factory.mktemp("traced")
    base = free_base_port()
    with cloudshop_up(state, base_port=base):
        yield f"http://127.0.0.1:{base}", state


def checkout(gateway: str) -> tuple[dict[str, Any], str]:
    """A new customer buys one product; the order and the trace id the gateway answered with."""
    api = httpx.Client(base_url=f"{gateway}/api/v1", timeout=30)
    email = f"traced-{uuid.uuid4().hex[:8]}@example.com"
    assert api.post("/auth/register", json={"email": email, "password": "traced-pass-1", "name": "T"}).is_success
    login = api.post("/auth/login", json={"email": email, "password": "traced-pass-1"}).json()
    buyer = {"Authorization": f"Bearer {login['access_token']}"}
    product = api.get("/products", params={"limit": 1}).json()["items"][0]
    assert api.put(f"/cart/items/{product['id']}", json={"quantity": 1}, headers=buyer).is_success
    answer = api.post(
        "/orders",
        json={"shipping_address": ADDRESS, "payment_method": "pm_card_ok"},
        headers=buyer | {"Idempotency-Key": uuid.uuid4().hex},
    )
    assert answer.is_success, answer.text
    traceresponse = answer.headers["traceresponse"]
    return answer.json(), traceresponse.split("-")[1]


def checkout_trace(state: Path, order_id: str, *, timeout: float = 45.0) -> tuple[str, list[dict[str, Any]]]:
    """The order's first trace, once the relay's and the notification's spans have arrived in it."""
    deadline = time.monotonic() + timeout
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        traces = traces_of_order(read_spans(state / "traces" / "spans.jsonl"), order_id)
        if traces:
            trace_id, spans = next(iter(traces.items()))
            services = {span["service"] for span in spans}
            relayed = any(span["name"].startswith("outbox publish") for span in spans)
            if SERVICES <= services and relayed:
                return trace_id, spans
        time.sleep(0.5)
    pytest.fail(f"the trace of {order_id} never held every service: {sorted({s['service'] for s in spans})}")


def test_a_checkout_is_one_trace_from_the_gateway_to_the_notification(platform: tuple[str, Path]) -> None:
    gateway, state = platform

    order, trace_id = checkout(gateway)
    assert order["status"] == "PAID"

    found, spans = checkout_trace(state, order["id"])
    assert found == trace_id
    by_id = {span["span_id"]: span for span in spans}
    roots = [span for span in spans if span["parent_id"] is None]
    assert len(roots) == 1 and roots[0]["service"] == "gateway", roots
    assert roots[0]["name"] == "POST /api/v1/orders" and roots[0]["kind"] == "server"
    orphans = [span for span in spans if span["parent_id"] is not None and span["parent_id"] not in by_id]
    assert not orphans, orphans

    def parent_of(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[span["parent_id"]]

    servers = {span["service"]: span for span in spans if span["kind"] == "server" and span["parent_id"]}
    # Each service's request span is the child of its caller's client span.
    assert parent_of(servers["order"])["service"] == "gateway"
    for callee in ("product", "payment"):
        client = parent_of(servers[callee])
        assert client["service"] == "order" and client["kind"] == "client", client
    # The relay (later, from the outbox) and the notification (from SQS) continue the span that wrote
    # the event: the order's checkout request.
    relay = [span for span in spans if span["name"].startswith("outbox publish")]
    assert relay and all(span["kind"] == "producer" and span["service"] == "order" for span in relay)
    assert {parent_of(span)["service"] for span in relay} == {"order"}
    consumed = [span for span in spans if span["service"] == "notification" and span["kind"] == "consumer"]
    assert consumed and all(parent_of(span)["service"] == "order" for span in consumed)
    assert any(span["name"].startswith("dynamodb.") for span in spans)
    assert servers["order"]["attributes"].get("order.id") == order["id"]

    shown = subprocess.run(
        [sys.executable, "-m", "cloudshop.cli", "trace", order["id"], "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"trace {trace_id}" in shown.stdout
    for service in SERVICES:
        assert service in shown.stdout
    assert "POST /api/v1/orders" in shown.stdout and "outbox publish order.created" in shown.stdout

    # Log lines written inside the trace carry its id.
    logged = [
        json.loads(line)
        for line in (state / "logs" / "order.log").read_text().splitlines()
        if line.startswith("{") and trace_id in line
    ]
    assert logged and all(entry["trace_id"] == trace_id for entry in logged)
