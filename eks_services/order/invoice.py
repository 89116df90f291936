"""Invoices: an HTML document per paid order in the `order-documents` bucket, shared by presigned URL."""

from __future__ import annotations

import html
from typing import Any

from cloudshop.s3 import S3
from eks_services.order.model import Order


def _money(amount: int, currency: str) -> str:
    return f"{currency} {amount // 100:,}.{amount % 100:02d}"


def render_invoice(order: Order) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(line.name)}</td><td>{line.quantity}</td>"
        f"<td>{_money(line.unit_price, line.currency)}</td><td>{_money(line.total, line.currency)}</td></tr>"
        for line in order.lines
    )
    address = order.shipping_address
    ship_to = ", ".join(
        html.escape(str(address[k]))
        for k in ("name", "line1", "line2", "city", "state", "postal_code", "country")
        if address.get(k)
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Invoice</title></head><body>"
        f"<h1>Invoice for order {html.escape(order.id)}</h1>"
        f"<p>Date: {order.created_at.date().isoformat()}<br>Payment: {html.escape(order.payment_id or '')}</p>"
        f"<p>Ship to: {ship_to}</p>"
        "<table><tr><th>Item</th><th>Qty</th><th>Unit price</th><th>Total</th></tr>"
        f"{rows}</table><p><strong>Total: {_money(order.total, order.currency)}</strong></p></body></html>"
    )


class S3Invoices:
    """The `Invoices` port on S3. The writes and the existence check go through the async S3 client
    (`cloudshop.s3`: a waiting coroutine, not a boto3 call in a worker thread), only off the
    checkout's request path (after payment) or on `GET /orders/{id}/invoice`. The link is presigned
    by boto3 (`presigner`, a boto3 S3 client): local computation, no call."""

    url_ttl_seconds = 900
    content_type = "text/html; charset=utf-8"

    def __init__(self, s3: S3, *, bucket: str, presigner: Any) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.presigner = presigner

    @staticmethod
    def key(order: Order) -> str:
        # Derived from the order, so the order item needs no pointer to it.
        return f"invoices/{order.user_id}/{order.id}.html"

    async def ensure(self, order: Order) -> str:
        key = self.key(order)
        if await self.s3.head_object(self.bucket, key) is not None:
            return key
        return await self.write(order)

    async def write(self, order: Order) -> str:
        key = self.key(order)
        await self.s3.put_object(self.bucket, key, render_invoice(order).encode(), content_type=self.content_type)
        return key

    async def url(self, key: str) -> str:
        # Presigning is local computation (no call), cheap enough for the event loop.
        return str(
            self.presigner.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.url_ttl_seconds
            )
        )
