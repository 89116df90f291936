"""User domain: who a user is and the rules on their credentials. No framework imports here."""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime

from cloudshop.errors import ValidationFailed

PASSWORD_MIN, PASSWORD_MAX = 10, 128
NAME_MAX = 100
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,63}$")


@dataclass
class User:
    id: str
    email: str
    name: str
    role: str
    password_hash: str
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, str]:
        return {
            "id": self.id,
            "email": self.email,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at.isoformat(),
        }


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    if len(email) > 254 or not _EMAIL.match(email):
        raise ValidationFailed("The email address is not valid.")
    return email


def check_password_rules(password: str) -> None:
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ValidationFailed(f"A password has {PASSWORD_MIN} to {PASSWORD_MAX} characters.")
    if password.isdigit() or password.isalpha():
        raise ValidationFailed("A password mixes letters with digits or symbols.")


def hash_secret(secret: str) -> str:
    """How refresh secrets (and throttle subjects) are stored: refresh secrets are 256-bit random
    values, so a plain SHA-256 is enough to keep them safe at rest."""
    return hashlib.sha256(secret.encode()).hexdigest()


# --- Sessions -----------------------------------------------------------------------------------

# Retired refresh secrets a session remembers: a replay of any of them is a stolen token (the
# session ends); a secret older than these is only "invalid". Five cover any realistic replay delay
# without making the item the gateway reads on each request much bigger (5 x ~80 bytes).
RETIRED_KEPT = 5


@dataclass(frozen=True)
class RetiredSecret:
    hash: str
    retired_at: int


@dataclass(frozen=True)
class Session:
    """A refresh session: one login, rotated by each refresh, never alive past `absolute_expires_at`."""

    id: str
    user_id: str
    refresh_hash: str
    created_at: int
    expires_at: int
    absolute_expires_at: int
    revoked: bool = False
    retired: tuple[RetiredSecret, ...] = ()

    def is_live(self, now: float) -> bool:
        return not self.revoked and now < self.expires_at and now < self.absolute_expires_at

    def retired_index(self, presented_hash: str) -> int | None:
        """How many rotations ago `presented_hash` was the refresh secret (0: the last one), if known."""
        for index, retired in enumerate(self.retired):
            if retired.hash == presented_hash:
                return index
        return None

    def next_expiry(self, now: float, idle_seconds: int) -> int:
        """A refresh extends the session by `idle_seconds`, never past its absolute end."""
        return min(int(now) + idle_seconds, self.absolute_expires_at)

    def retire_current(self, now: float) -> tuple[RetiredSecret, ...]:
        return (RetiredSecret(self.refresh_hash, int(now)), *self.retired)[:RETIRED_KEPT]


# --- Throttling -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """At most `max_attempts` per sliding `window_seconds` for one subject of `scope`.

    The sliding window is the classic sliding-window counter: fixed buckets of `window_seconds`, and
    the previous bucket's count weighted by the share of it the window ending now still covers. No
    fixed boundary lets a subject double up: just after a bucket rolls over, the full previous
    bucket still counts (almost) fully.
    """

    scope: str
    max_attempts: int
    window_seconds: int

    def bucket(self, now: float) -> int:
        return int(now // self.window_seconds)

    def _elapsed(self, now: float) -> float:
        return now - self.bucket(now) * self.window_seconds

    def room(self, *, previous: int, now: float) -> int:
        """How many attempts the current bucket may hold at `now` (attempts admitted while below it)."""
        covered = 1 - self._elapsed(now) / self.window_seconds
        # Rounded up: the weighted estimate never lets one attempt more through than the limit.
        return self.max_attempts - math.ceil(round(previous * covered, 9))

    def retry_after(self, *, previous: int, current: int, now: float) -> float:
        """Seconds until one more attempt fits, given the two buckets' counts at `now`."""
        window, elapsed = self.window_seconds, self._elapsed(now)
        spare = self.max_attempts - current - 1
        if spare >= 0 and previous > 0:
            # Later in this bucket the previous one weighs less: admitted once previous * (1 - e/W) <= spare.
            at = window * (1 - spare / previous)
            if at < window:
                return max(at - elapsed, 0.0)
        # Next bucket: this one becomes the previous, admitted once current * (1 - e/W) <= max - 1.
        at_next = window * (1 - (self.max_attempts - 1) / current) if current > self.max_attempts - 1 else 0.0
        return window - elapsed + at_next


@dataclass(frozen=True)
class Claim:
    """Attempts counted against one or more limits before the work they guard (a password check).

    `slots` name the buckets counted, so a success can give its attempt back; a refused claim counts
    nothing and says when to retry.
    """

    slots: tuple[str, ...] = ()
    retry_after_seconds: float = 0.0

    @property
    def granted(self) -> bool:
        return self.retry_after_seconds <= 0
