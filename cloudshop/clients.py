"""Calls between services: one pooled HTTP client per target, with timeouts, bounded retries and a
service token on every call.

Only idempotent calls are retried (every internal write in cloudshop carries its own idempotency key,
the order id, so internal POSTs are marked retryable by their callers). A problem answer (4xx) from
the other service is re-raised as the same domain error, so it reaches the caller unchanged; an
unreachable or failing service becomes `DependencyUnavailable` (503).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx

from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens
from cloudshop.errors import DependencyUnavailable, error_from_problem
from cloudshop.observability import REQUEST_ID_HEADER, request_id_var

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
        retryable = method in ("GET", "PUT", "DELETE") if retry is None else retry
        attempts = 1 + (self.retries if retryable else 0)
        headers = {SERVICE_TOKEN_HEADER: self._tokens.token(), REQUEST_ID_HEADER: request_id_var.get()}
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
                if response.status_code < 400:
                    return response.json() if response.content else None
                if response.status_code < 500:
                    raise error_from_problem(response.status_code, _json_or_empty(response))
                last_error = RuntimeError(f"{self.name} answered {response.status_code}")
            if attempt + 1 < attempts:
                time.sleep(min(0.05 * 2**attempt, 0.5))
        log.warning("call failed", extra={"fields": {"target": self.name, "path": path, "error": repr(last_error)}})
        raise DependencyUnavailable(f"The {self.name} service is unavailable; try again.") from last_error

    def close(self) -> None:
        self._http.close()


def _json_or_empty(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
