"""User use cases: register, log in, refresh, log out, profile. Storage, hashing and time are injected."""

from __future__ import annotations

import base64
import hmac
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from cloudshop.auth import TokenIssuer
from cloudshop.errors import Conflict, RateLimited, Unauthorized, ValidationFailed
from functions.user.model import Claim, Limit, Session, User, check_password_rules, hash_secret, normalise_email
from functions.user.repository import DynamoDBSessionStore, DynamoDBThrottle, SqlUserRepository

INVALID_LOGIN = "Invalid email or password."
INVALID_REFRESH = "The refresh token is invalid or has expired."
TOO_MANY_GUESSES = "Too many failed password attempts; wait and try again."
TOO_MANY_REGISTRATIONS = "Too many registrations for existing accounts from this address; wait and try again."


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


@dataclass(frozen=True)
class Limits:
    """The throttles (see README, "Auth"). A password guess, at login or at a password change,
    counts against the client address and against the account; registering an email that is taken
    counts against the address."""

    guesses_per_address: Limit
    guesses_per_account: Limit
    taken_emails_per_address: Limit


@dataclass(frozen=True)
class SessionPolicy:
    idle_seconds: int
    lifetime_seconds: int
    # How long a just-rotated refresh token still answers (see `UserService.refresh`).
    reuse_grace_seconds: int
    # Keys the derivation of each next refresh secret from the current one (`UserService._successor`).
    rotation_key: bytes


class UserService:
    def __init__(
        self,
        *,
        users: SqlUserRepository,
        sessions: DynamoDBSessionStore,
        throttle: DynamoDBThrottle,
        issuer: TokenIssuer | None,
        hasher: PasswordHasher,
        limits: Limits,
        policy: SessionPolicy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users = users
        self.sessions = sessions
        self.throttle = throttle
        self.issuer = issuer
        self.hasher = hasher
        self.limits = limits
        self.policy = policy
        self.clock = clock

    @cached_property
    def _dummy_hash(self) -> str:
        """Verified against when the email is unknown, so both failures cost the same time.

        Hashed on the first login rather than at start-up: argon2 takes ~145 ms here, more than half the
        Lambda's 250 ms import budget, and no other route needs it. `login` reads it before it looks the
        email up, so that first login costs the same whether the email is known or not.
        """
        return self.hasher.hash(secrets.token_urlsafe(16))

    def register(self, *, email: str, password: str, name: str, role: str = "customer", client: str = "") -> User:
        """A new account. From a client address, each answer "already exists" counts against that
        address (`taken_emails_per_address`): the attempt is counted first and given back once the
        account is created, so parallel probes cannot outrun the count."""
        email = normalise_email(email)
        check_password_rules(password)
        claim = (
            self._claim(TOO_MANY_REGISTRATIONS, (self.limits.taken_emails_per_address, client)) if client else Claim()
        )
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
        self.throttle.give_back(claim)
        return user

    def login(self, *, email: str, password: str, client: str) -> TokenPair:
        email = email.strip().lower()
        dummy_hash = self._dummy_hash
        claim = self._claim_guess(email=email, client=client)
        user = self.users.by_email(email)
        try:
            self.hasher.verify(user.password_hash if user else dummy_hash, password)
            if user is None:
                raise VerificationError
        except VerificationError as exc:
            raise Unauthorized(INVALID_LOGIN) from exc
        # Only failed guesses count: a success gives its attempt back to the address and the account.
        self.throttle.give_back(claim)
        if self.hasher.check_needs_rehash(user.password_hash):
            user = self.users.update(user.id, password_hash=self.hasher.hash(password))
        return self._start_session(user, password)

    def _claim_guess(self, *, email: str, client: str) -> Claim:
        """Count one password guess before it is checked (claim first, verify second), so that N
        parallel guesses get at most the limit's worth of checks. The address is claimed first: a
        refused address spends nothing of the account's budget, so one address cannot lock anyone out."""
        return self._claim(
            TOO_MANY_GUESSES,
            (self.limits.guesses_per_address, client),
            (self.limits.guesses_per_account, email),
        )

    def _claim(self, detail: str, *limits: tuple[Limit, str]) -> Claim:
        claim = self.throttle.claim(*limits)
        if not claim.granted:
            raise RateLimited(detail, extra={"retry_after_ms": int(claim.retry_after_seconds * 1000)})
        return claim

    def _start_session(self, user: User, password: str) -> TokenPair:
        session_id, secret = uuid.uuid4().hex, secrets.token_urlsafe(32)
        self.sessions.create(
            session_id=session_id,
            user_id=user.id,
            secret=secret,
            ttl_seconds=self.policy.idle_seconds,
            lifetime_seconds=self.policy.lifetime_seconds,
        )
        # A password change that landed while this login checked the old password ended the family
        # before this session joined it: look again now that it has joined, and end it if so.
        current = self.users.get(user.id).password_hash
        if current != user.password_hash and not self._verifies(current, password):
            self.sessions.revoke(session_id, user_id=user.id)
            raise Unauthorized(INVALID_LOGIN)
        return self._tokens(user, session_id, secret)

    def _verifies(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self.hasher.verify(password_hash, password))
        except VerificationError:
            return False

    def _tokens(self, user: User, session_id: str, secret: str) -> TokenPair:
        if self.issuer is None:
            raise RuntimeError("JWT_PRIVATE_KEY is not configured")
        access = self.issuer.access_token(user_id=user.id, role=user.role, email=user.email, session_id=session_id)
        return TokenPair(access, f"{session_id}.{secret}", self.issuer.access_ttl_seconds)

    def _successor(self, secret: str) -> str:
        """The refresh secret that follows `secret`: derived, not drawn, so that a refresh racing
        another one with the same token can hand out the same new token (see `refresh`). Keyed with
        a server secret, so a stolen token does not reveal its successors."""
        digest = hmac.new(self.policy.rotation_key, secret.encode(), "sha256").digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def refresh(self, refresh_token: str) -> TokenPair:
        """Rotate the refresh token.

        The token's secret must be the session's current one. A secret retired by a rotation less
        than `reuse_grace_seconds` ago answers too, with the token that replaced it: two tabs (or a
        retry whose answer was lost) refreshing with the same token at once both end up with the
        same new token, instead of the second being taken for a thief and logging the user out. We
        chose the same pair over a second pair in the same family because one session then stays
        one refresh token: a logout ends it, and no orphan session lives on. The successor can be
        recomputed because it is derived from the secret (`_successor`); nothing secret is stored.
        Older retired secrets are replays of a leaked token: the session ends. An unknown secret
        proves nothing about the session (only its id, which every access token carries), so it is
        refused without ending anything.
        """
        session_id, secret = _split_refresh(refresh_token)
        presented = hash_secret(secret)
        for _ in range(3):
            session = self._live_session(session_id)
            now = self.clock()
            if presented == session.refresh_hash:
                successor = self._successor(secret)
                if self.sessions.rotate(
                    session, new_secret=successor, expires_at=session.next_expiry(now, self.policy.idle_seconds)
                ):
                    return self._tokens(self.users.get(session.user_id), session_id, successor)
                continue  # another refresh with this secret won the rotation: read it again
            index = session.retired_index(presented)
            if index is None:
                raise Unauthorized(INVALID_REFRESH)
            if now - session.retired[index].retired_at < self.policy.reuse_grace_seconds:
                successor = secret
                for _ in range(index + 1):
                    successor = self._successor(successor)
                if hash_secret(successor) != session.refresh_hash:
                    raise Unauthorized(INVALID_REFRESH)
                return self._tokens(self.users.get(session.user_id), session_id, successor)
            # A refresh token used again after its grace means it leaked: end the whole session.
            self.sessions.revoke(session_id, user_id=session.user_id)
            raise Unauthorized(INVALID_REFRESH)
        raise Unauthorized(INVALID_REFRESH)

    def _live_session(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None or not session.is_live(self.clock()):
            raise Unauthorized(INVALID_REFRESH)
        return session

    def logout(self, refresh_token: str) -> None:
        """End the session of `refresh_token`. Its secret must be the current one or a retired one
        (a tab that missed a rotation may still log out); the session id alone ends nothing."""
        session_id, secret = _split_refresh(refresh_token)
        session = self.sessions.get(session_id)
        presented = hash_secret(secret)
        if session is None or (presented != session.refresh_hash and session.retired_index(presented) is None):
            raise Unauthorized(INVALID_REFRESH)
        self.sessions.revoke(session_id, user_id=session.user_id)

    def update_profile(
        self,
        user_id: str,
        *,
        name: str | None,
        password: str | None,
        current_password: str | None,
        session_id: str = "",
        client: str = "",
    ) -> User:
        """Rename, or change the password. A password change checks `current_password` as a login
        does (counted against the address and the account first), and then ends every other session
        of the user: whoever held one without the new password is out."""
        values: dict[str, str] = {}
        if name is not None:
            values["name"] = name.strip()
        if password is not None:
            if not current_password:
                raise ValidationFailed("Send the current password to change it.")
            check_password_rules(password)
            user = self.users.get(user_id)
            claim = self._claim_guess(email=user.email, client=client)
            if not self._verifies(user.password_hash, current_password):
                raise ValidationFailed("The current password is wrong.")
            self.throttle.give_back(claim)
            values["password_hash"] = self.hasher.hash(password)
        updated = self.users.update(user_id, **values) if values else self.users.get(user_id)
        if password is not None:
            self.sessions.revoke_family(user_id, keep=session_id or None)
        return updated

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
        raise Unauthorized(INVALID_REFRESH)
    return session_id, secret
