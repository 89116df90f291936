"""`cloudshop_backend_calls_total{kind,operation}`: each kind of backend call counts where it is made,
on real servers (dynalite, moto, PostgreSQL and SQLite, Kafka, an HTTP server on loopback), and every
service's `/metrics` exports the count."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from cloudshop import aws
from cloudshop.auth import InternalTokens, TokenVerifier
from cloudshop.clients import AsyncServiceClient, ServiceClient
from cloudshop.dynamodb import dynamodb_for
from cloudshop.estate import ESTATE
from cloudshop.gateway import build_gateway
from cloudshop.observability import Metrics, count_backend_call, serve_backend_calls
from cloudshop.settings import Settings
from cloudshop.sql import make_engine
from cloudshop.stream import KafkaEventPublisher
from cloudshop.web import create_app

SECRET = "c" * 40
SERVICE_TOKEN_SECRETS = {pair: SECRET for pair in ESTATE.token_pairs}
EXPORTED = Metrics("calls-test").registry  # any app's registry exports the process's counter


def calls(kind: str, operation: str) -> float:
    return EXPORTED.get_sample_value("cloudshop_backend_calls_total", {"kind": kind, "operation": operation}) or 0.0


class Counted:
    """The calls of one kind and operation made inside the block."""

    def __init__(self, kind: str, operation: str) -> None:
        self.kind, self.operation = kind, operation
        self.before = 0.0
        self.made = 0.0

    def __enter__(self) -> Counted:
        self.before = calls(self.kind, self.operation)
        return self

    def __exit__(self, *_: object) -> None:
        self.made = calls(self.kind, self.operation) - self.before


class JsonAnswer(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        payload = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), JsonAnswer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_a_dynamodb_call_of_the_async_client_counts_as_dynamodb(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(prefix="calls-", dynamodb="dynalite")
    db = dynamodb_for(settings)
    try:
        with Counted("dynamodb", "DescribeTable") as counted:
            await db.call("DescribeTable", {"TableName": settings.orders_table})
    finally:
        await db.aclose()

    assert counted.made == 1


def test_a_boto3_call_counts_under_its_aws_service(settings: Settings) -> None:
    sqs = aws.client("sqs", settings)

    with Counted("sqs", "GetQueueAttributes") as counted:
        sqs.get_queue_attributes(QueueUrl=settings.order_events_queue_url, AttributeNames=["All"])

    assert counted.made == 1


def test_each_sql_statement_counts_as_sql_and_a_connection_reused_at_once_is_not_pinged(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with Counted("sql", "SELECT") as selects, Counted("sql", "PING") as pings:
            for _ in range(2):
                with engine.single() as connection:
                    connection.execute("SELECT 1")
    finally:
        engine.dispose()

    assert selects.made == 2
    # Only a connection idle past PING_AFTER_IDLE_SECONDS costs a ping (cloudshop.sql._Pool).
    assert pings.made == 0


def test_a_pooled_connection_that_died_while_idle_is_replaced_before_anyone_uses_it(postgres_server) -> None:
    """Given a pooled connection whose server process was terminated while it sat idle,
    when the pool hands a connection out again, then the caller gets a live one, not an error."""
    engine = make_engine(postgres_server.url, ping_after_idle_seconds=0.0)
    admin = make_engine(postgres_server.url)
    try:
        with engine.transaction() as connection:
            backend = connection.execute("SELECT pg_backend_pid()").scalar()
        with admin.single() as connection:
            assert connection.execute("SELECT pg_terminate_backend(:pid)", {"pid": backend}).scalar()

        with Counted("sql", "PING") as pings, engine.transaction() as connection:
            replacement = connection.execute("SELECT pg_backend_pid()").scalar()

        assert pings.made == 1
        assert replacement != backend
    finally:
        engine.dispose()
        admin.dispose()


def test_a_connection_pinged_after_idling_is_handed_out_idle_even_in_autocommit(postgres_server) -> None:
    """The ping runs in a transaction the driver opens; left open, a checkout in autocommit mode (the
    product service's one-statement work) failed with "can't change 'autocommit' now"."""
    engine = make_engine(postgres_server.url, ping_after_idle_seconds=0.0)
    try:
        with engine.transaction() as connection:
            connection.execute("SELECT 1")
        for _ in range(2):
            with Counted("sql", "PING") as pings, engine.single() as connection:
                assert connection.execute("SELECT 1").scalar() == 1
            assert pings.made == 1
        with engine.transaction() as connection:
            assert connection.execute("SELECT 1").scalar() == 1
    finally:
        engine.dispose()


@pytest.mark.anyio
async def test_a_call_of_the_async_service_client_counts_as_http_to_its_target(http_server: str) -> None:
    client = AsyncServiceClient(
        name="product",
        base_url=http_server,
        tokens=InternalTokens(SERVICE_TOKEN_SECRETS, service="order"),
        timeout_seconds=5,
        retries=0,
    )
    try:
        with Counted("http", "product") as counted:
            assert await client.request("GET", "/internal/anything") == {"ok": True}
    finally:
        await client.aclose()

    assert counted.made == 1


def test_a_call_of_the_sync_service_client_counts_as_http_to_its_target(http_server: str) -> None:
    client = ServiceClient(
        name="payment",
        base_url=http_server,
        tokens=InternalTokens(SERVICE_TOKEN_SECRETS, service="order"),
        timeout_seconds=5,
        retries=0,
    )
    try:
        with Counted("http", "payment") as counted:
            assert client.request("GET", "/internal/anything") == {"ok": True}
    finally:
        client.close()

    assert counted.made == 1


@pytest.mark.anyio
async def test_a_request_the_gateway_proxies_counts_as_http_to_the_upstream_service(
    key_pair: tuple[str, str], http_server: str
) -> None:
    app = build_gateway(
        upstreams={"product": http_server},
        verifier=TokenVerifier(key_pair[1], issuer="cloudshop"),
        session_active=lambda _: True,
        internal_tokens=InternalTokens(SERVICE_TOKEN_SECRETS, service="gateway"),
        log_level="WARNING",
    )
    transport = httpx.ASGITransport(app=app)
    with Counted("http", "product") as counted:
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as gateway:
            answer = await gateway.get("/api/v1/products")
            exported = (await gateway.get("/metrics")).text

    assert answer.status_code == 200
    assert counted.made == 1
    assert 'cloudshop_backend_calls_total{kind="http",operation="product"}' in exported


@pytest.mark.kafka
def test_a_kafka_publish_counts_as_one_produce(kafka_server: Any) -> None:
    topic = f"calls-{uuid.uuid4().hex[:8]}"
    kafka_server.create_topics([topic])
    publisher = KafkaEventPublisher(kafka_server.bootstrap_servers)
    try:
        with Counted("kafka", "Produce") as counted:
            publisher.publish(topic, [("k1", '{"n": 1}'), ("k2", '{"n": 2}')])
    finally:
        publisher.close()

    assert counted.made == 1


def test_every_service_app_exports_the_process_backend_calls(settings: Settings) -> None:
    app = create_app(service="calls", settings=settings, routers=[])
    aws.client("sqs", settings).list_queues()

    with TestClient(app) as client:
        exported = client.get("/metrics").text

    assert 'cloudshop_backend_calls_total{kind="sqs",operation="ListQueues"}' in exported


def test_a_process_without_an_app_serves_its_backend_calls_on_a_port_of_its_own() -> None:
    # What the local notification poller does, so that the bench counts the notification work too
    port = serve_backend_calls(0)
    operation = f"Op{uuid.uuid4().hex[:8]}"
    count_backend_call("ses", operation)
    count_backend_call("ses", operation)

    page = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text

    assert f'cloudshop_backend_calls_total{{kind="ses",operation="{operation}"}} 2.0' in page
