"""Wire the user service once: the uvicorn app, the Lambda handler and the tests all call `build_app`."""

from __future__ import annotations

from argon2 import PasswordHasher
from fastapi import FastAPI
from sqlalchemy import Engine

from cloudshop import aws
from cloudshop.auth import TokenIssuer, TokenVerifier
from cloudshop.estate import ESTATE
from cloudshop.settings import Settings
from cloudshop.sql import engine_for, ping
from cloudshop.web import create_app
from functions.user.api import router
from functions.user.repository import DynamoDBSessionStore, SqlUserRepository
from functions.user.service import UserService


def migrate_schema(engine: Engine) -> None:
    """This service's tables only (tests); the deploy and the runner migrate every service at once."""
    # Alembic stays out of the Lambda's import (~110 ms here): the function never migrates.
    from cloudshop.schema import apply_schema

    apply_schema(engine, schemas=(ESTATE.sql_schema("user"),))


def build_service(settings: Settings, engine: Engine | None = None) -> UserService:
    engine = engine or engine_for(settings)
    private_key = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key else ""
    issuer = (
        TokenIssuer(private_key, issuer=settings.jwt_issuer, access_ttl_seconds=settings.access_token_ttl_seconds)
        if private_key
        else None
    )
    return UserService(
        users=SqlUserRepository(engine),
        sessions=DynamoDBSessionStore(aws.client("dynamodb", settings), table=settings.sessions_table),
        issuer=issuer,
        hasher=PasswordHasher(),
        refresh_ttl_seconds=settings.refresh_token_ttl_seconds,
        max_login_failures=settings.login_max_failures,
        failure_window_seconds=settings.login_failure_window_seconds,
    )


def build_app(settings: Settings) -> FastAPI:
    service = build_service(settings)
    engine = service.users.engine
    dynamodb = service.sessions.client

    return create_app(
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
