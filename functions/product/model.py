"""Catalog domain: products, money and the rules of a stock reservation. No framework imports."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from cloudshop.errors import ValidationFailed

PRICE_MAX = 10**10  # minor units: 100 million in major units is more than any product here costs
STOCK_MAX = 1_000_000
NAME_MAX, DESCRIPTION_MAX = 200, 2000
CATEGORY = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
QUANTITY_MAX = 99
LINES_MAX = 50


@dataclass
class Product:
    id: str
    name: str
    description: str
    category: str
    price_amount: int
    currency: str
    stock: int
    image_key: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class ReservationLine:
    product_id: str
    quantity: int


@dataclass(frozen=True)
class ReservedLine:
    product_id: str
    name: str
    quantity: int
    unit_price_amount: int
    currency: str

    def as_dict(self) -> dict[str, object]:
        return {
            "product_id": self.product_id,
            "name": self.name,
            "quantity": self.quantity,
            "unit_price": {"amount": self.unit_price_amount, "currency": self.currency},
        }


def check_category(category: str) -> str:
    if not CATEGORY.match(category):
        raise ValidationFailed("A category is a lower-case slug of letters, digits and dashes.")
    return category


def normalise_lines(lines: list[ReservationLine]) -> list[ReservationLine]:
    """Merge repeated products and sort by id: every transaction then locks rows in the same order,
    so concurrent reservations can wait on each other but never deadlock."""
    if not lines:
        raise ValidationFailed("A reservation needs at least one line.")
    if len(lines) > LINES_MAX:
        raise ValidationFailed(f"A reservation has at most {LINES_MAX} lines.")
    merged: dict[str, int] = {}
    for line in lines:
        merged[line.product_id] = merged.get(line.product_id, 0) + line.quantity
    for product_id, quantity in merged.items():
        if not 1 <= quantity <= QUANTITY_MAX:
            raise ValidationFailed(f"Quantity of {product_id} must be between 1 and {QUANTITY_MAX}.")
    return [ReservationLine(pid, merged[pid]) for pid in sorted(merged)]
