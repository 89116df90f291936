"""Notification use cases: turn an order event into a stored notification (and the order email),
and list a customer's notifications. Storage and mail are injected."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from cloudshop.events import OrderEventV1
from functions.notification.mailer import SesMailer
from functions.notification.model import Notification, email_for, notification_for
from functions.notification.repository import DynamoDBNotificationStore

log = logging.getLogger("cloudshop.notification")


class NotificationService:
    def __init__(self, *, store: DynamoDBNotificationStore, mailer: SesMailer) -> None:
        self.store = store
        self.mailer = mailer

    def sends_email(self, event: OrderEventV1) -> bool:
        """Whether handling `event` sends an email: the one effect of `handle` that is not once by itself."""
        return email_for(event) is not None

    def handle(self, event: OrderEventV1) -> Notification:
        """Store the notification, then send the email. Either failing raises, so the message is
        retried; storing is once by itself (a conditional put), and the caller deduplicates events
        that send an email by `event_id`."""
        notification = notification_for(event, now=datetime.now(UTC))
        self.store.add(notification)
        email = email_for(event)
        if email is not None:
            message_id = self.mailer.send(email)
            log.info("order email sent", extra={"fields": {"event_id": event.event_id, "message_id": message_id}})
        return notification

    def list_for(self, user_id: str, *, limit: int, cursor: str | None) -> tuple[list[Notification], str | None]:
        return self.store.page(user_id, limit=limit, cursor=cursor)
