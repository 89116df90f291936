"""The order service behind the payment service's ports, over HTTP with a service token."""

from __future__ import annotations

from cloudshop.clients import ServiceClient
from cloudshop.estate import API_PREFIX
from eks_services.payment.model import OrderSnapshot


class HttpOrderService:
    """`OrderLookup` and `RefundCallback` over the order service's internal API."""

    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    def get_order(self, order_id: str) -> OrderSnapshot:
        body = self.client.request("GET", f"{API_PREFIX}/internal/orders/{order_id}")
        return OrderSnapshot(
            id=str(body["id"]),
            user_id=str(body["user_id"]),
            status=str(body["status"]),
            amount=int(body["total"]["amount"]),
            currency=str(body["total"]["currency"]),
        )

    def payment_refunded(self, *, order_id: str, payment_id: str) -> None:
        # Retried: moving an order to REFUNDED twice is a no-op on the order side.
        self.client.request(
            "POST",
            f"{API_PREFIX}/internal/orders/{order_id}/payment-refunded",
            json={"payment_id": payment_id},
            retry=True,
        )
