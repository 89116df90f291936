"""Catalog and stock reservations in SQL (SQLite embedded, PostgreSQL everywhere else).

A reservation is one transaction: claim the order id (primary key), then one conditional
`UPDATE ... SET stock = stock - q WHERE stock >= q` per line in product-id order. PostgreSQL re-checks
the condition on the row it waits for, so stock never goes below zero under any concurrency; any
line that does not fit rolls the whole reservation back. The order id makes it idempotent.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from cloudshop.errors import BadRequest, Conflict, NotFound, OutOfStock, ValidationFailed
from cloudshop.sql import as_utc
from functions.product.model import Product, ReservationLine, ReservedLine

metadata = MetaData()
products = Table(
    "products",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("description", Text, nullable=False),
    Column("category", String(40), nullable=False, index=True),
    Column("price_amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("stock", Integer, nullable=False),
    Column("image_key", String(300)),
    Column("deleted_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column("order_id", String(64), ForeignKey("reservations.order_id"), primary_key=True),
    Column("product_id", String(36), ForeignKey("products.id"), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
)

SORTS: dict[str, tuple[Any, bool]] = {
    "newest": (products.c.created_at, True),
    "price_asc": (products.c.price_amount, False),
    "price_desc": (products.c.price_amount, True),
    "name": (products.c.name, False),
}


def _product(row: Any) -> Product:
    return Product(
        id=row.id,
        name=row.name,
        description=row.description,
        category=row.category,
        price_amount=row.price_amount,
        currency=row.currency,
        stock=row.stock,
        image_key=row.image_key,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


def encode_cursor(sort: str, value: Any, product_id: str) -> str:
    if isinstance(value, datetime):
        value = as_utc(value).isoformat()
    raw = json.dumps({"s": sort, "v": value, "id": product_id}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        value, product_id = data["v"], str(data["id"])
        if data["s"] != sort:
            raise ValueError("cursor of another sort order")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadRequest("The cursor is not valid for this query.") from exc
    if sort == "newest":
        value = datetime.fromisoformat(value)
    return value, product_id


class SqlProductRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- catalog -------------------------------------------------------------------------------
    def add(self, product: Product) -> None:
        values = {k: v for k, v in product.__dict__.items()}
        with self.engine.begin() as conn:
            conn.execute(insert(products).values(**values))

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(products)).scalar_one())

    def get(self, product_id: str) -> Product:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(products).where(products.c.id == product_id, products.c.deleted_at.is_(None))
            ).first()
        if row is None:
            raise NotFound(f"No product {product_id}.")
        return _product(row)

    def search(
        self, *, q: str | None, category: str | None, sort: str, limit: int, cursor: str | None
    ) -> tuple[list[Product], str | None]:
        column, descending = SORTS[sort]
        query = select(products).where(products.c.deleted_at.is_(None))
        if category:
            query = query.where(products.c.category == category)
        if q:
            pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    func.lower(products.c.name).like(pattern, escape="\\"),
                    func.lower(products.c.description).like(pattern, escape="\\"),
                )
            )
        if cursor:
            value, last_id = decode_cursor(cursor, sort)
            if descending:
                query = query.where(or_(column < value, and_(column == value, products.c.id < last_id)))
            else:
                query = query.where(or_(column > value, and_(column == value, products.c.id > last_id)))
        order = (column.desc(), products.c.id.desc()) if descending else (column.asc(), products.c.id.asc())
        query = query.order_by(*order).limit(limit + 1)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        items = [_product(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(sort, getattr(last, column.name), last.id)
        return items, next_cursor

    def update(self, product_id: str, values: dict[str, Any]) -> Product:
        values = {**values, "updated_at": datetime.now(UTC)}
        with self.engine.begin() as conn:
            result = conn.execute(
                update(products).where(products.c.id == product_id, products.c.deleted_at.is_(None)).values(**values)
            )
        if result.rowcount == 0:
            raise NotFound(f"No product {product_id}.")
        return self.get(product_id)

    def adjust_stock(self, product_id: str, delta: int) -> Product:
        """Admin restock or write-off, relative so it never overwrites concurrent reservations."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(products)
                .where(products.c.id == product_id, products.c.deleted_at.is_(None), products.c.stock + delta >= 0)
                .values(stock=products.c.stock + delta, updated_at=datetime.now(UTC))
            )
        if result.rowcount == 0:
            self.get(product_id)
            raise Conflict("Stock cannot go below zero.")
        return self.get(product_id)

    def delete(self, product_id: str) -> None:
        # Soft delete: reservations and orders keep pointing at the product.
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            result = conn.execute(
                update(products)
                .where(products.c.id == product_id, products.c.deleted_at.is_(None))
                .values(deleted_at=now, updated_at=now)
            )
        if result.rowcount == 0:
            raise NotFound(f"No product {product_id}.")

    # --- reservations --------------------------------------------------------------------------
    def reserve(self, order_id: str, lines: list[ReservationLine]) -> tuple[list[ReservedLine], bool]:
        """Reserve every line or none. Returns (lines, created); a repeat returns the first answer."""
        existing = self.reservation(order_id)
        if existing is not None:
            return self._same_or_conflict(order_id, existing, lines), False
        now = datetime.now(UTC)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(reservations).values(order_id=order_id, status="reserved", created_at=now, updated_at=now)
                )
                reserved, short = [], []
                for line in lines:
                    row = conn.execute(
                        update(products)
                        .where(
                            products.c.id == line.product_id,
                            products.c.deleted_at.is_(None),
                            products.c.stock >= line.quantity,
                        )
                        .values(stock=products.c.stock - line.quantity)
                        .returning(products.c.name, products.c.price_amount, products.c.currency)
                    ).first()
                    if row is None:
                        short.append(line.product_id)
                        continue
                    reserved.append(
                        ReservedLine(line.product_id, row.name, line.quantity, row.price_amount, row.currency)
                    )
                if short:
                    raise self._shortage(conn, short)
                conn.execute(
                    insert(reservation_lines),
                    [
                        {
                            "order_id": order_id,
                            "product_id": r.product_id,
                            "name": r.name,
                            "quantity": r.quantity,
                            "unit_price_amount": r.unit_price_amount,
                            "currency": r.currency,
                        }
                        for r in reserved
                    ],
                )
        except IntegrityError:
            # A concurrent call with the same order id won the insert: answer what it reserved.
            existing = self.reservation(order_id)
            if existing is None:
                raise
            return self._same_or_conflict(order_id, existing, lines), False
        return reserved, True

    def _shortage(self, conn: Any, short: list[str]) -> Exception:
        known = set(
            conn.execute(
                select(products.c.id).where(products.c.id.in_(short), products.c.deleted_at.is_(None))
            ).scalars()
        )
        unknown = [pid for pid in short if pid not in known]
        if unknown:
            return ValidationFailed("Unknown products: " + ", ".join(unknown), extra={"products": unknown})
        return OutOfStock("Not enough stock for: " + ", ".join(short), extra={"products": short})

    def _same_or_conflict(
        self, order_id: str, existing: list[ReservedLine], lines: list[ReservationLine]
    ) -> list[ReservedLine]:
        if sorted((r.product_id, r.quantity) for r in existing) != sorted((x.product_id, x.quantity) for x in lines):
            raise Conflict(f"Order {order_id} already reserved other lines.")
        return existing

    def reservation(self, order_id: str) -> list[ReservedLine] | None:
        with self.engine.connect() as conn:
            status = conn.execute(
                select(reservations.c.status).where(reservations.c.order_id == order_id)
            ).scalar_one_or_none()
            if status is None:
                return None
            rows = conn.execute(
                select(reservation_lines)
                .where(reservation_lines.c.order_id == order_id)
                .order_by(reservation_lines.c.product_id)
            ).all()
        return [ReservedLine(r.product_id, r.name, r.quantity, r.unit_price_amount, r.currency) for r in rows]

    def reservation_status(self, order_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(reservations.c.status).where(reservations.c.order_id == order_id)
            ).scalar_one_or_none()

    def release(self, order_id: str) -> bool:
        """Put reserved stock back, once. True when this call released it."""
        with self.engine.begin() as conn:
            claimed = conn.execute(
                update(reservations)
                .where(reservations.c.order_id == order_id, reservations.c.status.in_(("reserved", "committed")))
                .values(status="released", updated_at=datetime.now(UTC))
            ).rowcount
            if not claimed:
                return False
            rows = conn.execute(
                select(reservation_lines.c.product_id, reservation_lines.c.quantity)
                .where(reservation_lines.c.order_id == order_id)
                .order_by(reservation_lines.c.product_id)
            ).all()
            for row in rows:
                conn.execute(
                    update(products)
                    .where(products.c.id == row.product_id)
                    .values(stock=products.c.stock + row.quantity)
                )
        return True

    def commit(self, order_id: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(reservations)
                .where(reservations.c.order_id == order_id, reservations.c.status == "reserved")
                .values(status="committed", updated_at=datetime.now(UTC))
            ).rowcount
        return bool(done)
