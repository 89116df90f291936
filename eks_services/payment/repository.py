"""Payments in DynamoDB (`payments`: pk `payment_id`, GSI `by_order` on `order_id`, sparse GSI
`pending_outbox`), on the async client `cloudshop.dynamodb.DynamoDB`.

Two conditional writes carry every guarantee: `claim` creates the record only if no payment exists
for the order yet (one charge per order), and `save` updates it only if the stored `version` is still
the one the change was computed from (optimistic concurrency: concurrent refunds re-read and re-check
the refundable amount instead of overwriting each other).

The outbox lives inside the payment item, as in the order service: `save` writes the new state AND
its events (into the item's `outbox` map) in that one conditional write, so a refund is never
confirmed without its `payment.refunded` event, nor announced without being confirmed.
`outbox_pending` exists only while the outbox holds events, which keeps `pending_outbox` sparse: the
relay queries it and never scans.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cloudshop.aws import from_item, to_item
from cloudshop.aws_json import DynamoDBError
from cloudshop.dynamodb import OUTBOX_PENDING, DynamoDB, versioned_update
from cloudshop.errors import NotFound
from cloudshop.events import PaymentRefundedV1
from eks_services.payment.model import Payment, PaymentStatus, Refund, RefundStatus
from eks_services.payment.ports import OutboxEvent, StalePayment

PENDING = OUTBOX_PENDING
CONDITION_FAILED = "ConditionalCheckFailedException"
# Attributes a payment may lose in a change (a claim's lease once settled); `save` removes them.
OPTIONAL_FIELDS = ("decline_code", "failure_reason", "provider_reference", "claimed_until")


def payment_item(payment: Payment) -> dict[str, Any]:
    return to_item(
        {
            "payment_id": payment.id,
            "order_id": payment.order_id,
            "user_id": payment.user_id,
            "status": str(payment.status),
            "amount": payment.amount,
            "currency": payment.currency,
            "payment_method": payment.payment_method,
            "refunded": payment.refunded,
            "refunds": [
                {
                    "id": r.id,
                    "amount": r.amount,
                    "idempotency_key": r.idempotency_key,
                    "requested_amount": r.requested_amount,
                    "status": str(r.status),
                    "created_at": r.created_at.isoformat(),
                }
                for r in payment.refunds
            ],
            "decline_code": payment.decline_code,
            "failure_reason": payment.failure_reason,
            "provider_reference": payment.provider_reference,
            "claimed_until": payment.claimed_until,
            "created_at": payment.created_at.isoformat(),
            "updated_at": payment.updated_at.isoformat(),
            "version": payment.version,
        }
    )


def payment_from_item(item: dict[str, Any]) -> Payment:
    data = from_item(item)
    return Payment(
        id=data["payment_id"],
        order_id=data["order_id"],
        user_id=data["user_id"],
        status=PaymentStatus(data["status"]),
        amount=data["amount"],
        currency=data["currency"],
        payment_method=data["payment_method"],
        refunded=data.get("refunded", 0),
        refunds=tuple(
            Refund(
                id=r["id"],
                amount=r["amount"],
                idempotency_key=r["idempotency_key"],
                requested_amount=r.get("requested_amount"),
                created_at=datetime.fromisoformat(r["created_at"]),
                # Refunds written before refunds had a status were kept only once the provider
                # had answered: they succeeded.
                status=RefundStatus(r.get("status", RefundStatus.SUCCEEDED)),
            )
            for r in data.get("refunds", [])
        ),
        decline_code=data.get("decline_code"),
        failure_reason=data.get("failure_reason"),
        provider_reference=data.get("provider_reference"),
        claimed_until=data.get("claimed_until"),
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
        version=data["version"],
    )


class DynamoDBPaymentRepository:
    """`PaymentRepository` and `PaymentOutbox` on one table."""

    def __init__(self, dynamodb: DynamoDB, *, table: str) -> None:
        self.dynamodb = dynamodb
        self.table = table

    async def describe(self) -> None:
        """Raise unless the table answers (`/readyz`)."""
        await self.dynamodb.call("DescribeTable", {"TableName": self.table})

    async def get(self, payment_id: str) -> Payment | None:
        # Strongly consistent: a repeat charge must see the claim its twin made a moment ago.
        answer = await self.dynamodb.call(
            "GetItem", {"TableName": self.table, "Key": {"payment_id": {"S": payment_id}}, "ConsistentRead": True}
        )
        item = answer.get("Item")
        return payment_from_item(item) if item else None

    async def require(self, payment_id: str) -> Payment:
        payment = await self.get(payment_id)
        if payment is None:
            # The same words as `require_owner`, so a stranger cannot tell "not yours" from "none".
            raise NotFound("No such resource.")
        return payment

    async def for_order(self, order_id: str) -> list[Payment]:
        """Every payment record of an order (by the `by_order` index; eventually consistent)."""
        answer = await self.dynamodb.call(
            "Query",
            {
                "TableName": self.table,
                "IndexName": "by_order",
                "KeyConditionExpression": "order_id = :order",
                "ExpressionAttributeValues": {":order": {"S": order_id}},
            },
        )
        return [payment_from_item(item) for item in answer.get("Items", [])]

    async def claim(self, payment: Payment) -> bool:
        """Create the PENDING record that owns the charge; False when the order already has one."""
        item = payment_item(payment) | {"outbox": {"M": {}}}
        try:
            await self.dynamodb.call(
                "PutItem",
                {"TableName": self.table, "Item": item, "ConditionExpression": "attribute_not_exists(payment_id)"},
            )
        except DynamoDBError as exc:
            if exc.code == CONDITION_FAILED:
                return False
            raise
        return True

    async def save(self, payment: Payment, events: Sequence[PaymentRefundedV1] = ()) -> None:
        """Write `payment` over the version it was derived from, with `events` into its outbox, or
        raise `StalePayment`."""
        fields = {k: v for k, v in payment_item(payment).items() if k != "payment_id"}
        # Payments written before the outbox existed get it on their first change. A refund's event
        # is written by its confirmation, which always follows its reservation (a change without
        # events), so the map is there by then.
        update = versioned_update(
            {"payment_id": {"S": payment.id}},
            fields,
            absent=[name for name in OPTIONAL_FIELDS if name not in fields],
            version=payment.version,
            events=[(event.event_id, event.to_json()) for event in events],
            ensure_outbox=not events,
        )
        try:
            await self.dynamodb.call("UpdateItem", {"TableName": self.table, **update})
        except DynamoDBError as exc:
            if exc.code == CONDITION_FAILED:
                raise StalePayment(payment.id) from exc
            raise

    # --- outbox ---------------------------------------------------------------------------------
    async def pending_events(self, limit: int = 100) -> list[OutboxEvent]:
        """Unsent events of up to `limit` payments, oldest change first."""
        answer = await self.dynamodb.call(
            "Query",
            {
                "TableName": self.table,
                "IndexName": "pending_outbox",
                "KeyConditionExpression": "outbox_pending = :p",
                "ExpressionAttributeValues": {":p": {"S": PENDING}},
                "ProjectionExpression": "payment_id, outbox",
                "ScanIndexForward": True,
                "Limit": limit,
            },
        )
        events = []
        for item in answer.get("Items", []):
            payment_id = item["payment_id"]["S"]
            outbox = item.get("outbox", {}).get("M", {})
            if not outbox:
                # Two relays sent the same events and each kept the flag for the other: drop it now.
                await self._clear_flag_if_empty(payment_id)
            events += [
                OutboxEvent(event_id=event_id, payment_id=payment_id, payload=payload["S"])
                for event_id, payload in outbox.items()
            ]
        # Within one payment, publish in the order the refunds were confirmed.
        return sorted(events, key=lambda e: (e.payment_id, json.loads(e.payload)["occurred_at"]))

    async def mark_sent(self, payment_id: str, event_ids: Sequence[str]) -> None:
        """Drop published events from the outbox, and the pending flag with them when they were all
        it held: one write in the common case."""
        names = {f"#e{n}": event_id for n, event_id in enumerate(event_ids)} | {"#outbox": "outbox"}
        remove = ", ".join(f"#outbox.#e{n}" for n in range(len(event_ids)))
        exactly_these = " AND ".join(
            ["size(#outbox) = :count", *(f"attribute_exists(#outbox.#e{n})" for n in range(len(event_ids)))]
        )
        key = {"payment_id": {"S": payment_id}}
        try:
            await self.dynamodb.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": key,
                    "UpdateExpression": f"REMOVE {remove}, outbox_pending",
                    "ConditionExpression": exactly_these,
                    "ExpressionAttributeNames": names,
                    "ExpressionAttributeValues": {":count": {"N": str(len(event_ids))}},
                },
            )
        except DynamoDBError as exc:
            if exc.code != CONDITION_FAILED:
                raise
            # A writer added an event since (or another relay sent some): keep the flag.
            await self.dynamodb.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": key,
                    "UpdateExpression": f"REMOVE {remove}",
                    "ExpressionAttributeNames": names,
                },
            )

    async def _clear_flag_if_empty(self, payment_id: str) -> None:
        try:
            await self.dynamodb.call(
                "UpdateItem",
                {
                    "TableName": self.table,
                    "Key": {"payment_id": {"S": payment_id}},
                    "UpdateExpression": "REMOVE outbox_pending",
                    "ConditionExpression": "size(#outbox) = :zero",
                    "ExpressionAttributeNames": {"#outbox": "outbox"},
                    "ExpressionAttributeValues": {":zero": {"N": "0"}},
                },
            )
        except DynamoDBError as exc:
            if exc.code != CONDITION_FAILED:
                raise
