"""200 buyers check out at once on the full profile (PostgreSQL, dynalite, Kafka, moto; every service
its own process), the load that once starved the order service's threads and its `/healthz`.

Every buyer ends with one answer that is a final outcome (PAID, PAYMENT_FAILED for a declined card, or
an out-of-stock problem); an overload 503 is a fast refusal with `Retry-After`, after which the buyer
retries with the same Idempotency-Key as a client should. Stock ends exact, nothing is charged twice,
no order is left waiting for its payment, and the order and payment services answer their liveness
probe within its timeout the whole time.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
import yaml

from tests.fixtures.platform import RunningPlatform

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.kafka, pytest.mark.postgres]

BUYERS = 200
STOCK = 150
DECLINED_EVERY = 10  # every tenth buyer pays with a card that is declined
ADDRESS = {"name": "L", "line1": "1 Load Lane", "city": "Pune", "state": "MH", "postal_code": "411001", "country": "IN"}
K8S_BASE = Path(__file__).resolve().parents[2] / "eks_services" / "k8s" / "base"


def liveness_timeout_seconds(service: str) -> float:
    """The liveness probe's timeout from the service's Deployment: what EKS would wait before counting
    a failure (and, after a few, restarting the pod mid-checkout)."""
    deployment = yaml.safe_load((K8S_BASE / service / "deployment.yaml").read_text())
    (container,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if "livenessProbe" in c]
    return float(container["livenessProbe"]["timeoutSeconds"])


def probe_health(url: str, *, timeout: float, stop: threading.Event) -> list[float | str]:
    """Ask `url` every 200 ms until `stop`; each answer's latency in seconds, or what went wrong. On a
    thread of its own, as the kubelet probes from outside: the test's event loop, busy with 200
    buyers, would otherwise add its own lag to every probe."""
    seen: list[float | str] = []
    with httpx.Client(timeout=timeout) as http:
        while not stop.wait(0.2):
            started = time.perf_counter()
            try:
                answer = http.get(url)
                seen.append(time.perf_counter() - started if answer.status_code == 200 else f"{answer.status_code}")
            except httpx.HTTPError as exc:
                seen.append(type(exc).__name__)
    return seen


async def buy(
    http: httpx.AsyncClient, buyer: dict[str, str], method: str, refusals: list[httpx.Response]
) -> httpx.Response:
    """Check out once, retrying a 503 after the time it asks for, with the same key."""
    headers = {"Authorization": buyer["Authorization"], "Idempotency-Key": uuid.uuid4().hex}
    body = {"shipping_address": ADDRESS, "payment_method": method}
    while True:
        answer = await http.post("/api/v1/orders", headers=headers, json=body)
        if answer.status_code != 503:
            return answer
        refusals.append(answer)
        await asyncio.sleep(int(answer.headers.get("retry-after-ms", "200")) / 1000)


async def checkout_all(
    platform: RunningPlatform, buyers: list[dict[str, str]]
) -> tuple[list[httpx.Response], list[httpx.Response], dict[str, list[float | str]]]:
    stop = threading.Event()
    probes = {
        service: asyncio.create_task(
            asyncio.to_thread(
                probe_health,
                f"{platform.liveness_url(service)}/healthz",
                timeout=liveness_timeout_seconds(service),
                stop=stop,
            )
        )
        for service in ("order", "payment")
    }
    refusals: list[httpx.Response] = []
    limits = httpx.Limits(max_connections=BUYERS, max_keepalive_connections=BUYERS)
    async with httpx.AsyncClient(base_url=platform.gateway, timeout=60.0, limits=limits) as http:
        answers = await asyncio.gather(
            *(
                buy(http, buyer, "pm_card_declined" if n % DECLINED_EVERY == 0 else "pm_card_ok", refusals)
                for n, buyer in enumerate(buyers)
            )
        )
    stop.set()
    return list(answers), refusals, {service: await task for service, task in probes.items()}


def payments_by_order(platform: RunningPlatform) -> dict[str, list[dict[str, Any]]]:
    table = boto3.resource(
        "dynamodb", endpoint_url=platform.settings.dynamodb_endpoint, region_name=platform.settings.aws_region
    ).Table(platform.settings.payments_table)
    items: list[dict[str, Any]] = []
    page = table.scan(ConsistentRead=True)
    items += page["Items"]
    while "LastEvaluatedKey" in page:
        page = table.scan(ConsistentRead=True, ExclusiveStartKey=page["LastEvaluatedKey"])
        items += page["Items"]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        grouped.setdefault(str(item["order_id"]), []).append(item)
    return grouped


def test_two_hundred_concurrent_checkouts_end_exact_with_health_answering_throughout(
    platform: RunningPlatform,
) -> None:
    with platform.client() as http:
        admin = platform.admin(http)
        created = http.post(
            "/api/v1/products",
            headers=admin,
            json={
                "name": f"Load item {uuid.uuid4().hex[:6]}",
                "description": "",
                "category": "load",
                "price": {"amount": 2500, "currency": "INR"},
                "stock": STOCK,
            },
        )
        assert created.status_code == 201, created.text
        product = created.json()["id"]
        with ThreadPoolExecutor(8) as pool:
            buyers = list(pool.map(lambda _: platform.new_customer(http), range(BUYERS)))
        for buyer in buyers:
            put = http.put(
                f"/api/v1/cart/items/{product}", json={"quantity": 1}, headers={"Authorization": buyer["Authorization"]}
            )
            assert put.status_code == 200, put.text

        answers, refusals, health = asyncio.run(checkout_all(platform, buyers))

        outcomes = Counter(
            a.json()["status"] if a.status_code == 201 else f"{a.status_code} {a.json().get('type', '')}"
            for a in answers
        )
        for answer in [a for a in answers if a.status_code != 201] + refusals:
            assert answer.headers["content-type"].startswith("application/problem+json"), answer.text
        assert all(r.headers.get("retry-after") and r.headers.get("retry-after-ms") for r in refusals)
        finals = {"PAID", "PAYMENT_FAILED"}
        unexpected = {k: v for k, v in outcomes.items() if k not in finals and not k.startswith("409 ")}
        assert not unexpected, outcomes

        paid = [a.json() for a in answers if a.status_code == 201 and a.json()["status"] == "PAID"]
        declined = [a.json() for a in answers if a.status_code == 201 and a.json()["status"] == "PAYMENT_FAILED"]
        out_of_stock = sum(v for k, v in outcomes.items() if k.startswith("409 "))
        assert len(paid) + len(declined) + out_of_stock == BUYERS, outcomes
        # A declined card arriving after the last item was taken is out of stock instead.
        assert 0 < len(declined) <= BUYERS // DECLINED_EVERY, outcomes
        assert 0 < len(paid) <= STOCK, outcomes
        if out_of_stock:
            # A buyer is refused only when every unit was held: sold, or reserved by a payment still in
            # flight that is then declined and released. So units left unsold at the end are at most
            # the declined buyers' (seen: 149 paid, 17 declined, 34 refused — one unit released late).
            assert STOCK - len(paid) <= len(declined), outcomes
        assert http.get(f"/api/v1/products/{product}").json()["stock"] == STOCK - len(paid)

        charges = payments_by_order(platform)
        for order in paid:
            (payment,) = charges[order["id"]]  # one charge per order, never two
            assert payment["status"] == "CAPTURED" and int(payment["amount"]) == order["total"]["amount"]
        for order in declined:
            assert all(p["status"] != "CAPTURED" for p in charges.get(order["id"], []))

        for buyer in buyers:
            listed = http.get("/api/v1/orders", headers={"Authorization": buyer["Authorization"]}).json()["items"]
            assert len(listed) <= 1 and all(o["status"] != "PENDING_PAYMENT" for o in listed), listed

    for service, seen in health.items():
        failures = [s for s in seen if isinstance(s, str)]
        assert seen and not failures, f"{service} /healthz failed {len(failures)}/{len(seen)} probes: {failures[:5]}"
