"""Wire the user service once: the uvicorn app, the Lambda handler and the tests all call `build_app`."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

from argon2 import PasswordHasher
from fastapi import FastAPI

from cloudshop import aws_sync
from cloudshop.auth import TokenIssuer, TokenVerifier
from cloudshop.estate import ESTATE
from cloudshop.settings import Settings
from cloudshop.sql import Engine, engine_for, ping
from cloudshop.web import create_app
from functions.user.api import install_rate_limit_answer, router
from functions.user.model import Limit
from functions.user.repository import DynamoDBSessionStore, DynamoDBThrottle, SqlUserRepository
from functions.user.service import Limits, SessionPolicy, UserService


def migrate_schema(engine: Engine) -> None:
    """This service's tables only (tests); the deploy and the runner migrate every service at once."""
    # Alembic stays out of the Lambda's import (~110 ms here): the function never migrates.
    from cloudshop.schema import apply_schema

    apply_schema(engine, schemas=(ESTATE.sql_schema("user"),))


def build_service(
    settings: Settings, engine: Engine | None = None, *, clock: Callable[[], float] = time.time
) -> UserService:
    engine = engine or engine_for(settings)
    private_key = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key else ""
    issuer = (
        TokenIssuer(private_key, issuer=settings.jwt_issuer, access_ttl_seconds=settings.access_token_ttl_seconds)
        if private_key
        else None
    )
    dynamodb = aws_sync.dynamodb_for(settings)
    return UserService(
        users=SqlUserRepository(engine),
        sessions=DynamoDBSessionStore(dynamodb, table=settings.sessions_table, clock=clock),
        throttle=DynamoDBThrottle(dynamodb, table=settings.sessions_table, clock=clock),
        issuer=issuer,
        hasher=PasswordHasher(),
        limits=Limits(
            guesses_per_address=Limit(
                "guess-address", settings.login_address_max_failures, settings.login_address_window_seconds
            ),
            guesses_per_account=Limit(
                "guess-account", settings.login_max_failures, settings.login_failure_window_seconds
            ),
            taken_emails_per_address=Limit(
                "taken-email-address",
                settings.register_address_max_conflicts,
                settings.register_address_window_seconds,
            ),
        ),
        policy=SessionPolicy(
            idle_seconds=settings.refresh_token_ttl_seconds,
            lifetime_seconds=settings.session_lifetime_seconds,
            reuse_grace_seconds=settings.refresh_reuse_grace_seconds,
            # The only secret this service alone holds; a key rotation only costs the refreshes
            # inside one grace period (`UserService.refresh`).
            rotation_key=hashlib.sha256(b"cloudshop refresh-token rotation\0" + private_key.encode()).digest(),
        ),
        clock=clock,
    )


def build_app(settings: Settings, *, clock: Callable[[], float] = time.time) -> FastAPI:
    service = build_service(settings, clock=clock)
    engine = service.users.engine
    dynamodb = service.sessions.client

    app = create_app(
        service="user",
        settings=settings,
        routers=[router()],
        readiness={
            "database": lambda: ping(engine),
            "sessions": lambda: dynamodb.describe_table(TableName=settings.sessions_table),
        },
        verifier=TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer),
        state={"users": service, "session_revoked": lambda sid: not service.sessions.is_active(sid)},
    )
    install_rate_limit_answer(app)
    return app
