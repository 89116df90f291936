"""Wire the order service once: uvicorn (container) and the tests call `build_app`."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from cloudshop import aws
from cloudshop.auth import InternalTokens, TokenVerifier
from cloudshop.clients import ServiceClient
from cloudshop.settings import Settings
from cloudshop.stream import publisher_from_settings
from cloudshop.web import create_app
from eks_services.order.api import router
from eks_services.order.invoice import InvoiceWriter
from eks_services.order.ports import Catalog, HttpCatalog, HttpPayments, Payments
from eks_services.order.relay import OutboxRelay
from eks_services.order.repository import DynamoDBCartRepository, DynamoDBOrderRepository
from eks_services.order.service import CartService, CheckoutService
from eks_services.order.sweeper import AbandonedOrderSweeper


def service_client(settings: Settings, *, name: str, base_url: str, tokens: InternalTokens) -> ServiceClient:
    return ServiceClient(
        name=name,
        base_url=base_url,
        tokens=tokens,
        timeout_seconds=settings.service_timeout_seconds,
        retries=settings.service_retries,
    )


def build_app(settings: Settings, *, catalog: Catalog | None = None, payments: Payments | None = None) -> FastAPI:
    tokens = InternalTokens(settings.internal_token_secret.get_secret_value(), service="order")
    dynamodb = aws.client("dynamodb", settings)
    s3 = aws.client("s3", settings)
    catalog = catalog or HttpCatalog(
        service_client(settings, name="product", base_url=settings.product_service_url, tokens=tokens)
    )
    payments = payments or HttpPayments(
        service_client(settings, name="payment", base_url=settings.payment_service_url, tokens=tokens)
    )
    orders = DynamoDBOrderRepository(dynamodb, orders_table=settings.orders_table)
    carts = DynamoDBCartRepository(dynamodb, table=settings.carts_table, ttl_seconds=settings.cart_ttl_seconds)
    relay = OutboxRelay(
        orders=orders,
        publisher=publisher_from_settings(settings),
        sqs=aws.client("sqs", settings),
        queue_url=settings.order_events_queue_url,
        topic=settings.orders_topic,
        interval_seconds=settings.outbox_relay_interval_seconds,
    )
    checkout = CheckoutService(
        orders=orders,
        carts=carts,
        catalog=catalog,
        payments=payments,
        invoices=InvoiceWriter(s3, bucket=settings.order_documents_bucket),
        on_event=relay.wake,
    )
    app = create_app(
        service="order",
        settings=settings,
        routers=[router()],
        readiness={
            "orders": lambda: dynamodb.describe_table(TableName=settings.orders_table),
        },
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        internal_tokens=tokens,
        state={"carts": CartService(carts=carts, catalog=catalog), "checkout": checkout, "relay": relay, "s3": s3},
    )

    sweeper = AbandonedOrderSweeper(
        checkout=checkout,
        interval_seconds=settings.abandoned_order_sweep_interval_seconds,
        older_than_seconds=settings.abandoned_order_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        if settings.outbox_relay_enabled:
            relay.start()
        if settings.abandoned_order_sweeper_enabled:
            sweeper.start()
        yield
        sweeper.stop()
        relay.stop()
        relay.publisher.close()

    app.router.lifespan_context = lifespan
    return app
