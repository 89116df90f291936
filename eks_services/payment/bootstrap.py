"""Wire the payment service once: uvicorn (`app.py`) and the tests both call `build_app`."""

from __future__ import annotations

from fastapi import FastAPI

from cloudshop import aws
from cloudshop.auth import InternalTokens, TokenVerifier
from cloudshop.clients import ServiceClient
from cloudshop.settings import Settings
from cloudshop.web import create_app
from eks_services.payment.api import router
from eks_services.payment.model import OrderLookup, PaymentProvider, RefundCallback
from eks_services.payment.orders import HttpOrderService
from eks_services.payment.provider import SimulatedProvider
from eks_services.payment.repository import DynamoDBPaymentRepository
from eks_services.payment.service import PaymentService


def build_service(
    settings: Settings,
    *,
    tokens: InternalTokens,
    orders: OrderLookup | None = None,
    refund_callback: RefundCallback | None = None,
    provider: PaymentProvider | None = None,
) -> PaymentService:
    """The service with its adapters. Tests pass in-memory `orders`/`refund_callback` and may wrap
    the provider; production gets the order service over HTTP and the simulated provider."""
    if orders is None or refund_callback is None:
        order_service = HttpOrderService(
            ServiceClient(
                name="order",
                base_url=settings.order_service_url,
                tokens=tokens,
                timeout_seconds=settings.service_timeout_seconds,
                retries=settings.service_retries,
            )
        )
        orders = orders or order_service
        refund_callback = refund_callback or order_service
    return PaymentService(
        payments=DynamoDBPaymentRepository(aws.client("dynamodb", settings), table=settings.payments_table),
        provider=provider or SimulatedProvider(slow_charge_seconds=settings.payment_slow_charge_seconds),
        orders=orders,
        refund_callback=refund_callback,
    )


def build_app(
    settings: Settings,
    *,
    orders: OrderLookup | None = None,
    refund_callback: RefundCallback | None = None,
    provider: PaymentProvider | None = None,
    service: PaymentService | None = None,
) -> FastAPI:
    tokens = InternalTokens(settings.internal_token_secret.get_secret_value(), service="payment")
    payments = service or build_service(
        settings, tokens=tokens, orders=orders, refund_callback=refund_callback, provider=provider
    )
    dynamodb = payments.payments.client
    app = create_app(
        service="payment",
        settings=settings,
        routers=[router()],
        readiness={"payments": lambda: dynamodb.describe_table(TableName=settings.payments_table)},
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        internal_tokens=tokens,
        state={"payments": payments},
    )
    app.state.charge_outcomes = app.state.metrics.counter(
        "payment_charges_total", "New charges by outcome", ("status",)
    )
    return app
