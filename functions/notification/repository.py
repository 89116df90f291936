"""Notifications in DynamoDB (`notifications`: pk `user_id`, sk `sort_key`, TTL `expires_at`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from cloudshop import cursors
from cloudshop.aws import condition_failed, from_item, to_item
from cloudshop.aws_json import DynamoDBError
from functions.notification.model import Notification

# Longer than any sort key the service writes (`<occurred_at>#<event id>`).
SORT_KEY_MAX = 200


def encode_cursor(sort_key: str) -> str:
    return cursors.encode_cursor({"sk": sort_key})


def decode_cursor(cursor: str) -> str:
    return str(cursors.decode_cursor(cursor, {"sk": cursors.text(max_length=SORT_KEY_MAX)})["sk"])


class DynamoDBNotificationStore:
    def __init__(self, client: Any, *, table: str) -> None:
        self.client = client
        self.table = table

    def add(self, notification: Notification) -> bool:
        """Store once; False when it is already there (an event delivered again keeps its first copy)."""
        item = to_item(
            {
                "user_id": notification.user_id,
                "sort_key": notification.sort_key,
                "event_id": notification.event_id,
                "event_type": notification.event_type,
                "order_id": notification.order_id,
                "title": notification.title,
                "message": notification.message,
                "occurred_at": notification.occurred_at.isoformat(),
                "created_at": notification.created_at.isoformat(),
                "expires_at": notification.expires_at,
            }
        )
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(sort_key)")
        except DynamoDBError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def page(self, user_id: str, *, limit: int, cursor: str | None) -> tuple[list[Notification], str | None]:
        """One user's notifications, newest first."""
        query: dict[str, Any] = {
            "TableName": self.table,
            "KeyConditionExpression": "user_id = :user",
            "ExpressionAttributeValues": {":user": {"S": user_id}},
            "ScanIndexForward": False,
            # One more than asked: its presence, not DynamoDB's LastEvaluatedKey (which is also set
            # when the page merely ends exactly at the last item), says whether a next page exists.
            "Limit": limit + 1,
        }
        if cursor:
            query["ExclusiveStartKey"] = {"user_id": {"S": user_id}, "sort_key": {"S": decode_cursor(cursor)}}
        items = [_notification(from_item(item)) for item in self.client.query(**query).get("Items", [])]
        next_cursor = encode_cursor(items[limit - 1].sort_key) if len(items) > limit else None
        return items[:limit], next_cursor


def _notification(data: dict[str, Any]) -> Notification:
    return Notification(
        user_id=data["user_id"],
        event_id=data["event_id"],
        event_type=data["event_type"],
        order_id=data["order_id"],
        title=data["title"],
        message=data["message"],
        occurred_at=datetime.fromisoformat(data["occurred_at"]),
        created_at=datetime.fromisoformat(data["created_at"]),
    )
