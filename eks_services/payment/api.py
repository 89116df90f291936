"""HTTP transport of the payment service: public payment detail and admin refunds, and the internal
charge/refund/verify API the order service calls with a service token."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudshop.estate import API_PREFIX
from cloudshop.web import AdminPrincipal, CurrentPrincipal, InternalCaller
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
IDENTIFIER = r"^[A-Za-z0-9_-]+$"

PaymentId = Annotated[str, Path(min_length=1, max_length=64, pattern=IDENTIFIER)]
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
    refunded: Money
    payment_method: str
    decline_code: str | None
    failure_reason: str | None
    refunds: list[RefundOut]
    created_at: str
    updated_at: str


class VerifiedOut(BaseModel):
    payment_method: str
    valid: bool


def router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)

    def service(request: Request) -> PaymentService:
        return request.app.state.payments  # type: ignore[no-any-return]

    def refund_answer(payment: Payment, refund: Refund, *, created: bool, response: Response) -> dict[str, Any]:
        # A replay answers exactly what the first call answered, and says that it is a replay.
        response.status_code = 201
        if not created:
            response.headers[REPLAYED_HEADER] = "true"
        return refund_dict(payment, refund)

    # --- public: behind the gateway, with an access token --------------------------------------------
    @api.get("/payments/{payment_id}", response_model=PaymentOut, tags=["payments"])
    def get_payment(payment_id: PaymentId, principal: CurrentPrincipal, request: Request) -> dict[str, Any]:
        payment = service(request).payments.require(payment_id)
        principal.require_owner(payment.user_id)
        return payment.as_dict()

    @api.post("/payments/{payment_id}/refunds", status_code=201, response_model=RefundOut, tags=["payments"])
    def refund_payment(
        payment_id: PaymentId,
        admin: AdminPrincipal,
        idempotency_key: IdempotencyKey,
        request: Request,
        response: Response,
        body: RefundIn | None = None,
    ) -> dict[str, Any]:
        amount = body.amount if body else None
        payment, refund, created = service(request).refund_by_admin(
            payment_id, amount=amount, idempotency_key=idempotency_key
        )
        return refund_answer(payment, refund, created=created, response=response)

    # --- internal: called by the order service with a service token ----------------------------------
    @api.post("/internal/payment-methods/verify", response_model=VerifiedOut, tags=["internal"])
    def verify(body: PaymentMethodIn, caller: InternalCaller, request: Request) -> dict[str, Any]:
        service(request).verify(body.payment_method)
        return {"payment_method": body.payment_method, "valid": True}

    @api.post("/internal/payments", status_code=201, response_model=PaymentOut, tags=["internal"])
    def charge(body: ChargeIn, caller: InternalCaller, request: Request, response: Response) -> dict[str, Any]:
        payment, created = service(request).charge(
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
            request.app.state.charge_outcomes.labels(str(payment.status)).inc()
        return payment.as_dict()

    @api.post("/internal/payments/{payment_id}/refunds", status_code=201, response_model=RefundOut, tags=["internal"])
    def internal_refund(
        payment_id: PaymentId,
        body: InternalRefundIn,
        caller: InternalCaller,
        request: Request,
        response: Response,
    ) -> dict[str, Any]:
        payment, refund, created = service(request).refund(
            payment_id, amount=body.amount, idempotency_key=body.idempotency_key
        )
        return refund_answer(payment, refund, created=created, response=response)

    return api
