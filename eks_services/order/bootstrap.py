"""Wire the order service once: uvicorn (`app.py`), the contract generator and the tests all come
through here. `build_runtime` makes the adapters and use cases (tests pass fakes for any port);
`build_app` puts the HTTP edge and the background tasks (outbox relay, abandoned-order sweeper,
payment-events consumer: asyncio tasks in the app's lifespan, no threads of our own) around it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI

from cloudshop import aws
from cloudshop.auth import InternalTokens, TokenVerifier, internal_tokens_for
from cloudshop.clients import AsyncServiceClient
from cloudshop.dynamodb import DynamoDB, dynamodb_for
from cloudshop.s3 import s3_for
from cloudshop.settings import Settings
from cloudshop.sqs import SqsClient, sqs_for
from cloudshop.stream import publisher_from_settings
from cloudshop.web import create_app
from eks_services.order.api import OrderServices, router
from eks_services.order.clients import HttpCatalog, HttpPayments
from eks_services.order.consumer import PaymentEventsConsumer
from eks_services.order.invoice import S3Invoices
from eks_services.order.messaging import (
    FanoutPublisher,
    SqsEventPublisher,
    SqsPaymentEventSource,
    StreamEventPublisher,
)
from eks_services.order.ports import (
    Carts,
    Catalog,
    CheckoutReader,
    EventPublisher,
    Invoices,
    Orders,
    PaymentEventSource,
    Payments,
)
from eks_services.order.relay import CHECKOUT_SETTLE_SECONDS, OutboxRelay
from eks_services.order.repository import DynamoDBCartRepository, DynamoDBCheckoutReader, DynamoDBOrderRepository
from eks_services.order.service import AnalyticsWindows, CartService, CheckoutService
from eks_services.order.sweeper import AbandonedOrderSweeper

Closer = Callable[[], Awaitable[None]]


@dataclass
class OrderRuntime:
    """The wired service: use cases, background workers, and what to close at shutdown."""

    settings: Settings
    tokens: InternalTokens
    services: OrderServices
    relay: OutboxRelay
    sweeper: AbandonedOrderSweeper
    consumer: PaymentEventsConsumer | None
    ready: Callable[[], Coroutine[Any, Any, None]]
    closers: list[Closer] = field(default_factory=list)

    @property
    def checkout(self) -> CheckoutService:
        return self.services.checkout

    async def start(self) -> None:
        if self.settings.outbox_relay_enabled:
            self.relay.start()
        if self.settings.abandoned_order_sweeper_enabled:
            self.sweeper.start()
        if self.consumer is not None and self.settings.payment_events_consumer_enabled:
            self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        await self.sweeper.stop()
        await self.relay.stop()
        await self.checkout.background.drain()
        for close in reversed(self.closers):
            await close()


def service_client(settings: Settings, *, name: str, base_url: str, tokens: InternalTokens) -> AsyncServiceClient:
    return AsyncServiceClient(
        name=name,
        base_url=base_url,
        tokens=tokens,
        timeout_seconds=settings.service_timeout_seconds,
        retries=settings.service_retries,
    )


def build_runtime(
    settings: Settings,
    *,
    catalog: Catalog | None = None,
    payments: Payments | None = None,
    orders: Orders | None = None,
    carts: Carts | None = None,
    reader: CheckoutReader | None = None,
    invoices: Invoices | None = None,
    publisher: EventPublisher | None = None,
    payment_events: PaymentEventSource | None = None,
    dynamodb: DynamoDB | None = None,
) -> OrderRuntime:
    """The order service with its adapters; any port given is used instead of the real adapter."""
    tokens = internal_tokens_for(settings, service="order")
    closers: list[Closer] = []
    if dynamodb is None and (orders is None or carts is None or reader is None):
        dynamodb = dynamodb_for(settings)
        closers.append(dynamodb.aclose)
    if catalog is None:
        product = service_client(settings, name="product", base_url=settings.product_service_url, tokens=tokens)
        closers.append(product.aclose)
        catalog = HttpCatalog(product)
    if payments is None:
        payment = service_client(settings, name="payment", base_url=settings.payment_service_url, tokens=tokens)
        closers.append(payment.aclose)
        payments = HttpPayments(payment)
    order_repository = DynamoDBOrderRepository(dynamodb, table=settings.orders_table) if dynamodb else None
    cart_repository = (
        DynamoDBCartRepository(dynamodb, table=settings.carts_table, ttl_seconds=settings.cart_ttl_seconds)
        if dynamodb
        else None
    )
    orders = orders or order_repository
    carts = carts or cart_repository
    if reader is None and order_repository and cart_repository:
        reader = DynamoDBCheckoutReader(order_repository, cart_repository)
    assert orders is not None and carts is not None and reader is not None, "storage ports or a DynamoDB client"
    sqs: SqsClient | None = None
    if (publisher is None and settings.order_events_queue_url) or (
        payment_events is None and settings.payment_events_queue_url
    ):
        # One client for the relay's sends and the consumer's polls, closed after both adapters.
        sqs = sqs_for(settings)
        closers.append(sqs.aclose)
    if publisher is None:
        sinks: list[EventPublisher] = [
            StreamEventPublisher(publisher_from_settings(settings), topic=settings.orders_topic)
        ]
        if sqs is not None and settings.order_events_queue_url:
            sinks.append(SqsEventPublisher(sqs, queue_url=settings.order_events_queue_url))
        publisher = FanoutPublisher(*sinks)
    closers.append(publisher.aclose)
    if payment_events is None and sqs is not None and settings.payment_events_queue_url:
        payment_events = SqsPaymentEventSource(sqs, queue_url=settings.payment_events_queue_url)
    if payment_events is not None:
        closers.append(payment_events.aclose)
    if invoices is None:
        s3 = s3_for(settings)
        closers.append(s3.aclose)
        invoices = S3Invoices(s3, bucket=settings.order_documents_bucket, presigner=aws.client("s3", settings))

    relay = OutboxRelay(
        orders=orders,
        publisher=publisher,
        interval_seconds=settings.outbox_relay_interval_seconds,
        settle_seconds=CHECKOUT_SETTLE_SECONDS,
    )
    checkout = CheckoutService(
        orders=orders,
        carts=carts,
        reader=reader,
        catalog=catalog,
        payments=payments,
        invoices=invoices,
        on_event=relay.wake,
    )
    services = OrderServices(
        carts=CartService(carts=carts, catalog=catalog),
        checkout=checkout,
        windows=AnalyticsWindows(aws.client("s3", settings), bucket=settings.analytics_results_bucket),
    )

    async def ready() -> None:
        if order_repository is not None:
            await order_repository.describe()

    return OrderRuntime(
        settings=settings,
        tokens=tokens,
        services=services,
        relay=relay,
        sweeper=AbandonedOrderSweeper(
            checkout=checkout,
            interval_seconds=settings.abandoned_order_sweep_interval_seconds,
            older_than_seconds=settings.abandoned_order_seconds,
        ),
        consumer=PaymentEventsConsumer(source=payment_events, checkout=checkout) if payment_events else None,
        ready=ready,
        closers=closers,
    )


def app_for(runtime: OrderRuntime) -> FastAPI:
    settings = runtime.settings
    app = create_app(
        service="order",
        settings=settings,
        routers=[router(runtime.services)],
        readiness={"orders": runtime.ready},  # async: checked on the loop, no thread hop
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        internal_tokens=runtime.tokens,
    )
    runtime.relay.attach_metrics(app.state.metrics)
    runtime.sweeper.attach_metrics(app.state.metrics)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app.router.lifespan_context = lifespan
    return app


def build_app(settings: Settings, *, catalog: Catalog | None = None, payments: Payments | None = None) -> FastAPI:
    return app_for(build_runtime(settings, catalog=catalog, payments=payments))
