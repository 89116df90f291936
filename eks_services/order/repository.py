"""DynamoDB storage of carts, orders and the transactional outbox.

The outbox lives inside the order item: every state change writes the new order state AND its event
(into the item's `outbox` map) in ONE conditional write, conditioned on the version it was read at,
so two writers can never both move an order and no change is ever stored without its event.
DynamoDB makes a single-item write atomic, so this is the transactional outbox without
`TransactWriteItems`: half the write cost in the cloud, and no table-wide copy per transaction on the
local stand-ins (moto copies every table a transaction touches: 127 ms per checkout write at 2,000
orders, measured, against 3 ms for a single-item write).

`outbox_pending` exists only while the outbox holds events, which makes the `pending_outbox` index
sparse: the relay queries it and never scans. Nothing is published from the request path.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from cloudshop.aws import condition_failed, from_item, to_item, to_value
from cloudshop.errors import BadRequest, Conflict, NotFound
from cloudshop.events import OrderEventV1
from eks_services.order.model import Line, Order, OrderStatus

PENDING = "1"


class OrderExists(Conflict):
    pass


class StaleOrder(Conflict):
    """The order changed since it was read; the caller re-reads and decides again."""


def _order_item(order: Order) -> dict[str, Any]:
    return to_item(
        {
            "order_id": order.id,
            "user_id": order.user_id,
            "status": str(order.status),
            "lines": [asdict(line) for line in order.lines],
            "currency": order.currency,
            "total": order.total,
            "shipping_address": order.shipping_address,
            "payment_method": order.payment_method,
            "request_hash": order.request_hash,
            "customer_email": order.customer_email or None,
            "payment_id": order.payment_id,
            "failure_reason": order.failure_reason,
            "version": order.version,
            # Sparse: only orders still waiting for their payment are in the `awaiting_payment` index.
            "awaiting_payment": PENDING if order.status == OrderStatus.PENDING_PAYMENT else None,
            "created_at": order.created_at.isoformat(),
            "updated_at": order.updated_at.isoformat(),
        }
    )


def _order(item: dict[str, Any]) -> Order:
    data = from_item(item)
    return Order(
        id=data["order_id"],
        user_id=data["user_id"],
        status=OrderStatus(data["status"]),
        lines=tuple(Line(**line) for line in data["lines"]),
        currency=data["currency"],
        shipping_address=data["shipping_address"],
        payment_method=data["payment_method"],
        request_hash=data["request_hash"],
        customer_email=data.get("customer_email", ""),
        payment_id=data.get("payment_id"),
        failure_reason=data.get("failure_reason"),
        version=int(data["version"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
    )


def _encode_cursor(key: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(key, dict):
            raise ValueError
    except ValueError as exc:
        raise BadRequest("The cursor is not valid.") from exc
    return key


class DynamoDBOrderRepository:
    def __init__(self, client: Any, *, orders_table: str) -> None:
        self.client = client
        self.orders_table = orders_table

    def create(self, order: Order, event: OrderEventV1) -> None:
        item = _order_item(order)
        item["outbox"] = {"M": {event.event_id: {"S": event.to_json()}}}
        item["outbox_pending"] = {"S": PENDING}
        try:
            self.client.put_item(
                TableName=self.orders_table, Item=item, ConditionExpression="attribute_not_exists(order_id)"
            )
        except ClientError as exc:
            if condition_failed(exc):
                raise OrderExists(f"Order {order.id} exists.") from exc
            raise

    def save(self, order: Order, event: OrderEventV1) -> None:
        """Write a transition and its event: only if nobody else moved the order since `version - 1`.

        An update, not a put: the relay may be removing sent events from the same item meanwhile, and
        a put would bring them back (harmless duplicates, but needless ones).
        """
        fields = {k: v for k, v in _order_item(order).items() if k != "order_id"}
        removed = [k for k in ("payment_id", "failure_reason", "customer_email", "awaiting_payment") if k not in fields]
        names = {f"#f{n}": name for n, name in enumerate(fields)}
        values = {f":f{n}": value for n, value in enumerate(fields.values())}
        assignments = [f"#f{n} = :f{n}" for n in range(len(fields))]
        names |= {"#outbox": "outbox", "#event": event.event_id}
        values |= {
            ":event": {"S": event.to_json()},
            ":pending": {"S": PENDING},
            ":previous": to_value(order.version - 1),
        }
        assignments += ["#outbox.#event = :event", "outbox_pending = :pending"]
        expression = "SET " + ", ".join(assignments)
        if removed:
            names |= {f"#r{n}": name for n, name in enumerate(removed)}
            expression += " REMOVE " + ", ".join(f"#r{n}" for n in range(len(removed)))
        try:
            self.client.update_item(
                TableName=self.orders_table,
                Key={"order_id": {"S": order.id}},
                UpdateExpression=expression,
                ConditionExpression="version = :previous",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if condition_failed(exc):
                raise StaleOrder(f"Order {order.id} changed meanwhile.") from exc
            raise

    def get(self, order_id: str) -> Order | None:
        item = self.client.get_item(
            TableName=self.orders_table, Key={"order_id": {"S": order_id}}, ConsistentRead=True
        ).get("Item")
        return _order(item) if item else None

    def require(self, order_id: str) -> Order:
        order = self.get(order_id)
        if order is None:
            raise NotFound("No such order.")
        return order

    def by_user(self, user_id: str, *, limit: int, cursor: str | None) -> tuple[list[Order], str | None]:
        query: dict[str, Any] = {
            "TableName": self.orders_table,
            "IndexName": "by_user",
            "KeyConditionExpression": "user_id = :u",
            "ExpressionAttributeValues": {":u": {"S": user_id}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if cursor:
            start = _decode_cursor(cursor)
            if start.get("user_id", {}).get("S") != user_id:
                raise BadRequest("The cursor is not valid.")
            query["ExclusiveStartKey"] = start
        answer = self.client.query(**query)
        last = answer.get("LastEvaluatedKey")
        return [_order(i) for i in answer.get("Items", [])], _encode_cursor(last) if last else None

    def awaiting_payment(self, *, created_before: datetime, limit: int = 50) -> list[Order]:
        """Orders still PENDING_PAYMENT that were created before `created_before`, oldest first."""
        answer = self.client.query(
            TableName=self.orders_table,
            IndexName="awaiting_payment",
            KeyConditionExpression="awaiting_payment = :p AND created_at < :before",
            ExpressionAttributeValues={":p": {"S": PENDING}, ":before": {"S": created_before.isoformat()}},
            Limit=limit,
        )
        return [_order(item) for item in answer.get("Items", [])]

    # --- outbox ---------------------------------------------------------------------------------
    def pending_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """Unsent events of up to `limit` orders, oldest change first: `{event_id, order_id, payload}`."""
        answer = self.client.query(
            TableName=self.orders_table,
            IndexName="pending_outbox",
            KeyConditionExpression="outbox_pending = :p",
            ExpressionAttributeValues={":p": {"S": PENDING}},
            ProjectionExpression="order_id, outbox",
            ScanIndexForward=True,
            Limit=limit,
        )
        events = []
        for item in answer.get("Items", []):
            order_id = item["order_id"]["S"]
            for event_id, payload in item.get("outbox", {}).get("M", {}).items():
                events.append({"event_id": event_id, "order_id": order_id, "payload": payload["S"]})
        # Within one order, publish in the order the changes happened.
        return sorted(events, key=lambda e: (e["order_id"], json.loads(e["payload"])["occurred_at"]))

    def mark_sent(self, order_id: str, event_ids: list[str]) -> None:
        """Drop published events from the order's outbox, and the pending flag with them when they
        were all it held: one write in the common case."""
        names = {f"#e{n}": event_id for n, event_id in enumerate(event_ids)} | {"#outbox": "outbox"}
        remove = ", ".join(f"#outbox.#e{n}" for n in range(len(event_ids)))
        exactly_these = " AND ".join(
            ["size(#outbox) = :count", *(f"attribute_exists(#outbox.#e{n})" for n in range(len(event_ids)))]
        )
        key = {"order_id": {"S": order_id}}
        try:
            self.client.update_item(
                TableName=self.orders_table,
                Key=key,
                UpdateExpression=f"REMOVE {remove}, outbox_pending",
                ConditionExpression=exactly_these,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues={":count": {"N": str(len(event_ids))}},
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise
            # A writer added an event since (or another relay sent some): keep the flag.
            self.client.update_item(
                TableName=self.orders_table,
                Key=key,
                UpdateExpression=f"REMOVE {remove}",
                ExpressionAttributeNames=names,
            )


class DynamoDBCartRepository:
    """One item per user: `lines` maps product id → {quantity, name, unit_price, currency}.

    Names and prices are a snapshot for display only; checkout always re-prices from the catalog.
    """

    def __init__(self, client: Any, *, table: str, ttl_seconds: int) -> None:
        self.client = client
        self.table = table
        self.ttl_seconds = ttl_seconds

    def get(self, user_id: str) -> dict[str, dict[str, Any]]:
        item = self.client.get_item(TableName=self.table, Key={"user_id": {"S": user_id}}, ConsistentRead=True).get(
            "Item"
        )
        return dict(from_item(item).get("lines", {})) if item else {}

    def set_line(self, user_id: str, product_id: str, line: dict[str, Any], *, max_lines: int) -> None:
        """One conditional write in the common case (the cart exists and has room)."""
        stamps = {
            ":now": {"S": datetime.now(UTC).isoformat()},
            ":exp": {"N": str(int(time.time()) + self.ttl_seconds)},
        }
        for _ in range(3):
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key={"user_id": {"S": user_id}},
                    UpdateExpression="SET #lines.#pid = :line, updated_at = :now, expires_at = :exp",
                    ConditionExpression=(
                        "attribute_exists(#lines) AND (attribute_exists(#lines.#pid) OR size(#lines) < :max)"
                    ),
                    ExpressionAttributeNames={"#lines": "lines", "#pid": product_id},
                    ExpressionAttributeValues={":line": to_value(line), ":max": {"N": str(max_lines)}, **stamps},
                )
                return
            except ClientError as exc:
                if not condition_failed(exc):
                    raise
            if self.get(user_id):
                raise Conflict(f"A cart holds at most {max_lines} different products.")
            try:
                self.client.put_item(
                    TableName=self.table,
                    Item={
                        "user_id": {"S": user_id},
                        "lines": {"M": {product_id: to_value(line)}},
                        "updated_at": stamps[":now"],
                        "expires_at": stamps[":exp"],
                    },
                    ConditionExpression="attribute_not_exists(user_id)",
                )
                return
            except ClientError as exc:
                # Another request created the cart meanwhile: go round and update it instead.
                if not condition_failed(exc):
                    raise
        raise Conflict("The cart is changing too fast; try again.")

    def remove_line(self, user_id: str, product_id: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"user_id": {"S": user_id}},
                UpdateExpression="REMOVE #lines.#pid",
                ConditionExpression="attribute_exists(user_id)",
                ExpressionAttributeNames={"#lines": "lines", "#pid": product_id},
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise

    def clear(self, user_id: str) -> None:
        self.client.delete_item(TableName=self.table, Key={"user_id": {"S": user_id}})
