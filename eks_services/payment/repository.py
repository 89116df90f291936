"""Payments in DynamoDB (`payments`: pk `payment_id`, GSI `by_order` on `order_id`).

Two conditional writes carry every guarantee: `claim` creates the record only if no payment exists
for the order yet (one charge per order), and `save` replaces it only if the stored `version` is
still the one the change was computed from (optimistic concurrency: concurrent refunds re-read and
re-check the refundable amount instead of overwriting each other).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from cloudshop.aws import condition_failed, from_item, to_item
from cloudshop.errors import NotFound
from eks_services.payment.model import Payment, PaymentStatus, Refund


class StalePayment(Exception):
    """The stored payment changed since it was read; re-read and decide again."""


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
    def __init__(self, client: Any, *, table: str) -> None:
        self.client = client
        self.table = table

    def get(self, payment_id: str) -> Payment | None:
        # Strongly consistent: a repeat charge must see the claim its twin made a moment ago.
        answer = self.client.get_item(TableName=self.table, Key={"payment_id": {"S": payment_id}}, ConsistentRead=True)
        item = answer.get("Item")
        return payment_from_item(item) if item else None

    def require(self, payment_id: str) -> Payment:
        payment = self.get(payment_id)
        if payment is None:
            # The same words as `require_owner`, so a stranger cannot tell "not yours" from "none".
            raise NotFound("No such resource.")
        return payment

    def for_order(self, order_id: str) -> list[Payment]:
        """Every payment record of an order (by the `by_order` index; eventually consistent)."""
        answer = self.client.query(
            TableName=self.table,
            IndexName="by_order",
            KeyConditionExpression="order_id = :order",
            ExpressionAttributeValues={":order": {"S": order_id}},
        )
        return [payment_from_item(item) for item in answer.get("Items", [])]

    def claim(self, payment: Payment) -> bool:
        """Create the PENDING record that owns the charge; False when the order already has one."""
        try:
            self.client.put_item(
                TableName=self.table,
                Item=payment_item(payment),
                ConditionExpression="attribute_not_exists(payment_id)",
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def save(self, payment: Payment) -> None:
        """Write `payment` over the version it was derived from, or raise `StalePayment`."""
        try:
            self.client.put_item(
                TableName=self.table,
                Item=payment_item(payment),
                ConditionExpression="version = :previous",
                ExpressionAttributeValues={":previous": {"N": str(payment.version - 1)}},
            )
        except ClientError as exc:
            if condition_failed(exc):
                raise StalePayment(payment.id) from exc
            raise
