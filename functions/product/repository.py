"""Catalog and stock reservations in SQL (SQLite embedded, PostgreSQL everywhere else).

A reservation is one transaction: claim the order id (primary key), then one conditional
`UPDATE ... SET stock = stock - q WHERE stock >= q` per line in product-id order. PostgreSQL re-checks
the condition on the row it waits for, so stock never goes below zero under any concurrency; any
line that does not fit rolls the whole reservation back. The order id makes it idempotent.

A reservation is `reserved` until `expires_at`, then `expired` lists it: a checkout that reserved and
never wrote its order (the write failed, the process died) would otherwise hold the stock for ever.
The order service decides, by its order, whether to `commit` it (held by an order: no expiry) or
`release` it. A released reservation asked for again (the buyer retried with the same key) takes
the same stock again, so an order is never charged for stock it does not hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
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
    bindparam,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from cloudshop import cursors
from cloudshop.errors import Conflict, NotFound, OutOfStock, ValidationFailed
from cloudshop.paths import ID_MAX
from cloudshop.sql import as_utc
from functions.product.model import NAME_MAX, PRICE_MAX, Product, ReservationLine, ReservedLine

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
    Column("expires_at", DateTime(timezone=True)),
)
RESERVED, COMMITTED, RELEASED = "reserved", "committed", "released"
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
    return cursors.encode_cursor({"s": sort, "v": value, "id": product_id})


# A cursor's position per sort order: the sorted column's value, typed and bounded as it is stored.
CURSOR_VALUES: dict[str, cursors.FieldReader] = {
    "newest": cursors.timestamp,
    "price_asc": cursors.integer(minimum=0, maximum=PRICE_MAX),
    "price_desc": cursors.integer(minimum=0, maximum=PRICE_MAX),
    "name": cursors.text(max_length=NAME_MAX),
}


def decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    """(sorted value, product id) after which the page starts; a 400 for any cursor of another list."""
    fields = {"s": cursors.exactly(sort), "v": CURSOR_VALUES[sort], "id": cursors.text(max_length=ID_MAX)}
    data = cursors.decode_cursor(cursor, fields)
    return data["v"], data["id"]


# The statements of the checkout's calls (a product read, a reservation, its commit or release), built
# once. Building a Core statement and deriving its cache key cost more CPU than running it through
# SQLAlchemy's compiled cache does (~50 us of ~100-150 us per statement here); a statement built once
# keeps its cache key. Values come as parameters, named `b_*`: SQLAlchemy reserves the columns' names
# for the values of an INSERT or UPDATE.
GET_PRODUCT = select(products).where(products.c.id == bindparam("b_product_id"), products.c.deleted_at.is_(None))
# Takes `b_quantity` of a product when it has that much; no row when it has not (or is deleted).
TAKE_STOCK = (
    update(products)
    .where(
        products.c.id == bindparam("b_product_id"),
        products.c.deleted_at.is_(None),
        products.c.stock >= bindparam("b_quantity"),
    )
    .values(stock=products.c.stock - bindparam("b_quantity"))
    .returning(products.c.name, products.c.price_amount, products.c.currency)
)
PUT_BACK_STOCK = (
    update(products)
    .where(products.c.id == bindparam("b_product_id"))
    .values(stock=products.c.stock + bindparam("b_quantity"))
)
INSERT_RESERVATION = insert(reservations)
INSERT_RESERVATION_LINES = insert(reservation_lines)
RESERVATION_STATUS = select(reservations.c.status).where(reservations.c.order_id == bindparam("b_order_id"))
RESERVATION_LINES = (
    select(reservation_lines)
    .where(reservation_lines.c.order_id == bindparam("b_order_id"))
    .order_by(reservation_lines.c.product_id)
)
COMMIT_RESERVATION = (
    update(reservations)
    .where(reservations.c.order_id == bindparam("b_order_id"), reservations.c.status == RESERVED)
    .values(status=COMMITTED, updated_at=bindparam("b_now"))
)
# A batch of orders' commits in one statement: `b_order_ids` expands to the call's ids when it runs, so
# the statement (and its cache key) is still built once.
COMMIT_RESERVATIONS = (
    update(reservations)
    .where(
        reservations.c.order_id.in_(bindparam("b_order_ids", expanding=True)),
        reservations.c.status == RESERVED,
    )
    .values(status=COMMITTED, updated_at=bindparam("b_now"))
)
RELEASE_RESERVATION = (
    update(reservations)
    .where(reservations.c.order_id == bindparam("b_order_id"), reservations.c.status.in_((RESERVED, COMMITTED)))
    .values(status=RELEASED, updated_at=bindparam("b_now"))
)
RESERVE_AGAIN = (
    update(reservations)
    .where(reservations.c.order_id == bindparam("b_order_id"), reservations.c.status == RELEASED)
    .values(status=RESERVED, updated_at=bindparam("b_now"), expires_at=bindparam("b_expires_at"))
)


class SqlProductRepository:
    def __init__(self, engine: Engine, *, reservation_ttl_seconds: float = 900) -> None:
        self.engine = engine
        # For the work that is one statement (every read, a commit, the admin writes): a statement is
        # atomic on its own, and in a transaction of its own psycopg sends a BEGIN before it and a
        # COMMIT or ROLLBACK after it, three round trips for one. On PostgreSQL these run in autocommit
        # (the same pool; the connection's mode is set for the checkout and reset on return). A
        # reservation or a release, several statements, takes `self.engine.begin()`. SQLite keeps its
        # transactions: each takes the file's write lock up front (`cloudshop.sql`).
        self.single = (
            engine.execution_options(isolation_level="AUTOCOMMIT") if engine.dialect.name == "postgresql" else engine
        )
        self.reservation_ttl = timedelta(seconds=reservation_ttl_seconds)

    # --- catalog -------------------------------------------------------------------------------
    def add(self, product: Product) -> None:
        values = {k: v for k, v in product.__dict__.items()}
        with self.single.begin() as conn:
            conn.execute(insert(products).values(**values))

    def count(self) -> int:
        with self.single.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(products)).scalar_one())

    def get(self, product_id: str) -> Product:
        with self.single.connect() as conn:
            row = conn.execute(GET_PRODUCT, {"b_product_id": product_id}).first()
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
        with self.single.connect() as conn:
            rows = conn.execute(query).all()
        items = [_product(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor(sort, getattr(last, column.name), last.id)
        return items, next_cursor

    def update(self, product_id: str, values: dict[str, Any]) -> Product:
        values = {**values, "updated_at": datetime.now(UTC)}
        with self.single.begin() as conn:
            result = conn.execute(
                update(products).where(products.c.id == product_id, products.c.deleted_at.is_(None)).values(**values)
            )
        if result.rowcount == 0:
            raise NotFound(f"No product {product_id}.")
        return self.get(product_id)

    def adjust_stock(self, product_id: str, delta: int) -> Product:
        """Admin restock or write-off, relative so it never overwrites concurrent reservations."""
        with self.single.begin() as conn:
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
        with self.single.begin() as conn:
            result = conn.execute(
                update(products)
                .where(products.c.id == product_id, products.c.deleted_at.is_(None))
                .values(deleted_at=now, updated_at=now)
            )
        if result.rowcount == 0:
            raise NotFound(f"No product {product_id}.")

    # --- reservations --------------------------------------------------------------------------
    def reserve(self, order_id: str, lines: list[ReservationLine]) -> tuple[list[ReservedLine], bool]:
        """Reserve every line or none. Returns (lines, created); a repeat returns the first answer,
        taking the stock again if that reservation was released meanwhile.

        The reservation's insert goes first and is its own check: a first reservation (nearly every
        call) costs no read before it; a repeat, or a concurrent twin that won the insert, fails it on
        the primary key, and only then are the existing reservation and its status read."""
        try:
            return self._reserve_new(order_id, lines), True
        except IntegrityError as conflict:
            status = self.reservation_status(order_id)
            existing_lines = self.reservation(order_id)
            if status is None or existing_lines is None:
                raise conflict from None  # not the reservation's key: nothing stored to answer with
        existing = self._same_or_conflict(order_id, existing_lines, lines)
        if status == RELEASED:
            return self._reserve_again(order_id, existing), True
        return existing, False

    def _reserve_new(self, order_id: str, lines: list[ReservationLine]) -> list[ReservedLine]:
        """Insert the reservation and take its stock in one transaction; IntegrityError when the order
        id already has a reservation (nothing is taken then: the transaction rolls back)."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(
                INSERT_RESERVATION,
                {
                    "order_id": order_id,
                    "status": RESERVED,
                    "created_at": now,
                    "updated_at": now,
                    "expires_at": now + self.reservation_ttl,
                },
            )
            reserved, short = [], []
            for line in lines:
                row = conn.execute(TAKE_STOCK, {"b_product_id": line.product_id, "b_quantity": line.quantity}).first()
                if row is None:
                    short.append(line.product_id)
                    continue
                reserved.append(ReservedLine(line.product_id, row.name, line.quantity, row.price_amount, row.currency))
            if short:
                raise self._shortage(conn, short)
            conn.execute(
                INSERT_RESERVATION_LINES,
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
        return reserved

    def _reserve_again(self, order_id: str, lines: list[ReservedLine]) -> list[ReservedLine]:
        """Take a released reservation's stock again (same lines, same prices), all or nothing."""
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            claimed = conn.execute(
                RESERVE_AGAIN, {"b_order_id": order_id, "b_now": now, "b_expires_at": now + self.reservation_ttl}
            ).rowcount
            if not claimed:
                # A concurrent repeat took it again first: its lines are the answer.
                return lines
            short = []
            for line in lines:
                taken = conn.execute(TAKE_STOCK, {"b_product_id": line.product_id, "b_quantity": line.quantity}).first()
                if taken is None:
                    short.append(line.product_id)
            if short:
                raise self._shortage(conn, short)
        return lines

    def expired(self, *, now: datetime, limit: int, after: str | None = None) -> list[str]:
        """Order ids of reservations at or past their expiry (a zero TTL expires at once, whatever the clock
        resolution), neither committed nor released, by order id."""
        query = select(reservations.c.order_id).where(
            reservations.c.status == RESERVED, reservations.c.expires_at <= now
        )
        if after:
            query = query.where(reservations.c.order_id > after)
        with self.single.connect() as conn:
            return list(conn.execute(query.order_by(reservations.c.order_id).limit(limit)).scalars())

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
        with self.single.connect() as conn:
            status = conn.execute(RESERVATION_STATUS, {"b_order_id": order_id}).scalar_one_or_none()
            if status is None:
                return None
            rows = conn.execute(RESERVATION_LINES, {"b_order_id": order_id}).all()
        return [ReservedLine(r.product_id, r.name, r.quantity, r.unit_price_amount, r.currency) for r in rows]

    def reservation_status(self, order_id: str) -> str | None:
        with self.single.connect() as conn:
            return conn.execute(RESERVATION_STATUS, {"b_order_id": order_id}).scalar_one_or_none()

    def release(self, order_id: str) -> bool:
        """Put reserved stock back, once. True when this call released it."""
        with self.engine.begin() as conn:
            claimed = conn.execute(RELEASE_RESERVATION, {"b_order_id": order_id, "b_now": datetime.now(UTC)}).rowcount
            if not claimed:
                return False
            rows = conn.execute(RESERVATION_LINES, {"b_order_id": order_id}).all()
            for row in rows:
                conn.execute(PUT_BACK_STOCK, {"b_product_id": row.product_id, "b_quantity": row.quantity})
        return True

    def commit(self, order_id: str) -> bool:
        """The reservation is held by a written order: it no longer expires (release still works)."""
        with self.single.begin() as conn:
            done = conn.execute(COMMIT_RESERVATION, {"b_order_id": order_id, "b_now": datetime.now(UTC)}).rowcount
        return bool(done)

    def commit_many(self, order_ids: Sequence[str]) -> int:
        """Commit the reservations of these orders that are still reserved, in one statement; how many
        this call committed (ids with no reservation, or committed or released already, count none)."""
        if not order_ids:
            return 0
        with self.single.begin() as conn:
            done = conn.execute(
                COMMIT_RESERVATIONS, {"b_order_ids": list(order_ids), "b_now": datetime.now(UTC)}
            ).rowcount
        return int(done)
