"""Retries for cloudshop's own clients: `RetryBudget`, which bounds what retries add to a client's
calls (the service clients, `cloudshop.clients`, and the lean AWS clients), and botocore's
"standard" retry mode as the lean AWS clients (`cloudshop.dynamodb`, `cloudshop.sqs`, `cloudshop.s3`,
`cloudshop.aws_sync`) apply it: one policy, run by `Retries` for async code and by `BlockingRetries`
for code on a thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from cloudshop.observability import count_backend_call

T = TypeVar("T")


class RetryBudget:
    """Retries may add at most `ratio` of the calls made, plus a small burst: a token bucket.

    Every call deposits `ratio` tokens (capped at `burst`); every retry withdraws one. When a
    dependency fails outright, the calls that reach it are therefore at most `1 + ratio` times
    the calls made (plus `burst` once), however many attempts each caller would allow: retries
    cannot multiply the load on a dependency that is already struggling. The same idea as gRPC's
    retry throttling and Finagle's RetryBudget. Thread-safe, so sync and async clients can share it.
    """

    def __init__(self, *, ratio: float = 0.1, burst: float = 10.0) -> None:
        self.ratio = ratio
        self.burst = burst
        self._tokens = burst
        self._lock = threading.Lock()

    def record_call(self) -> None:
        with self._lock:
            self._tokens = min(self.burst, self._tokens + self.ratio)

    def try_retry(self) -> bool:
        """Take one retry from the budget; False when it is spent (then do not retry)."""
        with self._lock:
            if self._tokens < 1.0 - 1e-9:  # ten deposits of 0.1 add up to 0.999...
                return False
            self._tokens -= 1.0
            return True


class Retryable(Exception):
    """One attempt failed in a way a retry may fix (throttling, a 5xx, a timeout, a lost connection)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class RetriesExhausted(Exception):
    """Every attempt `Retries.call` allowed failed; `last` is the last failure."""

    def __init__(self, attempts: int, last: Retryable) -> None:
        super().__init__(str(last))
        self.attempts = attempts
        self.last = last


class RetryPolicy:
    """botocore's "standard" retry mode, for the calls of one lean client: at most `max_attempts`
    in all, full-jitter backoff (at most 0.05 s doubling, capped at 0.5 s), nothing started past the
    call's deadline, and each retry drawn from `budget` so that a failing dependency gets at most
    ~10% more calls, not three times as many."""

    def __init__(self, *, max_attempts: int, budget: RetryBudget | None, jitter: Callable[[], float]) -> None:
        self.max_attempts = max(1, max_attempts)
        self.budget = budget or RetryBudget()
        self.jitter = jitter

    def begin(self, service: str, operation: str) -> None:
        """A call starts: counted once as a `service` call, whatever its retries."""
        self.budget.record_call()
        count_backend_call(service, operation)

    def delay_before_retry(self, attempts: int, deadline: float) -> float | None:
        """How long to wait before attempt `attempts + 1`, or None to give up (`deadline` is on
        `time.monotonic()`)."""
        delay = self.jitter() * min(0.5, 0.05 * 2 ** (attempts - 1))
        if attempts >= self.max_attempts or time.monotonic() + delay >= deadline or not self.budget.try_retry():
            return None
        return delay

    def give_up(
        self, *, service: str, operation: str, attempts: int, last: Retryable, fields: dict[str, Any] | None
    ) -> RetriesExhausted:
        """Log the outage (with `fields`); the exception to raise."""
        logging.getLogger(f"cloudshop.{service}").warning(
            f"{service} unavailable",
            extra={"fields": {"operation": operation, **(fields or {}), "attempts": attempts, "error": str(last)}},
        )
        return RetriesExhausted(attempts, last)


class Retries(RetryPolicy):
    """The policy for async calls."""

    def __init__(
        self,
        *,
        max_attempts: int,
        budget: RetryBudget | None,
        jitter: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        super().__init__(max_attempts=max_attempts, budget=budget, jitter=jitter)
        self.sleep = sleep

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        service: str,
        operation: str,
        deadline: float,
        fields: dict[str, Any] | None = None,
    ) -> T:
        """Run `attempt` until it succeeds; `RetriesExhausted` when the policy gives up."""
        self.begin(service, operation)
        attempts = 0
        while True:
            attempts += 1
            try:
                return await attempt()
            except Retryable as exc:
                last = exc
            delay = self.delay_before_retry(attempts, deadline)
            if delay is None:
                raise self.give_up(
                    service=service, operation=operation, attempts=attempts, last=last, fields=fields
                ) from last
            await self.sleep(delay)


class BlockingRetries(RetryPolicy):
    """The policy for calls made on a thread (the Lambda functions' sync routes)."""

    def __init__(
        self,
        *,
        max_attempts: int,
        budget: RetryBudget | None,
        jitter: Callable[[], float],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(max_attempts=max_attempts, budget=budget, jitter=jitter)
        self.sleep = sleep

    def call(
        self,
        attempt: Callable[[], T],
        *,
        service: str,
        operation: str,
        deadline: float,
        fields: dict[str, Any] | None = None,
    ) -> T:
        """Run `attempt` until it succeeds; `RetriesExhausted` when the policy gives up."""
        self.begin(service, operation)
        attempts = 0
        while True:
            attempts += 1
            try:
                return attempt()
            except Retryable as exc:
                last = exc
            delay = self.delay_before_retry(attempts, deadline)
            if delay is None:
                raise self.give_up(
                    service=service, operation=operation, attempts=attempts, last=last, fields=fields
                ) from last
            self.sleep(delay)
