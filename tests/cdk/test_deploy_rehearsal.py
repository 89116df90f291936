"""The deploy rehearsal: a fresh dev deployment, as synthesised and rendered, sells end to end.

The dev templates (the session `synth`) are deployed onto local servers by `tests.cdk.rehearsal`:
every Lambda runs with exactly the environment its template gives it, every pod with the environment
the dev overlay and CDK's `cloudshop-aws` ConfigMap give it, the HTTP API routes and authorizes as
its template says, and the database starts empty with only its master user. Nothing is provisioned
or migrated by hand: what makes the database usable must be part of the deployment itself (its
migration step), and what makes the shop usable must be the operator's documented commands.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest

from cloudshop.estate import ESTATE
from cloudshop.storefront import ASSET_CACHE_CONTROL, PAGE_CACHE_CONTROL
from tests.cdk.generated import Templates, gitops
from tests.cdk.rehearsal.harness import Rehearsal
from tests.cdk.rehearsal.processes import wait_until

pytestmark = [pytest.mark.rehearsal, pytest.mark.infra, pytest.mark.slow, pytest.mark.timeout(420)]

PASSWORD = "rehearsal-pass-42"
ADMIN_PASSWORD = "rehearsal-admin-7"
ADDRESS = {
    "name": "Asha",
    "line1": "1 MG Road",
    "city": "Bengaluru",
    "state": "KA",
    "postal_code": "560001",
    "country": "IN",
}
# Seconds an order event may take: outbox relay -> SQS or Kafka -> the event source's poll -> the Lambda.
EVENT_TIMEOUT = 30.0


@pytest.fixture(scope="module")
def rehearsal(synth: Any, kafka_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rehearsal]:
    templates = Templates.from_synthesis(synth)
    cluster = gitops(templates.environment)
    with Rehearsal(
        templates,
        assets=synth.outdir,
        cluster_objects=cluster.objects,
        kafka=kafka_server,
        work=tmp_path_factory.mktemp("rehearsal"),
    ) as running:
        yield running


def answer(response: Any) -> str:
    return f"{response.request.method} {response.request.url} -> {response.status_code}: {response.text[:2000]}"


def test_the_gateway_picks_routes_as_api_gateway_does(rehearsal: Rehearsal) -> None:
    api = rehearsal.api

    def route(method: str, path: str) -> str | None:
        selected = api.select(method, path)
        return selected[0].key.text if selected else None

    # A method beats ANY on the same path; a greedy variable needs at least one segment.
    assert route("GET", "/api/v1/products/p-1") == "GET /api/v1/products/{proxy+}"
    assert route("PATCH", "/api/v1/products/p-1") == "ANY /api/v1/products/{proxy+}"
    assert route("GET", "/api/v1/products") == "GET /api/v1/products"
    assert route("DELETE", "/api/v1/products") is None
    # An exact path beats a greedy one.
    assert route("POST", "/api/v1/orders") == "ANY /api/v1/orders"
    assert route("POST", "/api/v1/orders/o-1/cancel") == "ANY /api/v1/orders/{proxy+}"
    assert route("GET", "/nowhere") is None


def test_the_storefront_build_lands_in_its_bucket_with_its_cache_rules(rehearsal: Rehearsal) -> None:
    (site,) = [
        r
        for r in rehearsal.deployment.of_type("AWS::S3::Bucket")
        if r.stack == "Api" and r.logical_id.startswith("StorefrontSite")
    ]
    s3 = rehearsal.estate.s3
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=site.physical_id).get("Contents", [])}
    assert "index.html" in keys
    assert not any(key.startswith(".vite/") or key == "size-report.json" for key in keys)
    page = s3.head_object(Bucket=site.physical_id, Key="index.html")
    assert page["CacheControl"] == PAGE_CACHE_CONTROL and page["ContentType"] == "text/html"
    for key in (k for k in keys if k.startswith("assets/")):
        assert s3.head_object(Bucket=site.physical_id, Key=key)["CacheControl"] == ASSET_CACHE_CONTROL


def test_every_function_reaches_the_database_through_the_proxy_with_a_secret_the_proxy_holds(
    rehearsal: Rehearsal,
) -> None:
    assert rehearsal.estate is not None and rehearsal.lambdas is not None
    for endpoint, login in rehearsal.estate.proxies.items():
        users = [
            spec
            for spec in rehearsal.lambdas.functions.values()
            if endpoint in spec.environment.get("DATABASE_URL", "")
        ]
        assert users, f"no function uses RDS Proxy {login.proxy}"
        for spec in users:
            secret = spec.environment.get("DATABASE_SECRET_ARN")
            assert secret in login.secret_arns, (
                f"{spec} signs in to {login.proxy} with {secret}, which the proxy does not hold "
                f"(it holds {sorted(login.secret_arns)}): RDS Proxy would refuse the connection"
            )


def test_a_fresh_deployment_migrates_itself_and_sells_end_to_end(rehearsal: Rehearsal) -> None:
    http = rehearsal.client()
    evidence = rehearsal.evidence

    # Given the deployment's own migration step ran against the empty database
    assert rehearsal.deployment.of_type("Custom::SchemaMigration"), (
        "the templates have no migration step (Custom::SchemaMigration): nothing migrates the cloud's database"
    )
    assert migrated_revisions(rehearsal) == {schema.service for schema in ESTATE.sql_schemas}
    # And the API answers its own health check
    health = http.get("/healthz")
    assert health.status_code == 200 and health.json()["status"] == "ok", answer(health)

    # When the operator creates the first admin and loads the catalog with the documented commands
    admin_email = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    created = rehearsal.cli(
        "admin", "create", "--env", "dev", "--email", admin_email, "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
    )
    assert created.returncode == 0, f"admin create: {created.stdout}\n{created.stderr}\n{evidence()}"
    loaded = rehearsal.cli("catalog", "load", "--env", "dev")
    assert loaded.returncode == 0, f"catalog load: {loaded.stdout}\n{loaded.stderr}\n{evidence()}"

    # Then a customer registers and logs in; the gateway's authorizer guards the rest
    customer = register_and_log_in(http, f"buyer-{uuid.uuid4().hex[:8]}@example.com", evidence=evidence)
    assert http.get("/api/v1/notifications").status_code == 401
    assert http.get("/api/v1/notifications", headers={"Authorization": "Bearer forged"}).status_code == 403

    # And browses the catalog and fills a cart
    products = http.get("/api/v1/products", params={"limit": 5})
    assert products.status_code == 200, f"{answer(products)}\n{evidence()}"
    product = next((p for p in products.json()["items"] if p["stock"] >= 2), None)
    assert product is not None, answer(products)
    assert http.get(f"/api/v1/products/{product['id']}").status_code == 200
    added = http.put(f"/api/v1/cart/items/{product['id']}", json={"quantity": 2}, headers=customer)
    assert added.status_code == 200, f"{answer(added)}\n{evidence()}"

    # And checks out: the order pod reserves stock through the API's internal route, the payment pod charges
    checkout = http.post(
        "/api/v1/orders",
        json={"shipping_address": ADDRESS, "payment_method": "pm_card_ok"},
        headers={**customer, "Idempotency-Key": str(uuid.uuid4())},
    )
    assert checkout.status_code == 201, f"{answer(checkout)}\n{evidence()}"
    order = checkout.json()
    assert order["status"] == "PAID", answer(checkout)
    assert order["total"]["amount"] == 2 * product["price"]["amount"], answer(checkout)
    assert http.get(f"/api/v1/orders/{order['id']}", headers=customer).json()["status"] == "PAID"
    assert http.get(f"/api/v1/products/{product['id']}").json()["stock"] == product["stock"] - 2

    # And the notification arrives: outbox relay -> SQS -> the event source mapping -> the notification Lambda
    def notified() -> bool:
        listed = http.get("/api/v1/notifications", headers=customer)
        return listed.status_code == 200 and order["id"] in listed.text

    wait_until("the order's notification", notified, timeout=EVENT_TIMEOUT, interval=0.5, evidence=evidence)
    assert sum(source.delivered for source in rehearsal.event_sources) >= 1
    # And the order's events reached the brokers the template names (MSK, here the local broker)
    assert order["id"] in topic_text(rehearsal.kafka.bootstrap_servers, "orders", until=order["id"]), evidence()

    # And the admin the operator created logs in, as an admin
    admin = register_and_log_in(http, admin_email, password=ADMIN_PASSWORD, register=False, evidence=evidence)
    me = http.get("/api/v1/users/me", headers=admin)
    assert me.status_code == 200 and me.json()["role"] == "admin", answer(me)

    # And a window the Dataproc job publishes on analytics-results is answered by the analytics API: the
    # MSK event source mapping -> the windows consumer Lambda -> the results bucket -> the order pods
    window = published_window(rehearsal.kafka.bootstrap_servers)

    def window_answered() -> bool:
        listed = http.get("/api/v1/analytics/windows", params={"limit": 100}, headers=admin)
        return listed.status_code == 200 and window in listed.json()["items"]

    wait_until(
        "the window on the analytics API", window_answered, timeout=EVENT_TIMEOUT, interval=0.5, evidence=evidence
    )

    # And no service signed in to the database as its master user, each as its own role
    users = database_users(rehearsal)
    assert rehearsal.database.user not in users, f"connections as the master user {rehearsal.database.user}: {users}"
    assert {schema.role for schema in ESTATE.sql_schemas} <= users, users


def register_and_log_in(
    http: httpx.Client, email: str, *, password: str = PASSWORD, register: bool = True, evidence: Any
) -> dict[str, str]:
    if register:
        registered = http.post("/api/v1/auth/register", json={"email": email, "password": password, "name": "Asha"})
        assert registered.status_code == 201, f"{answer(registered)}\n{evidence()}"
    login = http.post("/api/v1/auth/login", json={"email": email, "password": password})
    assert login.status_code == 200, f"{answer(login)}\n{evidence()}"
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


def published_window(bootstrap_servers: str) -> dict[str, Any]:
    """A window as the Spark job publishes it on `analytics-results` (key = its start), far in the future
    so that it is the newest of the topic whatever else is on it."""
    import json
    import random
    from datetime import UTC, datetime, timedelta

    from kafka import KafkaProducer

    start_at = datetime(2099, 12, 31, tzinfo=UTC) + timedelta(minutes=random.randrange(23 * 60))
    start, end = (moment.strftime("%Y-%m-%dT%H:%M:%SZ") for moment in (start_at, start_at + timedelta(minutes=1)))
    window = {
        "window_start": start,
        "window_end": end,
        "unique_users": 1,
        "orders": 1,
        "revenue": [{"amount": 129900, "currency": "INR"}],
        "items_sold": 2,
        "final": True,
    }
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers)
    try:
        producer.send("analytics-results", key=start.encode(), value=json.dumps(window).encode()).get(timeout=30)
    finally:
        producer.close()
    return window


def migrated_revisions(rehearsal: Rehearsal) -> set[str]:
    """The services whose Alembic version table holds a revision."""
    with psycopg.connect(rehearsal.database.url, autocommit=True) as connection:
        found: set[str] = set()
        for schema in ESTATE.sql_schemas:
            exists = connection.execute("SELECT to_regclass(%s)", (schema.version_table,)).fetchone()
            if exists and exists[0] and connection.execute(f'SELECT 1 FROM "{schema.version_table}"').fetchone():
                found.add(schema.service)
        return found


def database_users(rehearsal: Rehearsal) -> set[str]:
    """Who the open connections (the services' pools) signed in as."""
    with psycopg.connect(rehearsal.database.url, autocommit=True) as connection:
        rows = connection.execute(
            "SELECT DISTINCT usename FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        return {row[0] for row in rows}


def topic_text(bootstrap_servers: str, topic: str, *, until: str) -> str:
    """The values of `topic` from the beginning, read until one contains `until` or EVENT_TIMEOUT passes."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(EVENT_TIMEOUT * 1000),
    )
    seen = []
    try:
        for record in consumer:
            seen.append(record.value.decode(errors="replace"))
            if until in seen[-1]:
                break
    finally:
        consumer.close()
    return "\n".join(seen)
