"""Shared by the user service tests: a settable clock, clients with their own address, and the
register / login steps."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any, Literal

from argon2 import PasswordHasher
from fastapi.testclient import TestClient

PASSWORD = "correct-horse-42"
WRONG = "nope-nope-1"


class Clock:
    """The user service's time, moved by hand. It starts at the real time and only moves forward,
    so the edge's own session check (which reads the real time) agrees with it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def to_bucket_end(self, window_seconds: int, *, before: float) -> None:
        """Just before the next multiple of `window_seconds` (where a fixed window would reset)."""
        self.now = (self.now // window_seconds + 1) * window_seconds - before


class CountingHasher(PasswordHasher):
    """argon2 as the service uses it, counting password checks (thread-safe)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self._lock = threading.Lock()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        with self._lock:
            self.checks += 1
        return super().verify(hash, password)


def new_address() -> str:
    """A client address of its own (a documentation IPv6 /64), so tests never share a throttle."""
    return f"2001:db8:{secrets.randbelow(0xFFFF):x}:{secrets.randbelow(0xFFFF):x}::1"


def user_client(app: Any) -> Iterator[TestClient]:
    """A client behind a loopback peer, as the local gateway is: the address the service counts is
    the last X-Forwarded-For entry, here one of its own (`as_address` sends from another)."""
    headers = {"x-forwarded-for": new_address()}
    with TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000), headers=headers) as client:
        yield client


def as_address(address: str, **headers: str) -> dict[str, str]:
    return {"x-forwarded-for": address, **headers}


def register(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    answer = client.post("/api/v1/auth/register", json={"email": email, "password": password, "name": "Asha"})
    assert answer.status_code == 201, answer.text
    return answer.json()  # type: ignore[no-any-return]


def login(client: TestClient, email: str, password: str = PASSWORD, **headers: str) -> dict[str, Any]:
    answer = client.post("/api/v1/auth/login", json={"email": email, "password": password}, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json()  # type: ignore[no-any-return]


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}
