"""HTTP transport of the order service: cart, orders, invoices, analytics windows, internal calls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from analytics.windows import InvalidCursorError, list_windows
from cloudshop.errors import BadRequest
from cloudshop.estate import API_PREFIX
from cloudshop.web import AdminPrincipal, CurrentPrincipal, InternalCaller
from eks_services.order.model import QUANTITY_MAX, QUANTITY_MIN, Order
from eks_services.order.service import CartService, CheckoutService

ProductId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
OrderId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class QuantityIn(Strict):
    quantity: int = Field(ge=QUANTITY_MIN, le=QUANTITY_MAX, strict=True)


class ShippingAddress(Strict):
    name: str = Field(min_length=1, max_length=100)
    line1: str = Field(min_length=1, max_length=200)
    line2: str | None = Field(default=None, max_length=200)
    city: str = Field(min_length=1, max_length=100)
    state: str = Field(min_length=1, max_length=100)
    postal_code: str = Field(min_length=2, max_length=12, pattern=r"^[A-Za-z0-9 -]+$")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")


class CheckoutIn(Strict):
    shipping_address: ShippingAddress
    payment_method: str = Field(pattern=r"^pm_[a-z0-9_]{1,60}$", description="A payment method token")


def order_out(order: Order) -> dict[str, Any]:
    return {
        "id": order.id,
        "user_id": order.user_id,
        "status": str(order.status),
        "lines": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": {"amount": line.unit_price, "currency": line.currency},
                "line_total": {"amount": line.total, "currency": line.currency},
            }
            for line in order.lines
        ],
        "total": {"amount": order.total, "currency": order.currency},
        "items": order.items,
        "payment_id": order.payment_id,
        "failure_reason": order.failure_reason,
        "shipping_address": order.shipping_address,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
    }


def router() -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)

    def carts(request: Request) -> CartService:
        return request.app.state.carts  # type: ignore[no-any-return]

    def checkout(request: Request) -> CheckoutService:
        return request.app.state.checkout  # type: ignore[no-any-return]

    @api.get("/cart", tags=["cart"])
    def get_cart(principal: CurrentPrincipal, request: Request) -> dict[str, Any]:
        return carts(request).view(principal.user_id)

    @api.put("/cart/items/{product_id}", tags=["cart"])
    def put_item(
        product_id: ProductId, body: QuantityIn, principal: CurrentPrincipal, request: Request
    ) -> dict[str, Any]:
        return carts(request).set_quantity(principal.user_id, product_id, body.quantity)

    @api.delete("/cart/items/{product_id}", tags=["cart"])
    def delete_item(product_id: ProductId, principal: CurrentPrincipal, request: Request) -> dict[str, Any]:
        return carts(request).remove(principal.user_id, product_id)

    @api.delete("/cart", status_code=204, tags=["cart"])
    def clear_cart(principal: CurrentPrincipal, request: Request) -> None:
        carts(request).carts.clear(principal.user_id)

    @api.post("/orders", status_code=201, tags=["orders"])
    def place_order(
        body: CheckoutIn,
        principal: CurrentPrincipal,
        request: Request,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> dict[str, Any]:
        order = checkout(request).checkout(principal, idempotency_key=idempotency_key, body=body.model_dump())
        return order_out(order)

    @api.get("/orders", tags=["orders"])
    def list_orders(
        principal: CurrentPrincipal,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> dict[str, Any]:
        orders, next_cursor = checkout(request).orders.by_user(principal.user_id, limit=limit, cursor=cursor)
        return {"items": [order_out(o) for o in orders], "next_cursor": next_cursor}

    @api.get("/orders/{order_id}", tags=["orders"])
    def get_order(order_id: OrderId, principal: CurrentPrincipal, request: Request) -> dict[str, Any]:
        return order_out(checkout(request).get(principal, order_id))

    @api.post("/orders/{order_id}/cancel", tags=["orders"])
    def cancel_order(order_id: OrderId, principal: CurrentPrincipal, request: Request) -> dict[str, Any]:
        return order_out(checkout(request).cancel(principal, order_id))

    @api.post("/orders/{order_id}/fulfil", tags=["orders"])
    def fulfil_order(order_id: OrderId, admin: AdminPrincipal, request: Request) -> dict[str, Any]:
        return order_out(checkout(request).fulfil(admin, order_id))

    @api.get("/orders/{order_id}/invoice", tags=["orders"])
    def invoice(order_id: OrderId, principal: CurrentPrincipal, request: Request) -> dict[str, Any]:
        return checkout(request).invoice_url(principal, order_id)

    @api.get("/analytics/windows", tags=["analytics"])
    def analytics_windows(
        admin: AdminPrincipal,
        request: Request,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> dict[str, Any]:
        settings = request.app.state.settings
        try:
            items, next_cursor = list_windows(
                request.app.state.s3, settings.analytics_results_bucket, limit=limit, cursor=cursor
            )
        except InvalidCursorError as exc:
            raise BadRequest("The cursor is not valid.") from exc
        return {"items": items, "next_cursor": next_cursor}

    # --- internal ---------------------------------------------------------------------------------
    @api.get("/internal/orders/{order_id}", tags=["internal"])
    def internal_order(order_id: OrderId, caller: InternalCaller, request: Request) -> dict[str, Any]:
        return order_out(checkout(request).orders.require(order_id))

    @api.post("/internal/orders/{order_id}/payment-refunded", tags=["internal"])
    def payment_refunded(order_id: OrderId, caller: InternalCaller, request: Request) -> dict[str, Any]:
        return order_out(checkout(request).payment_refunded(order_id))

    return api
