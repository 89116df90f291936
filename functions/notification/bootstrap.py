"""Wire the notification service once: uvicorn (`app.py`), the Lambda handler, the local poller and
the tests all build from here.

FastAPI and the routes are imported by `build_app`, not with this module: the Lambda function builds
its app on its first HTTP event, so a sandbox started by the queue (its busiest trigger) never loads
them (see `functions.notification.handler`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cloudshop import aws_sync
from cloudshop.settings import Settings
from functions.notification.mailer import SesMailer
from functions.notification.repository import DynamoDBNotificationStore
from functions.notification.service import NotificationService

if TYPE_CHECKING:
    from fastapi import FastAPI

    from functions.notification.consumer import OrderEventConsumer


def build_service(settings: Settings) -> NotificationService:
    return NotificationService(
        store=DynamoDBNotificationStore(aws_sync.dynamodb_for(settings), table=settings.notifications_table),
        mailer=SesMailer(aws_sync.ses_for(settings), sender=settings.ses_sender),
    )


def build_app(settings: Settings, *, service: NotificationService | None = None) -> FastAPI:
    from cloudshop.auth import TokenVerifier
    from cloudshop.web import create_app
    from functions.notification.api import router

    notifications = service or build_service(settings)
    dynamodb = notifications.store.client
    return create_app(
        service="notification",
        settings=settings,
        routers=[router()],
        readiness={"notifications": lambda: dynamodb.describe_table(TableName=settings.notifications_table)},
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        state={"notifications": notifications},
    )


def build_consumer(settings: Settings, *, service: NotificationService) -> OrderEventConsumer:
    """The SQS batch consumer. Its Powertools batch and idempotency utilities are imported here, not
    with the app: an HTTP API invocation never needs them."""
    from functions.notification.consumer import OrderEventConsumer
    from functions.notification.idempotency import BlockingDynamoDBPersistenceLayer

    persistence = BlockingDynamoDBPersistenceLayer(aws_sync.dynamodb_for(settings), table=settings.idempotency_table)
    return OrderEventConsumer(service=service, persistence=persistence)
