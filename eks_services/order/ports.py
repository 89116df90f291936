"""What the order service needs from the catalog and from payments, and the HTTP adapters for them.

Every write here is idempotent by order id (or by an explicit key), so the adapters may retry them.
"""

from __future__ import annotations

from typing import Any, Protocol

from cloudshop.clients import ServiceClient
from cloudshop.estate import API_PREFIX


class Catalog(Protocol):
    def product(self, product_id: str) -> dict[str, Any]: ...

    def reserve(self, order_id: str, lines: list[dict[str, Any]]) -> list[dict[str, Any]]: ...

    def release(self, order_id: str) -> None: ...

    def commit(self, order_id: str) -> None: ...


class Payments(Protocol):
    def verify(self, payment_method: str) -> None: ...

    def charge(
        self, *, order_id: str, user_id: str, amount: int, currency: str, payment_method: str
    ) -> dict[str, Any]: ...

    def refund(self, payment_id: str, *, amount: int | None, idempotency_key: str) -> dict[str, Any]: ...


class HttpCatalog:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def product(self, product_id: str) -> dict[str, Any]:
        return self.client.request("GET", f"{API_PREFIX}/products/{product_id}")  # type: ignore[no-any-return]

    def reserve(self, order_id: str, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answer = self.client.request(
            "POST", f"{API_PREFIX}/internal/reservations", json={"order_id": order_id, "lines": lines}, retry=True
        )
        return answer["lines"]  # type: ignore[no-any-return]

    def release(self, order_id: str) -> None:
        self.client.request("POST", f"{API_PREFIX}/internal/reservations/{order_id}/release", retry=True)

    def commit(self, order_id: str) -> None:
        self.client.request("POST", f"{API_PREFIX}/internal/reservations/{order_id}/commit", retry=True)


class HttpPayments:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client
        self._verified: set[str] = set()

    def verify(self, payment_method: str) -> None:
        if payment_method in self._verified:
            return
        self.client.request(
            "POST", f"{API_PREFIX}/internal/payment-methods/verify", json={"payment_method": payment_method}, retry=True
        )
        if len(self._verified) < 1000:
            self._verified.add(payment_method)

    def charge(self, *, order_id: str, user_id: str, amount: int, currency: str, payment_method: str) -> dict[str, Any]:
        body = {
            "order_id": order_id,
            "user_id": user_id,
            "amount": {"amount": amount, "currency": currency},
            "payment_method": payment_method,
        }
        return self.client.request("POST", f"{API_PREFIX}/internal/payments", json=body, retry=True)  # type: ignore[no-any-return]

    def refund(self, payment_id: str, *, amount: int | None, idempotency_key: str) -> dict[str, Any]:
        body: dict[str, Any] = {"idempotency_key": idempotency_key}
        if amount is not None:
            body["amount"] = amount
        return self.client.request(  # type: ignore[no-any-return]
            "POST", f"{API_PREFIX}/internal/payments/{payment_id}/refunds", json=body, retry=True
        )
