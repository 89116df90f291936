"""Storage for users (SQL), and for refresh sessions and attempt counters (DynamoDB `sessions`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from cloudshop.aws import condition_failed, from_item
from cloudshop.aws_json import DynamoDBError
from cloudshop.errors import Conflict, NotFound
from cloudshop.sessions import session_is_active, session_key
from cloudshop.sql import Engine, IntegrityError, Row, as_utc, set_clause
from functions.user.model import Claim, Limit, RetiredSecret, Session, User, hash_secret

# What `update` may set (the SET clause is built from these names only).
UPDATABLE_COLUMNS = frozenset({"email", "name", "role", "password_hash", "updated_at"})

INSERT_USER = (
    "INSERT INTO users (id, email, name, role, password_hash, created_at, updated_at)"
    " VALUES (:id, :email, :name, :role, :password_hash, :created_at, :updated_at)"
)
USER_BY_EMAIL = "SELECT id, email, name, role, password_hash, created_at, updated_at FROM users WHERE email = :email"
USER_BY_ID = "SELECT id, email, name, role, password_hash, created_at, updated_at FROM users WHERE id = :user_id"
# `{assignments}`: `column = :column` for each of UPDATABLE_COLUMNS the call sets.
UPDATE_USER = "UPDATE users SET {assignments} WHERE id = :user_id"


def _user(row: Row) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        name=row["name"],
        role=row["role"],
        password_hash=row["password_hash"],
        created_at=as_utc(row["created_at"]),
        updated_at=as_utc(row["updated_at"]),
    )


class SqlUserRepository:
    # Every call is one statement, so each runs as one (`engine.single()`: autocommit on PostgreSQL,
    # one round trip instead of BEGIN, the statement and COMMIT).
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def add(self, user: User) -> None:
        try:
            with self.engine.single() as conn:
                conn.execute(INSERT_USER, user.__dict__)
        except IntegrityError as exc:
            raise Conflict("An account with this email already exists.") from exc

    def by_email(self, email: str) -> User | None:
        with self.engine.single() as conn:
            row = conn.execute(USER_BY_EMAIL, {"email": email}).first()
        return _user(row) if row else None

    def get(self, user_id: str) -> User:
        with self.engine.single() as conn:
            row = conn.execute(USER_BY_ID, {"user_id": user_id}).first()
        if row is None:
            raise NotFound("No such user.")
        return _user(row)

    def update(self, user_id: str, **values: Any) -> User:
        values["updated_at"] = datetime.now(UTC)
        assignments = set_clause(values, allowed=UPDATABLE_COLUMNS, what="user")
        with self.engine.single() as conn:
            conn.execute(UPDATE_USER.format(assignments=assignments), {**values, "user_id": user_id})
        return self.get(user_id)


class DynamoDBSessionStore:
    """Refresh sessions (`session#<id>`) and each user's session family (`session-family#<user id>`).

    The family item lists the user's live sessions (one attribute per session, holding its absolute
    end), so a password change can end all of them: the `sessions` table has only its key, and a
    scan or a new index would cost far more than one extra write per login.
    """

    def __init__(self, client: Any, *, table: str, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.table = table
        self.clock = clock

    def create(
        self,
        *,
        session_id: str,
        user_id: str,
        secret: str,
        ttl_seconds: int,
        lifetime_seconds: int | None = None,
    ) -> None:
        """A new session, idle for at most `ttl_seconds` and alive for at most `lifetime_seconds`."""
        now = int(self.clock())
        absolute = now + (lifetime_seconds or ttl_seconds)
        # Joined to the family before it exists: a session never lives outside its family, so a
        # password change can always find it (a member whose session was never written is harmless).
        self._join_family(user_id, session_id, absolute, now)
        self.client.put_item(
            TableName=self.table,
            Item={
                **session_key(session_id),
                "user_id": {"S": user_id},
                "refresh_hash": {"S": hash_secret(secret)},
                "created_at": {"N": str(now)},
                "expires_at": {"N": str(min(now + ttl_seconds, absolute))},
                "absolute_expires_at": {"N": str(absolute)},
            },
        )

    def get(self, session_id: str) -> Session | None:
        answer = self.client.get_item(TableName=self.table, Key=session_key(session_id), ConsistentRead=True)
        item = answer.get("Item")
        return _session(session_id, from_item(item)) if item else None

    def is_active(self, session_id: str) -> bool:
        return session_is_active(self.client, table=self.table, session_id=session_id)

    def rotate(self, session: Session, *, new_secret: str, expires_at: int) -> bool:
        """Swap the refresh secret, retiring the current one; False when `session` is no longer the
        stored state (another refresh of the same secret won, or the session was revoked)."""
        retired = session.retire_current(self.clock())
        try:
            self.client.update_item(
                TableName=self.table,
                Key=session_key(session.id),
                UpdateExpression="SET refresh_hash = :new, expires_at = :exp, retired = :retired",
                ConditionExpression="refresh_hash = :old AND attribute_not_exists(revoked)",
                ExpressionAttributeValues={
                    ":new": {"S": hash_secret(new_secret)},
                    ":old": {"S": session.refresh_hash},
                    ":exp": {"N": str(expires_at)},
                    ":retired": {"L": [{"M": {"h": {"S": r.hash}, "at": {"N": str(r.retired_at)}}} for r in retired]},
                },
            )
        except DynamoDBError as exc:
            if condition_failed(exc):
                return False
            raise
        return True

    def revoke(self, session_id: str, *, user_id: str | None = None) -> None:
        try:
            self.client.update_item(
                TableName=self.table,
                Key=session_key(session_id),
                UpdateExpression="SET revoked = :t",
                ConditionExpression="attribute_exists(pk)",
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
        except DynamoDBError as exc:
            if not condition_failed(exc):
                raise
        if user_id:
            self._leave_family(user_id, [session_id])

    def revoke_family(self, user_id: str, *, keep: str | None = None) -> int:
        """End every session of the user but `keep`; the number ended."""
        answer = self.client.get_item(TableName=self.table, Key=_family_key(user_id), ConsistentRead=True)
        ended = [sid for sid in _members(answer.get("Item") or {}) if sid != keep]
        for session_id in ended:
            self.revoke(session_id)
        self._leave_family(user_id, ended)
        return len(ended)

    def _join_family(self, user_id: str, session_id: str, absolute: int, now: int) -> None:
        answer = self.client.update_item(
            TableName=self.table,
            Key=_family_key(user_id),
            # The family outlives its newest member (every session gets the same lifetime).
            UpdateExpression="SET #member = :end, expires_at = :end",
            ExpressionAttributeNames={"#member": _MEMBER + session_id},
            ExpressionAttributeValues={":end": {"N": str(absolute)}},
            ReturnValues="ALL_NEW",
        )
        members = _members(answer.get("Attributes") or {})
        ended = [sid for sid, end in members.items() if end <= now]
        live = sorted((end, sid) for sid, end in members.items() if end > now)
        # A bounded family keeps the item far below DynamoDB's 400 KB: past the cap, the oldest go.
        for _, sid in live[: max(0, len(live) - MAX_SESSIONS_PER_USER)]:
            self.revoke(sid)
            ended.append(sid)
        self._leave_family(user_id, ended)

    def _leave_family(self, user_id: str, session_ids: list[str]) -> None:
        # In batches: one expression stays well below DynamoDB's 4 KB expression limit.
        for start in range(0, len(session_ids), 50):
            batch = session_ids[start : start + 50]
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key=_family_key(user_id),
                    UpdateExpression="REMOVE " + ", ".join(f"#m{n}" for n in range(len(batch))),
                    # A family already gone (expired) is not written back as an empty item.
                    ConditionExpression="attribute_exists(pk)",
                    ExpressionAttributeNames={f"#m{n}": _MEMBER + sid for n, sid in enumerate(batch)},
                )
            except DynamoDBError as exc:
                if not condition_failed(exc):
                    raise


# A user's live sessions: at most this many at once; a new login past it ends the oldest.
MAX_SESSIONS_PER_USER = 100
_MEMBER = "s_"


def _family_key(user_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"session-family#{user_id}"}}


def _members(item: dict[str, Any]) -> dict[str, int]:
    return {name.removeprefix(_MEMBER): int(value["N"]) for name, value in item.items() if name.startswith(_MEMBER)}


def _session(session_id: str, item: dict[str, Any]) -> Session:
    created = int(item.get("created_at", 0))
    return Session(
        id=session_id,
        user_id=str(item["user_id"]),
        refresh_hash=str(item["refresh_hash"]),
        created_at=created,
        expires_at=int(item["expires_at"]),
        # Sessions started before the absolute lifetime existed end one default lifetime after their start.
        absolute_expires_at=int(item.get("absolute_expires_at", created + LEGACY_LIFETIME_SECONDS)),
        revoked=bool(item.get("revoked", False)),
        retired=tuple(RetiredSecret(str(r["h"]), int(r["at"])) for r in item.get("retired", [])),
    )


LEGACY_LIFETIME_SECONDS = 30 * 86400


class DynamoDBThrottle:
    """Attempt counters on the `sessions` table: `throttle#<scope>#<subject hash>#<bucket>`.

    A claim is one conditional `UpdateItem` per limit (`ADD attempts :one` if `attempts < :room`),
    made before the work it guards: of N concurrent attempts, exactly as many as fit are admitted,
    whatever their timing. The room comes from the previous bucket, read first (`Limit.room`). That
    read can miss an increment still landing in the previous bucket at the very instant it rolls
    over, which the rounding up in `Limit.room` absorbs for all but a burst of attempts straddling
    the boundary within one round trip. Subjects (emails, addresses) are stored hashed.
    """

    def __init__(self, client: Any, *, table: str, clock: Callable[[], float] = time.time) -> None:
        self.client = client
        self.table = table
        self.clock = clock

    def claim(self, *limits: tuple[Limit, str]) -> Claim:
        """One attempt against each (limit, subject), in order; all or nothing."""
        taken: list[str] = []
        for limit, subject in limits:
            now = self.clock()
            bucket = limit.bucket(now)
            previous = self._count(self._key(limit, subject, bucket - 1))
            key = self._key(limit, subject, bucket)
            room = limit.room(previous=previous, now=now)
            if room <= 0 or not self._take(key, room=room, expires_at=(bucket + 2) * limit.window_seconds):
                self.give_back(Claim(slots=tuple(taken)))
                current = max(self._count(key), room)
                wait = limit.retry_after(previous=previous, current=current, now=now)
                return Claim(retry_after_seconds=max(1.0, wait))
            taken.append(key)
        return Claim(slots=tuple(taken))

    def give_back(self, claim: Claim) -> None:
        """Uncount a claim's attempts (the attempt did not need counting: it succeeded, or never ran)."""
        for key in claim.slots:
            try:
                self.client.update_item(
                    TableName=self.table,
                    Key={"pk": {"S": key}},
                    UpdateExpression="ADD attempts :minus",
                    ConditionExpression="attempts > :zero",
                    ExpressionAttributeValues={":minus": {"N": "-1"}, ":zero": {"N": "0"}},
                )
            except DynamoDBError as exc:
                if not condition_failed(exc):
                    raise

    def _key(self, limit: Limit, subject: str, bucket: int) -> str:
        return f"throttle#{limit.scope}#{hash_secret(subject)[:32]}#{limit.window_seconds}#{bucket}"

    def _count(self, key: str) -> int:
        item = self.client.get_item(TableName=self.table, Key={"pk": {"S": key}}, ConsistentRead=True).get("Item")
        return int(item["attempts"]["N"]) if item and "attempts" in item else 0

    def _take(self, key: str, *, room: int, expires_at: int) -> bool:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"pk": {"S": key}},
                UpdateExpression="ADD attempts :one SET expires_at = :exp",
                ConditionExpression="attribute_not_exists(attempts) OR attempts < :room",
                ExpressionAttributeValues={
                    ":one": {"N": "1"},
                    ":room": {"N": str(room)},
                    ":exp": {"N": str(expires_at)},
                },
            )
        except DynamoDBError as exc:
            if condition_failed(exc):
                return False
            raise
        return True
