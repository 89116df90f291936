"""User use cases: register, log in, refresh, log out, profile. Storage and hashing are injected."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from cloudshop.auth import TokenIssuer
from cloudshop.errors import Conflict, RateLimited, Unauthorized, ValidationFailed
from functions.user.model import User, check_password_rules, normalise_email
from functions.user.repository import DynamoDBSessionStore, SqlUserRepository

INVALID_LOGIN = "Invalid email or password."


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int

    def as_dict(self) -> dict[str, object]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }


class UserService:
    def __init__(
        self,
        *,
        users: SqlUserRepository,
        sessions: DynamoDBSessionStore,
        issuer: TokenIssuer | None,
        hasher: PasswordHasher,
        refresh_ttl_seconds: int,
        max_login_failures: int,
        failure_window_seconds: int,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.issuer = issuer
        self.hasher = hasher
        self.refresh_ttl_seconds = refresh_ttl_seconds
        self.max_login_failures = max_login_failures
        self.failure_window_seconds = failure_window_seconds

    @cached_property
    def _dummy_hash(self) -> str:
        """Verified against when the email is unknown, so both failures cost the same time.

        Hashed on the first login rather than at start-up: argon2 takes ~145 ms here, more than half the
        Lambda's 250 ms import budget, and no other route needs it. `login` reads it before it looks the
        email up, so that first login costs the same whether the email is known or not.
        """
        return self.hasher.hash(secrets.token_urlsafe(16))

    def register(self, *, email: str, password: str, name: str, role: str = "customer") -> User:
        email = normalise_email(email)
        check_password_rules(password)
        now = datetime.now(UTC)
        user = User(
            id=str(uuid.uuid4()),
            email=email,
            name=name.strip(),
            role=role,
            password_hash=self.hasher.hash(password),
            created_at=now,
            updated_at=now,
        )
        self.users.add(user)
        return user

    def login(self, *, email: str, password: str) -> TokenPair:
        email = email.strip().lower()
        dummy_hash = self._dummy_hash
        if self.sessions.failures(email, window_seconds=self.failure_window_seconds) >= self.max_login_failures:
            raise RateLimited("Too many failed logins; wait a few minutes and try again.")
        user = self.users.by_email(email)
        try:
            self.hasher.verify(user.password_hash if user else dummy_hash, password)
            if user is None:
                raise VerificationError
        except VerificationError as exc:
            self.sessions.record_failure(email, window_seconds=self.failure_window_seconds)
            raise Unauthorized(INVALID_LOGIN) from exc
        if self.hasher.check_needs_rehash(user.password_hash):
            self.users.update(user.id, password_hash=self.hasher.hash(password))
        return self._start_session(user)

    def _start_session(self, user: User) -> TokenPair:
        session_id, secret = uuid.uuid4().hex, secrets.token_urlsafe(32)
        self.sessions.create(
            session_id=session_id, user_id=user.id, secret=secret, ttl_seconds=self.refresh_ttl_seconds
        )
        return self._tokens(user, session_id, secret)

    def _tokens(self, user: User, session_id: str, secret: str) -> TokenPair:
        if self.issuer is None:
            raise RuntimeError("JWT_PRIVATE_KEY is not configured")
        access = self.issuer.access_token(user_id=user.id, role=user.role, email=user.email, session_id=session_id)
        return TokenPair(access, f"{session_id}.{secret}", self.issuer.access_ttl_seconds)

    def refresh(self, refresh_token: str) -> TokenPair:
        session_id, secret = _split_refresh(refresh_token)
        session = self.sessions.get(session_id)
        if not session or session.get("revoked") or int(session["expires_at"]) <= datetime.now(UTC).timestamp():
            raise Unauthorized("The refresh token is invalid or has expired.")
        new_secret = secrets.token_urlsafe(32)
        if not self.sessions.rotate(
            session_id=session_id, old_secret=secret, new_secret=new_secret, ttl_seconds=self.refresh_ttl_seconds
        ):
            # A refresh token used twice means it leaked: end the whole session.
            self.sessions.revoke(session_id)
            raise Unauthorized("The refresh token is invalid or has expired.")
        return self._tokens(self.users.get(str(session["user_id"])), session_id, new_secret)

    def logout(self, *, refresh_token: str | None, session_id: str | None) -> None:
        if refresh_token:
            session_id, _ = _split_refresh(refresh_token)
        if not session_id:
            raise Unauthorized("Send the refresh token or an access token to log out.")
        self.sessions.revoke(session_id)

    def update_profile(
        self, user_id: str, *, name: str | None, password: str | None, current_password: str | None
    ) -> User:
        values: dict[str, str] = {}
        if name is not None:
            values["name"] = name.strip()
        if password is not None:
            user = self.users.get(user_id)
            try:
                self.hasher.verify(user.password_hash, current_password or "")
            except VerificationError as exc:
                raise ValidationFailed("The current password is wrong.") from exc
            check_password_rules(password)
            values["password_hash"] = self.hasher.hash(password)
        return self.users.update(user_id, **values) if values else self.users.get(user_id)

    def create_admin(self, *, email: str, password: str, name: str = "Administrator") -> tuple[User, bool]:
        """The admin account for `email`: (user, True) when created now; (the existing user, False) when
        the email is taken, which changes nothing, not even a customer's role."""
        existing = self.users.by_email(normalise_email(email))
        if existing:
            return existing, False
        try:
            return self.register(email=email, password=password, name=name, role="admin"), True
        except Conflict:
            # Registered by someone else between the check and the insert: still "exists".
            raced = self.users.by_email(normalise_email(email))
            assert raced is not None
            return raced, False


def _split_refresh(token: str) -> tuple[str, str]:
    session_id, _, secret = token.partition(".")
    if not session_id or not secret or len(token) > 200:
        raise Unauthorized("The refresh token is invalid or has expired.")
    return session_id, secret
