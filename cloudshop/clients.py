"""Calls between services: one pooled HTTP client per target, with timeouts, bounded retries and a
service token on every call, signed for that target (its `name`) with the secret of the pair.

Only idempotent calls are retried (every internal write in cloudshop carries its own idempotency key,
the order id, so internal POSTs are marked retryable by their callers). A problem answer (4xx) from
the other service is re-raised as the same domain error, so it reaches the caller unchanged; an
unreachable or failing service becomes `DependencyUnavailable` (503).

`AsyncServiceClient` is the same contract for async code, with two limits the sync client lacks:
a time budget per call (all attempts and back-off together finish within `timeout_seconds`, so a
caller's own timeout, set above it, never fires first) and a `RetryBudget` per target, so when a
target fails, retries add at most 10% to the calls instead of multiplying them by the attempts.

Its calls go through `cloudshop.http_pool` (issue 9): httpx's own pool (httpcore) scanned every
pooled connection on each request and release, with a syscall per idle one, and py-spy put 37.5% of
the order service's CPU there. `python -m cloudshop.bench_http` (a GET with a ~130-byte JSON answer
from uvicorn, 5 interleaved rounds of 1,000 calls, uvloop, client CPU per call, median):

                                                     one at a time   25 concurrent
    over httpx.AsyncHTTPTransport (before)                  356 µs         1031 µs
    over `PooledTransport`, through httpx objects           112 µs          104 µs
    over `PooledTransport` with `Endpoint` (what it uses)    48 µs           36 µs
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable
from json import dumps
from typing import Any

import anyio
import httpx

from cloudshop import tracing
from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens
from cloudshop.errors import DependencyUnavailable, error_from_problem
from cloudshop.http_pool import Answer, Endpoint, PooledTransport
from cloudshop.observability import REQUEST_ID_HEADER, count_backend_call, request_id_var
from cloudshop.retries import RetryBudget

log = logging.getLogger("cloudshop.clients")


class ServiceClient:
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        tokens: InternalTokens,
        timeout_seconds: float,
        retries: int,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.name = name
        self.retries = retries
        self._tokens = tokens
        self._http = httpx.Client(
            base_url=base_url,
            timeout=httpx.Timeout(timeout_seconds, connect=2.0),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=50),
            transport=transport,
        )

    def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, retry: bool | None = None
    ) -> Any:
        if tracing.enabled():
            attributes = _span_attributes(self.name, method, path)
            with tracing.span(f"{method} {self.name}", kind=tracing.SpanKind.CLIENT, attributes=attributes):
                return self._request(method, path, json=json, params=params, retry=retry)
        return self._request(method, path, json=json, params=params, retry=retry)

    def _request(self, method: str, path: str, *, json: Any, params: Any, retry: bool | None) -> Any:
        retryable = method in ("GET", "PUT", "DELETE") if retry is None else retry
        attempts = 1 + (self.retries if retryable else 0)
        headers = {SERVICE_TOKEN_HEADER: self._tokens.token(self.name), REQUEST_ID_HEADER: request_id_var.get()}
        tracing.inject(headers)
        count_backend_call("http", self.name)
        last_error: Exception | None = None
        for attempt in range(attempts):
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers)
            except httpx.TimeoutException as exc:
                # A timed-out write may have happened; only retry what is safe to repeat.
                last_error = exc
            except httpx.TransportError as exc:
                last_error = exc
            else:
                if response.status_code < 500:
                    return answer_of(response)
                last_error = RuntimeError(f"{self.name} answered {response.status_code}")
            if attempt + 1 < attempts:
                time.sleep(min(0.05 * 2**attempt, 0.5))
        log.warning("call failed", extra={"fields": {"target": self.name, "path": path, "error": repr(last_error)}})
        raise DependencyUnavailable(f"The {self.name} service is unavailable; try again.") from last_error

    def close(self) -> None:
        self._http.close()


# Idle keep-alive connections kept per target (the LIFO stack of `cloudshop.http_pool`): a burst opens
# up to max_connections (64-100); once it is over, only this many stay open, so a quiet service does
# not hold a hundred sockets on each peer. Idle connections cost no CPU per call (only the one handed
# out is looked at), so the cap is not a CPU matter; 32 lets a lull in the 25-buyer bench's ~25
# concurrent calls per target keep every connection for the next burst instead of reopening them.
MAX_IDLE_CONNECTIONS = 32


class AsyncServiceClient:
    """`ServiceClient` for async code: one keep-alive connection pool per target service.

    `timeout_seconds` bounds a whole call, retries and back-off included; each attempt gets what is
    left of it (connects get at most `connect_timeout_seconds`). An overloaded target's 503 with
    `retry-after-ms` is retried no sooner than it asks, and only if that still fits the budget.
    """

    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        tokens: InternalTokens,
        timeout_seconds: float,
        retries: int,
        connect_timeout_seconds: float = 1.0,
        max_connections: int = 64,
        retry_budget: RetryBudget | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.name = name
        self.retries = retries
        self.timeout_seconds = timeout_seconds
        self._connect_timeout = min(connect_timeout_seconds, timeout_seconds)
        self._tokens = tokens
        self._budget = retry_budget or RetryBudget()
        self._sleep = sleep
        self._jitter = jitter
        # The pooled transport itself, not an httpx.AsyncClient over it: the client's cookie jar,
        # redirect and auth layers cost ~20% of a call's CPU (profiled) and none is wanted here.
        # The `Endpoint` over it skips httpx's request and response objects too (see its docstring).
        self._endpoint = Endpoint(
            base_url.rstrip("/"),
            transport
            or PooledTransport(
                max_connections=max_connections, max_idle_connections=min(max_connections, MAX_IDLE_CONNECTIONS)
            ),
        )

    async def request(
        self, method: str, path: str, *, json: Any = None, params: Any = None, retry: bool | None = None
    ) -> Any:
        """The target's JSON answer (None when empty); its problem answers re-raised as domain errors."""
        if tracing.enabled():
            attributes = _span_attributes(self.name, method, path)
            with tracing.span(f"{method} {self.name}", kind=tracing.SpanKind.CLIENT, attributes=attributes):
                return await self._request(method, path, json=json, params=params, retry=retry)
        return await self._request(method, path, json=json, params=params, retry=retry)

    async def _request(self, method: str, path: str, *, json: Any, params: Any, retry: bool | None) -> Any:
        retryable = method in ("GET", "PUT", "DELETE") if retry is None else retry
        attempts = 1 + (self.retries if retryable else 0)
        headers = {SERVICE_TOKEN_HEADER: self._tokens.token(self.name), REQUEST_ID_HEADER: request_id_var.get()}
        tracing.inject(headers)
        target = self._endpoint.target(path, params)
        body = b""
        if json is not None:
            # As httpx.Request(json=...) encodes it.
            body = dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            headers["content-type"] = "application/json"
        deadline = time.monotonic() + self.timeout_seconds
        self._budget.record_call()
        count_backend_call("http", self.name)
        last_error: Exception | None = None
        for attempt in range(attempts):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            timeouts = {"connect": min(self._connect_timeout, remaining), "read": remaining, "write": remaining}
            timeouts["pool"] = remaining
            wait_at_least = 0.0
            try:
                with anyio.fail_after(remaining):
                    response = await self._endpoint.request(
                        method, target, headers=headers, body=body, timeouts=timeouts
                    )
            except (httpx.TimeoutException, TimeoutError) as exc:
                # A timed-out write may have happened; only retry what is safe to repeat.
                last_error = exc
            except httpx.TransportError as exc:
                last_error = exc
            else:
                if response.status_code < 500:
                    return answer_of(response)
                last_error = RuntimeError(f"{self.name} answered {response.status_code}")
                wait_at_least = _retry_after_seconds(response)
            if attempt + 1 >= attempts:
                break
            delay = max(wait_at_least, self._jitter() * min(0.05 * 2**attempt, 0.5))
            if time.monotonic() + delay >= deadline or not self._budget.try_retry():
                break
            await self._sleep(delay)
        log.warning("call failed", extra={"fields": {"target": self.name, "path": path, "error": repr(last_error)}})
        raise DependencyUnavailable(f"The {self.name} service is unavailable; try again.") from last_error

    async def aclose(self) -> None:
        await self._endpoint.aclose()


def _span_attributes(target: str, method: str, path: str) -> dict[str, str]:
    return {"peer.service": target, "http.request.method": method, "url.path": path}


def answer_of(response: httpx.Response | Answer) -> Any:
    """What a final (non-5xx) answer means to the caller, for the sync and async clients alike: its
    JSON (None when empty), or a 4xx problem raised as the same domain error it was."""
    if response.status_code < 400:
        return response.json() if response.content else None
    raise error_from_problem(response.status_code, _json_or_empty(response))


def _retry_after_seconds(response: Answer) -> float:
    """How long an overloaded target asked us to wait: `retry-after-ms`, else `Retry-After` seconds."""
    for header, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = response.header(header) or ""
        if value.isdigit():
            return int(value) * scale
    return 0.0


def _json_or_empty(response: httpx.Response | Answer) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
