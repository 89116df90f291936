"""The product and payment services behind the `Catalog` and `Payments` ports, over HTTP.

Wire shapes stop here: the adapters answer domain values. Every write carries its own idempotency
key (the order id, or an explicit key), so every call is marked retryable. A problem answer comes
back as the same error class it left the other service as (`cloudshop.errors.error_from_problem`):
an out-of-stock 409 is `OutOfStock`, naming the products short.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cloudshop.estate import API_PREFIX
from eks_services.order.model import (
    RESERVATIONS_PER_COMMIT_MAX,
    Charge,
    ChargeStatus,
    Line,
    Product,
    RefundReceipt,
    ReservationLine,
)

VERIFIED_CACHE_MAX = 1000
# A product looked up for a cart line is used again for this long. The line's name and price are a
# snapshot in any case: the reservation prices the checkout again, and the total is checked on that.
# So a price change shows in new cart lines within this bound, and every checkout pays the price of
# its reservation. Products that do not exist are not kept (a new product is seen at once).
PRODUCT_TTL_SECONDS = 5.0
PRODUCTS_KEPT_MAX = 1000


class ServiceCaller(Protocol):
    """What the adapters need of `cloudshop.clients.AsyncServiceClient`."""

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, retry: bool | None = None
    ) -> Any: ...


def charge_from(body: dict[str, Any]) -> Charge:
    """A payment as the payment service answers it (`PaymentOut`)."""
    return Charge(
        payment_id=str(body["id"]),
        status=ChargeStatus(body["status"]),
        amount=int(body["amount"]["amount"]),
        currency=str(body["amount"]["currency"]),
        decline_code=body.get("decline_code"),
        failure_reason=body.get("failure_reason"),
        refunded=int((body.get("refunded") or {}).get("amount", 0)),
        refunding=int((body.get("refunding") or {}).get("amount", 0)),
    )


class HttpCatalog:
    def __init__(
        self,
        client: ServiceCaller,
        *,
        product_ttl_seconds: float = PRODUCT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.product_ttl_seconds = product_ttl_seconds
        self._clock = clock
        self._products: dict[str, tuple[float, Product]] = {}  # id -> (kept until, product)

    async def product(self, product_id: str) -> Product:
        now = self._clock()
        kept = self._products.get(product_id)
        if kept is not None and now < kept[0]:
            return kept[1]
        body = await self.client.request("GET", f"{API_PREFIX}/products/{product_id}")
        product = Product(
            id=str(body["id"]),
            name=str(body["name"]),
            unit_price=int(body["price"]["amount"]),
            currency=str(body["price"]["currency"]),
        )
        if len(self._products) >= PRODUCTS_KEPT_MAX:
            # Bounded: forget the expired ones, or all of them when none has expired yet.
            self._products = {pid: entry for pid, entry in self._products.items() if now < entry[0]}
            if len(self._products) >= PRODUCTS_KEPT_MAX:
                self._products.clear()
        self._products[product_id] = (now + self.product_ttl_seconds, product)
        return product

    async def reserve(self, order_id: str, lines: Sequence[ReservationLine]) -> tuple[Line, ...]:
        body = await self.client.request(
            "POST",
            f"{API_PREFIX}/internal/reservations",
            json={"order_id": order_id, "lines": [{"product_id": x.product_id, "quantity": x.quantity} for x in lines]},
            retry=True,
        )
        return tuple(
            Line(
                product_id=str(r["product_id"]),
                name=str(r["name"]),
                quantity=int(r["quantity"]),
                unit_price=int(r["unit_price"]["amount"]),
                currency=str(r["unit_price"]["currency"]),
            )
            for r in body["lines"]
        )

    async def release(self, order_id: str) -> None:
        await self.client.request("POST", f"{API_PREFIX}/internal/reservations/{order_id}/release", retry=True)

    async def commit(self, order_ids: Sequence[str]) -> None:
        unique = list(dict.fromkeys(order_ids))
        for start in range(0, len(unique), RESERVATIONS_PER_COMMIT_MAX):
            batch = unique[start : start + RESERVATIONS_PER_COMMIT_MAX]
            await self.client.request(
                "POST", f"{API_PREFIX}/internal/reservations/commit", json={"order_ids": batch}, retry=True
            )

    async def expired_reservations(self, *, limit: int, after: str | None = None) -> list[str]:
        # A POST: the API routes only POST to the internal reservation paths (it is a read all the same).
        body = await self.client.request(
            "POST",
            f"{API_PREFIX}/internal/reservations/expired",
            json={"limit": limit, **({"after": after} if after else {})},
            retry=True,
        )
        return [str(order_id) for order_id in body["order_ids"]]


class HttpPayments:
    def __init__(self, client: ServiceCaller) -> None:
        self.client = client
        # A token the provider knew a moment ago still knows it: skip the call for tokens already
        # verified (a handful of test tokens locally; bounded so it cannot grow without limit).
        self._verified: set[str] = set()

    async def verify(self, payment_method: str) -> None:
        if payment_method in self._verified:
            return
        await self.client.request(
            "POST", f"{API_PREFIX}/internal/payment-methods/verify", json={"payment_method": payment_method}, retry=True
        )
        if len(self._verified) < VERIFIED_CACHE_MAX:
            self._verified.add(payment_method)

    async def charge(self, *, order_id: str, user_id: str, amount: int, currency: str, payment_method: str) -> Charge:
        body = await self.client.request(
            "POST",
            f"{API_PREFIX}/internal/payments",
            json={
                "order_id": order_id,
                "user_id": user_id,
                "amount": {"amount": amount, "currency": currency},
                "payment_method": payment_method,
            },
            retry=True,
        )
        return charge_from(body)

    async def payment(self, payment_id: str) -> Charge:
        return charge_from(await self.client.request("GET", f"{API_PREFIX}/internal/payments/{payment_id}"))

    async def refund(self, payment_id: str, *, amount: int | None, idempotency_key: str) -> RefundReceipt:
        request: dict[str, Any] = {"idempotency_key": idempotency_key}
        if amount is not None:
            request["amount"] = amount
        body = await self.client.request(
            "POST", f"{API_PREFIX}/internal/payments/{payment_id}/refunds", json=request, retry=True
        )
        return RefundReceipt(
            refund_id=str(body["id"]),
            payment_id=str(body.get("payment_id", payment_id)),
            amount=int(body["amount"]["amount"]),
            currency=str(body["amount"]["currency"]),
        )
