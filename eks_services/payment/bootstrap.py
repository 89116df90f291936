"""Wire the payment service once: uvicorn (`app.py`), the contract generator and the tests all call
`build_app`."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from cloudshop.auth import TokenVerifier, internal_tokens_for
from cloudshop.dynamodb import dynamodb_for
from cloudshop.settings import Settings
from cloudshop.sqs import sqs_for
from cloudshop.web import create_app
from eks_services.payment.api import router
from eks_services.payment.model import Payment
from eks_services.payment.ports import EventPublisher, PaymentProvider
from eks_services.payment.provider import SimulatedProvider
from eks_services.payment.publisher import SqsEventPublisher
from eks_services.payment.relay import PaymentOutboxRelay
from eks_services.payment.repository import DynamoDBPaymentRepository
from eks_services.payment.service import PENDING_WAIT_SECONDS, PaymentService

log = logging.getLogger("cloudshop.payment")


def build_app(
    settings: Settings,
    *,
    provider: PaymentProvider | None = None,
    publisher: EventPublisher | None = None,
    payments: DynamoDBPaymentRepository | None = None,
    pending_wait_seconds: float = PENDING_WAIT_SECONDS,
) -> FastAPI:
    """The payment app with its adapters: DynamoDB (async), SQS `payment-events`, the simulated
    provider. Tests may pass a wrapped provider, a fake publisher, a repository on a client of their
    own, or a shorter wait for a twin charge."""
    tokens = internal_tokens_for(settings, service="payment")
    dynamodb = dynamodb_for(settings) if payments is None else payments.dynamodb
    repository = payments or DynamoDBPaymentRepository(dynamodb, table=settings.payments_table)
    sqs, sink = None, publisher
    if sink is None:
        sqs = sqs_for(settings)
        sink = SqsEventPublisher(sqs, queue_url=settings.payment_events_queue_url)
    relay = PaymentOutboxRelay(
        outbox=repository,
        publisher=sink,
        interval_seconds=settings.outbox_relay_interval_seconds,
    )
    service = PaymentService(
        payments=repository,
        provider=provider or SimulatedProvider(slow_charge_seconds=settings.payment_slow_charge_seconds),
        on_event=relay.wake,
        pending_wait_seconds=pending_wait_seconds,
    )

    app = create_app(
        service="payment",
        settings=settings,
        routers=[],
        readiness={"payments": repository.describe},
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        internal_tokens=tokens,
    )
    charges = app.state.metrics.counter("payment_charges_total", "New charges by outcome", ("status",))

    def count_charge(payment: Payment) -> None:
        charges.labels(str(payment.status)).inc()

    # async although it only hands out the service: FastAPI runs a plain `def` dependency in a worker
    # thread, a thread hop per request.
    async def payment_service() -> PaymentService:
        return service

    app.include_router(router(payment_service, on_charged=count_charge))
    relay_runs = settings.outbox_relay_enabled and bool(publisher or settings.payment_events_queue_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if relay_runs:
            relay.start()
        elif settings.outbox_relay_enabled:
            log.warning("PAYMENT_EVENTS_QUEUE_URL is not set: refund events stay in the outbox")
        yield
        await relay.stop()
        if sqs is not None:
            await sqs.aclose()
        await dynamodb.aclose()

    app.router.lifespan_context = lifespan
    return app
