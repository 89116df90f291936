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

from cloudshop import cursors
from cloudshop.errors import Conflict, NotFound, OutOfStock, ValidationFailed
from cloudshop.paths import ID_MAX
from cloudshop.sql import Connection, Engine, IntegrityError, Row, as_utc, in_list, set_clause
from functions.product.model import NAME_MAX, PRICE_MAX, Product, ReservationLine, ReservedLine

# A reservation's statuses, as the statements below write them.
RESERVED, COMMITTED, RELEASED = "reserved", "committed", "released"

# The sort orders a search may ask for: the column and direction of each, the only text a request
# chooses in a statement (ties go by id, in the same direction).
SORTS: dict[str, tuple[str, bool]] = {
    "newest": ("created_at", True),
    "price_asc": ("price_amount", False),
    "price_desc": ("price_amount", True),
    "name": ("name", False),
}


def _product(row: Row) -> Product:
    return Product(
        id=row["id"],
        name=row["name"],
        description=row["description"],
        category=row["category"],
        price_amount=row["price_amount"],
        currency=row["currency"],
        stock=row["stock"],
        image_key=row["image_key"],
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
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


# What `update` may set: the fields the service changes (the SET clause is built from these names only).
UPDATABLE_COLUMNS = frozenset({"name", "description", "category", "price_amount", "image_key", "updated_at"})

INSERT_PRODUCT = (
    "INSERT INTO products (id, name, description, category, price_amount, currency, stock, image_key, created_at,"
    " updated_at) VALUES (:id, :name, :description, :category, :price_amount, :currency, :stock, :image_key,"
    " :created_at, :updated_at)"
)
COUNT_PRODUCTS = "SELECT count(*) FROM products"
GET_PRODUCT = (
    "SELECT id, name, description, category, price_amount, currency, stock, image_key, created_at, updated_at"
    " FROM products WHERE id = :product_id AND deleted_at IS NULL"
)
# `{assignments}`: `column = :column` for each of UPDATABLE_COLUMNS the call sets.
UPDATE_PRODUCT = "UPDATE products SET {assignments} WHERE id = :product_id AND deleted_at IS NULL"
# Relative, so it never overwrites concurrent reservations; no row when it would go below zero.
ADJUST_STOCK = (
    "UPDATE products SET stock = stock + :delta, updated_at = :now"
    " WHERE id = :product_id AND deleted_at IS NULL AND stock + :delta >= 0"
)
DELETE_PRODUCT = (
    "UPDATE products SET deleted_at = :now, updated_at = :now WHERE id = :product_id AND deleted_at IS NULL"
)
# A search: `{filters}` from `search` (each one of the fixed conditions there), `{order}` from SORTS.
SEARCH_PRODUCTS = (
    "SELECT id, name, description, category, price_amount, currency, stock, image_key, created_at, updated_at"
    " FROM products WHERE deleted_at IS NULL{filters} ORDER BY {order} LIMIT :limit"
)
# Backslash escapes the pattern's own % and _ (`search`), on both databases.
MATCHES_TEXT = " AND (lower(name) LIKE :pattern ESCAPE '\\' OR lower(description) LIKE :pattern ESCAPE '\\')"
# Takes `quantity` of a product when it has that much; no row when it has not (or is deleted).
TAKE_STOCK = (
    "UPDATE products SET stock = stock - :quantity"
    " WHERE id = :product_id AND deleted_at IS NULL AND stock >= :quantity"
    " RETURNING name, price_amount, currency"
)
PUT_BACK_STOCK = "UPDATE products SET stock = stock + :quantity WHERE id = :product_id"
# `{product_ids}`: generated placeholders (`in_list`).
KNOWN_PRODUCTS = "SELECT id FROM products WHERE id IN ({product_ids}) AND deleted_at IS NULL"
INSERT_RESERVATION = (
    "INSERT INTO reservations (order_id, status, created_at, updated_at, expires_at)"
    " VALUES (:order_id, 'reserved', :created_at, :updated_at, :expires_at)"
)
INSERT_RESERVATION_LINE = (
    "INSERT INTO reservation_lines (order_id, product_id, name, quantity, unit_price_amount, currency)"
    " VALUES (:order_id, :product_id, :name, :quantity, :unit_price_amount, :currency)"
)
RESERVATION_STATUS = "SELECT status FROM reservations WHERE order_id = :order_id"
RESERVATION_LINES = (
    "SELECT product_id, name, quantity, unit_price_amount, currency FROM reservation_lines"
    " WHERE order_id = :order_id ORDER BY product_id"
)
COMMIT_RESERVATION = (
    "UPDATE reservations SET status = 'committed', updated_at = :now WHERE order_id = :order_id AND status = 'reserved'"
)
# A batch of orders' commits in one statement; `{order_ids}`: generated placeholders (`in_list`).
COMMIT_RESERVATIONS = (
    "UPDATE reservations SET status = 'committed', updated_at = :now"
    " WHERE order_id IN ({order_ids}) AND status = 'reserved'"
)
RELEASE_RESERVATION = (
    "UPDATE reservations SET status = 'released', updated_at = :now"
    " WHERE order_id = :order_id AND status IN ('reserved', 'committed')"
)
RESERVE_AGAIN = (
    "UPDATE reservations SET status = 'reserved', updated_at = :now, expires_at = :expires_at"
    " WHERE order_id = :order_id AND status = 'released'"
)
EXPIRED = (
    "SELECT order_id FROM reservations WHERE status = 'reserved' AND expires_at <= :now ORDER BY order_id LIMIT :limit"
)
EXPIRED_AFTER = (
    "SELECT order_id FROM reservations WHERE status = 'reserved' AND expires_at <= :now AND order_id > :after"
    " ORDER BY order_id LIMIT :limit"
)


class SqlProductRepository:
    def __init__(self, engine: Engine, *, reservation_ttl_seconds: float = 900) -> None:
        # `engine.single()` for the work that is one statement (every read, a commit, the admin writes:
        # autocommit on PostgreSQL), `engine.transaction()` for a reservation or a release, several
        # statements. SQLite keeps its transactions for both: each takes the file's write lock up front.
        self.engine = engine
        self.reservation_ttl = timedelta(seconds=reservation_ttl_seconds)

    # --- catalog -------------------------------------------------------------------------------
    def add(self, product: Product) -> None:
        with self.engine.single() as conn:
            conn.execute(INSERT_PRODUCT, product.__dict__)

    def count(self) -> int:
        with self.engine.single() as conn:
            return int(conn.execute(COUNT_PRODUCTS).scalar())

    def get(self, product_id: str) -> Product:
        with self.engine.single() as conn:
            row = conn.execute(GET_PRODUCT, {"product_id": product_id}).first()
        if row is None:
            raise NotFound(f"No product {product_id}.")
        return _product(row)

    def search(
        self, *, q: str | None, category: str | None, sort: str, limit: int, cursor: str | None
    ) -> tuple[list[Product], str | None]:
        column, descending = SORTS[sort]
        filters: list[str] = []
        parameters: dict[str, Any] = {"limit": limit + 1}
        if category:
            filters.append(" AND category = :category")
            parameters["category"] = category
        if q:
            filters.append(MATCHES_TEXT)
            parameters["pattern"] = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        if cursor:
            parameters["after_value"], parameters["after_id"] = decode_cursor(cursor, sort)
            beyond = "<" if descending else ">"
            filters.append(
                f" AND ({column} {beyond} :after_value OR ({column} = :after_value AND id {beyond} :after_id))"
            )
        direction = "DESC" if descending else "ASC"
        query = SEARCH_PRODUCTS.format(filters="".join(filters), order=f"{column} {direction}, id {direction}")
        with self.engine.single() as conn:
            rows = conn.execute(query, parameters).rows
        items = [_product(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = items[-1]
            next_cursor = encode_cursor(sort, getattr(last, column), last.id)
        return items, next_cursor

    def update(self, product_id: str, values: dict[str, Any]) -> Product:
        values = {**values, "updated_at": datetime.now(UTC)}
        assignments = set_clause(values, allowed=UPDATABLE_COLUMNS, what="product")
        with self.engine.single() as conn:
            result = conn.execute(UPDATE_PRODUCT.format(assignments=assignments), {**values, "product_id": product_id})
        if result.rowcount == 0:
            raise NotFound(f"No product {product_id}.")
        return self.get(product_id)

    def adjust_stock(self, product_id: str, delta: int) -> Product:
        """Admin restock or write-off, relative so it never overwrites concurrent reservations."""
        with self.engine.single() as conn:
            result = conn.execute(ADJUST_STOCK, {"product_id": product_id, "delta": delta, "now": datetime.now(UTC)})
        if result.rowcount == 0:
            self.get(product_id)
            raise Conflict("Stock cannot go below zero.")
        return self.get(product_id)

    def delete(self, product_id: str) -> None:
        # Soft delete: reservations and orders keep pointing at the product.
        with self.engine.single() as conn:
            result = conn.execute(DELETE_PRODUCT, {"product_id": product_id, "now": datetime.now(UTC)})
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
        with self.engine.transaction() as conn:
            conn.execute(
                INSERT_RESERVATION,
                {
                    "order_id": order_id,
                    "created_at": now,
                    "updated_at": now,
                    "expires_at": now + self.reservation_ttl,
                },
            )
            reserved, short = [], []
            for line in lines:
                row = conn.execute(TAKE_STOCK, {"product_id": line.product_id, "quantity": line.quantity}).first()
                if row is None:
                    short.append(line.product_id)
                    continue
                reserved.append(
                    ReservedLine(line.product_id, row["name"], line.quantity, row["price_amount"], row["currency"])
                )
            if short:
                raise self._shortage(conn, short)
            conn.execute_many(
                INSERT_RESERVATION_LINE,
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
        with self.engine.transaction() as conn:
            claimed = conn.execute(
                RESERVE_AGAIN, {"order_id": order_id, "now": now, "expires_at": now + self.reservation_ttl}
            ).rowcount
            if not claimed:
                # A concurrent repeat took it again first: its lines are the answer.
                return lines
            short = []
            for line in lines:
                taken = conn.execute(TAKE_STOCK, {"product_id": line.product_id, "quantity": line.quantity}).first()
                if taken is None:
                    short.append(line.product_id)
            if short:
                raise self._shortage(conn, short)
        return lines

    def expired(self, *, now: datetime, limit: int, after: str | None = None) -> list[str]:
        """Order ids of reservations at or past their expiry (a zero TTL expires at once, whatever the clock
        resolution), neither committed nor released, by order id."""
        parameters: dict[str, Any] = {"now": now, "limit": limit}
        if after:
            parameters["after"] = after
        with self.engine.single() as conn:
            order_ids = conn.execute(EXPIRED_AFTER if after else EXPIRED, parameters).scalars()
        return [str(order_id) for order_id in order_ids]

    def _shortage(self, conn: Connection, short: list[str]) -> Exception:
        placeholders, parameters = in_list("product_id", short)
        known = set(conn.execute(KNOWN_PRODUCTS.format(product_ids=placeholders), parameters).scalars())
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
        with self.engine.single() as conn:
            status = conn.execute(RESERVATION_STATUS, {"order_id": order_id}).scalar()
            if status is None:
                return None
            rows = conn.execute(RESERVATION_LINES, {"order_id": order_id}).rows
        return [_reserved_line(r) for r in rows]

    def reservation_status(self, order_id: str) -> str | None:
        with self.engine.single() as conn:
            status = conn.execute(RESERVATION_STATUS, {"order_id": order_id}).scalar()
        return None if status is None else str(status)

    def release(self, order_id: str) -> bool:
        """Put reserved stock back, once. True when this call released it."""
        with self.engine.transaction() as conn:
            claimed = conn.execute(RELEASE_RESERVATION, {"order_id": order_id, "now": datetime.now(UTC)}).rowcount
            if not claimed:
                return False
            rows = conn.execute(RESERVATION_LINES, {"order_id": order_id}).rows
            for row in rows:
                conn.execute(PUT_BACK_STOCK, {"product_id": row["product_id"], "quantity": row["quantity"]})
        return True

    def commit(self, order_id: str) -> bool:
        """The reservation is held by a written order: it no longer expires (release still works)."""
        with self.engine.single() as conn:
            done = conn.execute(COMMIT_RESERVATION, {"order_id": order_id, "now": datetime.now(UTC)}).rowcount
        return bool(done)

    def commit_many(self, order_ids: Sequence[str]) -> int:
        """Commit the reservations of these orders that are still reserved, in one statement; how many
        this call committed (ids with no reservation, or committed or released already, count none)."""
        if not order_ids:
            return 0
        placeholders, parameters = in_list("order_id", order_ids)
        with self.engine.single() as conn:
            done = conn.execute(
                COMMIT_RESERVATIONS.format(order_ids=placeholders), {**parameters, "now": datetime.now(UTC)}
            ).rowcount
        return int(done)


def _reserved_line(row: Row) -> ReservedLine:
    return ReservedLine(row["product_id"], row["name"], row["quantity"], row["unit_price_amount"], row["currency"])
