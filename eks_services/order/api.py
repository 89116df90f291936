"""HTTP transport of the order service: cart, orders, invoices, analytics windows.

Routes reach only the service layer, through FastAPI dependencies on the services `bootstrap` built;
every handler is async and awaits the async service layer.
"""

# No `from __future__ import annotations`: the routes' dependency aliases are local to `router()`,
# and FastAPI resolves string annotations in module globals only.
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from pydantic import BaseModel, ConfigDict, Field

from cloudshop.estate import API_PREFIX
from cloudshop.web import AdminPrincipal, CurrentPrincipal, ResourceId
from eks_services.order.model import QUANTITY_MAX, QUANTITY_MIN, Cart, Order, OrderStatus
from eks_services.order.service import AnalyticsWindows, CartService, CheckoutService

ProductId = ResourceId
OrderId = ResourceId


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


@dataclass(frozen=True)
class OrderServices:
    """What the routes depend on: the use cases, nothing beneath them."""

    carts: CartService
    checkout: CheckoutService
    windows: AnalyticsWindows


def cart_out(cart: Cart) -> dict[str, Any]:
    return {
        "items": [
            {
                "product_id": line.product_id,
                "name": line.name,
                "quantity": line.quantity,
                "unit_price": {"amount": line.unit_price, "currency": line.currency},
                "line_total": {"amount": line.total, "currency": line.currency},
            }
            for line in cart.lines
        ],
        "total": {"amount": cart.total, "currency": cart.currency} if cart.currency else None,
        "next_cursor": None,
    }


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


def router(services: OrderServices) -> APIRouter:
    api = APIRouter(prefix=API_PREFIX)

    # async although they only hand out a service: FastAPI runs a plain `def` dependency in a worker
    # thread, a thread hop per request.
    async def cart_service() -> CartService:
        return services.carts

    async def checkout_service() -> CheckoutService:
        return services.checkout

    async def analytics_windows_service() -> AnalyticsWindows:
        return services.windows

    Carts = Annotated[CartService, Depends(cart_service)]
    Checkout = Annotated[CheckoutService, Depends(checkout_service)]
    Windows = Annotated[AnalyticsWindows, Depends(analytics_windows_service)]

    @api.get("/cart", tags=["cart"])
    async def get_cart(principal: CurrentPrincipal, carts: Carts) -> dict[str, Any]:
        return cart_out(await carts.view(principal.user_id))

    @api.put("/cart/items/{product_id}", tags=["cart"])
    async def put_item(
        product_id: ProductId, body: QuantityIn, principal: CurrentPrincipal, carts: Carts
    ) -> dict[str, Any]:
        return cart_out(await carts.set_quantity(principal.user_id, product_id, body.quantity))

    @api.delete("/cart/items/{product_id}", tags=["cart"])
    async def delete_item(product_id: ProductId, principal: CurrentPrincipal, carts: Carts) -> dict[str, Any]:
        return cart_out(await carts.remove(principal.user_id, product_id))

    @api.delete("/cart", status_code=204, tags=["cart"])
    async def clear_cart(principal: CurrentPrincipal, carts: Carts) -> None:
        await carts.clear(principal.user_id)

    @api.post("/orders", status_code=201, tags=["orders"])
    async def place_order(
        body: CheckoutIn,
        principal: CurrentPrincipal,
        checkout: Checkout,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> dict[str, Any]:
        order = await checkout.checkout(principal, idempotency_key=idempotency_key, body=body.model_dump())
        return order_out(order)

    @api.get("/orders", tags=["orders"])
    async def list_orders(
        principal: CurrentPrincipal,
        checkout: Checkout,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> dict[str, Any]:
        orders, next_cursor = await checkout.history(principal, limit=limit, cursor=cursor)
        return {"items": [order_out(o) for o in orders], "next_cursor": next_cursor}

    @api.get("/orders/{order_id}", tags=["orders"])
    async def get_order(order_id: OrderId, principal: CurrentPrincipal, checkout: Checkout) -> dict[str, Any]:
        return order_out(await checkout.get(principal, order_id))

    @api.post("/orders/{order_id}/cancel", tags=["orders"])
    async def cancel_order(order_id: OrderId, principal: CurrentPrincipal, checkout: Checkout) -> dict[str, Any]:
        return order_out(await checkout.cancel(principal, order_id))

    @api.post("/orders/{order_id}/fulfil", tags=["orders"])
    async def fulfil_order(order_id: OrderId, admin: AdminPrincipal, checkout: Checkout) -> dict[str, Any]:
        return order_out(await checkout.fulfil(admin, order_id))

    @api.get("/orders/{order_id}/invoice", tags=["orders"])
    async def invoice(order_id: OrderId, principal: CurrentPrincipal, checkout: Checkout) -> dict[str, Any]:
        url, expires_in = await checkout.invoice_url(principal, order_id)
        return {"url": url, "expires_in": expires_in}

    @api.get("/admin/orders", tags=["orders"])
    async def list_orders_by_status(
        admin: AdminPrincipal,
        checkout: Checkout,
        status: OrderStatus = OrderStatus.PAID,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=1000)] = None,
    ) -> dict[str, Any]:
        orders, next_cursor = await checkout.to_fulfil(admin, status=status, limit=limit, cursor=cursor)
        return {"items": [order_out(o) for o in orders], "next_cursor": next_cursor}

    @api.get("/analytics/windows", tags=["analytics"])
    async def analytics_windows(
        admin: AdminPrincipal,
        windows: Windows,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        cursor: Annotated[str | None, Query(max_length=500)] = None,
    ) -> dict[str, Any]:
        items, next_cursor = await windows.latest(limit=limit, cursor=cursor)
        return {"items": items, "next_cursor": next_cursor}

    return api
