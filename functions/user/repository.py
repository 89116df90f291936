"""Storage for users (SQL) and for refresh sessions and login failures (DynamoDB `sessions`)."""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from sqlalchemy import Column, DateTime, Engine, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from cloudshop.aws import condition_failed, from_item
from cloudshop.errors import Conflict, NotFound
from cloudshop.sessions import session_is_active, session_key
from cloudshop.sql import as_utc
from functions.user.model import User

metadata = MetaData()
users = Table(
    "users",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(254), nullable=False, unique=True),
    Column("name", String(100), nullable=False),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


def _user(row: Any) -> User:
    return User(
        id=row.id,
        email=row.email,
        name=row.name,
        role=row.role,
        password_hash=row.password_hash,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
    )


class SqlUserRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, user: User) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users).values(**user.__dict__))
        except IntegrityError as exc:
            raise Conflict("An account with this email already exists.") from exc

    def by_email(self, email: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.email == email)).first()
        return _user(row) if row else None

    def get(self, user_id: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(select(users).where(users.c.id == user_id)).first()
        if row is None:
            raise NotFound("No such user.")
        return _user(row)

    def update(self, user_id: str, **values: Any) -> User:
        values["updated_at"] = datetime.now(UTC)
        with self.engine.begin() as conn:
            conn.execute(update(users).where(users.c.id == user_id).values(**values))
        return self.get(user_id)


def hash_secret(secret: str) -> str:
    # Refresh secrets are 256-bit random values: a plain SHA-256 is enough to store them safely.
    return hashlib.sha256(secret.encode()).hexdigest()


class DynamoDBSessionStore:
    """Refresh sessions (`session#<id>`) and login-failure counters (`login-failures#<email>#<window>`)."""

    def __init__(self, client: Any, *, table: str) -> None:
        self.client = client
        self.table = table

    def create(self, *, session_id: str, user_id: str, secret: str, ttl_seconds: int) -> None:
        now = int(time.time())
        self.client.put_item(
            TableName=self.table,
            Item={
                **session_key(session_id),
                "user_id": {"S": user_id},
                "refresh_hash": {"S": hash_secret(secret)},
                "created_at": {"N": str(now)},
                "expires_at": {"N": str(now + ttl_seconds)},
            },
        )

    def get(self, session_id: str) -> dict[str, Any] | None:
        answer = self.client.get_item(TableName=self.table, Key=session_key(session_id), ConsistentRead=True)
        item = answer.get("Item")
        return from_item(item) if item else None

    def is_active(self, session_id: str) -> bool:
        return session_is_active(self.client, table=self.table, session_id=session_id)

    def rotate(self, *, session_id: str, old_secret: str, new_secret: str, ttl_seconds: int) -> bool:
        """Swap the refresh secret; False when `old_secret` is not the current one (reuse or race)."""
        try:
            self.client.update_item(
                TableName=self.table,
                Key=session_key(session_id),
                UpdateExpression="SET refresh_hash = :new, expires_at = :exp",
                ConditionExpression="refresh_hash = :old AND attribute_not_exists(revoked)",
                ExpressionAttributeValues={
                    ":new": {"S": hash_secret(new_secret)},
                    ":old": {"S": hash_secret(old_secret)},
                    ":exp": {"N": str(int(time.time()) + ttl_seconds)},
                },
            )
        except ClientError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def revoke(self, session_id: str) -> None:
        try:
            self.client.update_item(
                TableName=self.table,
                Key=session_key(session_id),
                UpdateExpression="SET revoked = :t",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
        except ClientError as exc:
            if not condition_failed(exc):
                raise

    def _failure_key(self, email: str, window_seconds: int) -> dict[str, Any]:
        window = int(time.time()) // window_seconds
        return {"pk": {"S": f"login-failures#{hash_secret(email)}#{window}"}}

    def failures(self, email: str, *, window_seconds: int) -> int:
        answer = self.client.get_item(TableName=self.table, Key=self._failure_key(email, window_seconds))
        return int(answer.get("Item", {}).get("failures", {}).get("N", "0"))

    def record_failure(self, email: str, *, window_seconds: int) -> None:
        self.client.update_item(
            TableName=self.table,
            Key=self._failure_key(email, window_seconds),
            UpdateExpression="ADD failures :one SET expires_at = :exp",
            ExpressionAttributeValues={
                ":one": {"N": "1"},
                ":exp": {"N": str(int(time.time()) + 2 * window_seconds)},
            },
        )
