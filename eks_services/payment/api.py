"""HTTP transport of the payment service: public payment detail and admin refunds, and the internal
charge/refund/verify API the order service calls with a service token (the estate declares it the
only caller of each: `ESTATE.internal_routes`). Routes reach only the service, through the
`get_service` dependency.

No `from __future__ import annotations` here: the routes' annotations name `Service`, a type local to
`router()`, which FastAPI can only see when annotations are evaluated where they are written.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudshop.estate import API_PREFIX
from cloudshop.paths import ID_PATTERN
from cloudshop.web import AdminPrincipal, CurrentPrincipal, InternalCaller, ResourceId
from eks_services.payment.model import (
    AMOUNT_MAX,
    IDEMPOTENCY_KEY_MAX,
    PAYMENT_METHOD,
    ChargeRequest,
    Payment,
    Refund,
    refund_dict,
)
from eks_services.payment.service import PaymentService

REPLAYED_HEADER = "Idempotent-Replayed"
IDENTIFIER = ID_PATTERN

PaymentId = ResourceId
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class MoneyIn(Strict):
    amount: int = Field(ge=1, le=AMOUNT_MAX, strict=True)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class PaymentMethodIn(Strict):
    payment_method: str = Field(pattern=PAYMENT_METHOD.pattern, description="A token, never a card number")


class ChargeIn(Strict):
    order_id: str = Field(min_length=1, max_length=64, pattern=IDENTIFIER)
    user_id: str = Field(min_length=1, max_length=64)
    amount: MoneyIn
    payment_method: str = Field(pattern=PAYMENT_METHOD.pattern)


class RefundIn(Strict):
    amount: int | None = Field(
        default=None, ge=1, le=AMOUNT_MAX, strict=True, description="Minor units; omitted refunds everything left"
    )


class InternalRefundIn(RefundIn):
    idempotency_key: str = Field(min_length=1, max_length=IDEMPOTENCY_KEY_MAX)


class Money(BaseModel):
    amount: int
    currency: str


class RefundOut(BaseModel):
    id: str
    payment_id: str
    order_id: str
    amount: Money
    idempotency_key: str
    created_at: str


class PaymentOut(BaseModel):
    id: str
    order_id: str
    user_id: str
    status: str
    amount: Money
    refunded: Money = Field(description="Refunds the provider has confirmed")
    refunding: Money = Field(description="Reserved for refunds the provider has not confirmed yet")
    payment_method: str
    decline_code: str | None
    failure_reason: str | None
    refunds: list[RefundOut]
    created_at: str
    updated_at: str


class VerifiedOut(BaseModel):
    payment_method: str
    valid: bool


ChargeObserver = Callable[[Payment], None]


def _ignore_charge(_: Payment) -> None:
    return None


def router(
    get_service: Callable[[], Awaitable[PaymentService]], *, on_charged: ChargeObserver = _ignore_charge
) -> APIRouter:
    """The payment routes. `get_service` is the dependency that hands each route the service (tests
    may override it); `on_charged` sees every new charge (the outcome metric)."""
    api = APIRouter(prefix=API_PREFIX)
    Service = Annotated[PaymentService, Depends(get_service)]

    def refund_answer(payment: Payment, refund: Refund, *, created: bool, response: Response) -> dict[str, Any]:
        # A replay answers exactly what the first call answered, and says that it is a replay.
        response.status_code = 201
        if not created:
            response.headers[REPLAYED_HEADER] = "true"
        return refund_dict(payment, refund)

    # --- public: behind the gateway, with an access token --------------------------------------------
    @api.get("/payments/{payment_id}", response_model=PaymentOut, tags=["payments"])
    async def get_payment(payment_id: PaymentId, principal: CurrentPrincipal, service: Service) -> dict[str, Any]:
        payment = await service.payment(payment_id)
        principal.require_owner(payment.user_id)
        return payment.as_dict()

    @api.post("/payments/{payment_id}/refunds", status_code=201, response_model=RefundOut, tags=["payments"])
    async def refund_payment(
        payment_id: PaymentId,
        admin: AdminPrincipal,
        idempotency_key: IdempotencyKey,
        service: Service,
        response: Response,
        body: RefundIn | None = None,
    ) -> dict[str, Any]:
        amount = body.amount if body else None
        payment, refund, created = await service.refund(payment_id, amount=amount, idempotency_key=idempotency_key)
        return refund_answer(payment, refund, created=created, response=response)

    # --- internal: called by the order service with a service token ----------------------------------
    @api.post("/internal/payment-methods/verify", response_model=VerifiedOut, tags=["internal"])
    async def verify(body: PaymentMethodIn, caller: InternalCaller, service: Service) -> dict[str, Any]:
        await service.verify(body.payment_method)
        return {"payment_method": body.payment_method, "valid": True}

    @api.post("/internal/payments", status_code=201, response_model=PaymentOut, tags=["internal"])
    async def charge(body: ChargeIn, caller: InternalCaller, service: Service, response: Response) -> dict[str, Any]:
        # Trusted as sent: only the order service may ask (`ESTATE.internal_routes`), and it charges
        # its own order's total.
        payment, created = await service.charge(
            ChargeRequest(
                order_id=body.order_id,
                user_id=body.user_id,
                amount=body.amount.amount,
                currency=body.amount.currency,
                payment_method=body.payment_method,
            )
        )
        response.status_code = 201 if created else 200
        if created:
            on_charged(payment)
        return payment.as_dict()

    @api.get("/internal/payments/{payment_id}", response_model=PaymentOut, tags=["internal"])
    async def internal_payment(payment_id: PaymentId, caller: InternalCaller, service: Service) -> dict[str, Any]:
        # The order service asks before it fulfils: a payment refunded (or being refunded) in full
        # must not ship, and the order learns of an admin's refund only by an event, later.
        return (await service.payment(payment_id)).as_dict()

    @api.post("/internal/payments/{payment_id}/refunds", status_code=201, response_model=RefundOut, tags=["internal"])
    async def internal_refund(
        payment_id: PaymentId,
        body: InternalRefundIn,
        caller: InternalCaller,
        service: Service,
        response: Response,
    ) -> dict[str, Any]:
        payment, refund, created = await service.refund(
            payment_id, amount=body.amount, idempotency_key=body.idempotency_key
        )
        return refund_answer(payment, refund, created=created, response=response)

    return api
