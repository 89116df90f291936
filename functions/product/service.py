"""Catalog use cases. Admin rules are checked by the API layer's principal; stock rules live here."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from cloudshop.errors import ValidationFailed
from functions.product.model import Product, ReservationLine, ReservedLine, check_category, normalise_lines
from functions.product.repository import COMMITTED, RELEASED, SqlProductRepository

IMAGE_TYPES = {"image/jpeg": "jpg", "image/png": "png", "image/webp": "webp"}
IMAGE_MAX_BYTES = 5 * 1024 * 1024


class CatalogService:
    def __init__(self, *, products: SqlProductRepository, s3: Any, images_bucket: str, currency: str) -> None:
        self.products = products
        self.s3 = s3
        self.images_bucket = images_bucket
        self.currency = currency

    def create(
        self,
        *,
        name: str,
        description: str,
        category: str,
        price_amount: int,
        currency: str | None,
        stock: int,
        product_id: str | None = None,
    ) -> Product:
        now = datetime.now(UTC)
        product = Product(
            id=product_id or str(uuid.uuid4()),
            name=name,
            description=description,
            category=check_category(category),
            price_amount=price_amount,
            currency=self._currency(currency),
            stock=stock,
            image_key=None,
            created_at=now,
            updated_at=now,
        )
        self.products.add(product)
        return product

    def _currency(self, currency: str | None) -> str:
        # One currency per catalog keeps every cart payable in one charge.
        if currency not in (None, self.currency):
            raise ValidationFailed(f"This catalog sells in {self.currency}.")
        return self.currency

    def update(self, product_id: str, changes: dict[str, Any]) -> Product:
        values: dict[str, Any] = {}
        for field in ("name", "description"):
            if field in changes:
                values[field] = changes[field]
        if "category" in changes:
            values["category"] = check_category(changes["category"])
        if "price" in changes:
            values["price_amount"] = changes["price"]["amount"]
            self._currency(changes["price"]["currency"])
        product = self.products.update(product_id, values) if values else self.products.get(product_id)
        if changes.get("stock_adjustment"):
            product = self.products.adjust_stock(product_id, changes["stock_adjustment"])
        return product

    def image_upload(self, product_id: str, *, content_type: str) -> dict[str, Any]:
        self.products.get(product_id)
        extension = IMAGE_TYPES.get(content_type)
        if extension is None:
            raise ValidationFailed("Images are JPEG, PNG or WebP.")
        key = f"products/{product_id}/{uuid.uuid4().hex}.{extension}"
        upload = self.s3.generate_presigned_post(
            Bucket=self.images_bucket,
            Key=key,
            Fields={"Content-Type": content_type},
            Conditions=[{"Content-Type": content_type}, ["content-length-range", 1, IMAGE_MAX_BYTES]],
            ExpiresIn=900,
        )
        self.products.update(product_id, {"image_key": key})
        return {"image_key": key, "upload": upload, "expires_in": 900}

    def image_url(self, key: str | None) -> str | None:
        if not key:
            return None
        return str(
            self.s3.generate_presigned_url(
                "get_object", Params={"Bucket": self.images_bucket, "Key": key}, ExpiresIn=3600
            )
        )

    def reserve(self, order_id: str, lines: list[ReservationLine]) -> tuple[list[ReservedLine], bool]:
        return self.products.reserve(order_id, normalise_lines(lines))

    def commit_reservation(self, order_id: str) -> str | None:
        """Commit the order's reservation; answer its status after (None: there is none). One
        statement when this call commits it (every checkout's case); a read only otherwise."""
        if self.products.commit(order_id):
            return COMMITTED
        return self.products.reservation_status(order_id)

    def commit_reservations(self, order_ids: Sequence[str]) -> int:
        """Commit the reservations of a batch of paid orders in one statement; how many this call
        committed. An id named twice counts once; one with nothing reserved (none, committed or
        released already) is no error, so a repeated batch commits 0."""
        return self.products.commit_many(list(dict.fromkeys(order_ids)))

    def release_reservation(self, order_id: str) -> tuple[str | None, bool]:
        """Put the order's reserved stock back, once; answer its status after, and whether this call
        released it (a read only when it did not)."""
        if self.products.release(order_id):
            return RELEASED, True
        return self.products.reservation_status(order_id), False

    def expired_reservations(self, *, limit: int, after: str | None = None) -> list[str]:
        """Reservations past their expiry that no order committed: the order service commits or
        releases each, by whether its order exists."""
        return self.products.expired(now=datetime.now(UTC), limit=limit, after=after)
