"""HTTP API Lambda authorizers: the two ways a request gets past the gateway.

- `handler` (user routes): a valid access token of a live session. The token is checked exactly as
  the services check it, with `cloudshop.auth.TokenVerifier` (RS256 signature with the public key,
  issuer, audience, expiry, role), and its session (`sid`) must still be active in the `sessions`
  table (`cloudshop.sessions.session_is_active`), so a logged-out session's tokens are refused at the
  edge like the local gateway refuses them. API Gateway must not cache these answers: a cached
  "allow" would outlive a logout.
- `service_handler` (internal routes): a service token in `x-service-token` of a caller the route
  admits, checked with `cloudshop.auth.InternalTokens`. The route is the event's `routeKey`, and its
  callers and service come from the estate's route table (`ESTATE.routes`, from
  `ESTATE.internal_routes`), the declaration the services check them against too. The function holds
  the secrets of exactly those (caller, service) pairs, read by ARN by `load_secrets`
  (`INTERNAL_TOKEN_SECRET_ARNS`). A user's access token never opens an internal route.

The services check roles, ownership and service tokens again behind the gateway. Simple response
format (payload 2.0): `{"isAuthorized": bool, "context": {...}}`; the context reaches the integration
as `requestContext.authorizer.lambda`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

# HTTP API lower-cases header names (payload 2.0), as SERVICE_TOKEN_HEADER is.
from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens, TokenVerifier, bearer_token, internal_tokens_for
from cloudshop.errors import Forbidden, Unauthorized
from cloudshop.estate import ESTATE, Route
from cloudshop.settings import Settings, load_secrets

log = logging.getLogger("cloudshop.authorizer")

DENY: dict[str, Any] = {"isAuthorized": False}
SessionCheck = Callable[[str], bool]


def authorize(token_header: str | None, verifier: TokenVerifier, *, session_active: SessionCheck) -> dict[str, Any]:
    """The answer for one `Authorization` header value on a user route; never raises.

    A failing session lookup denies (fail closed): the client retries, a revoked token never passes.
    """
    try:
        principal = verifier.verify(bearer_token(token_header))
    except Unauthorized:
        return DENY
    try:
        active = session_active(principal.session_id)
    except Exception:
        log.exception("session lookup failed; denying")
        return DENY
    if not active:
        return DENY
    return {"isAuthorized": True, "context": {"sub": principal.user_id, "role": principal.role}}


# `METHOD /path` (API Gateway's route key) -> the internal route it is.
INTERNAL_ROUTES: dict[str, Route] = {f"{r.method} {r.path}": r for r in ESTATE.routes if r.internal}


def authorize_service(token: str | None, tokens: InternalTokens, *, route_key: str) -> dict[str, Any]:
    """The answer for one `x-service-token` value on the internal route `route_key`; never raises.

    A route the estate does not declare internal admits nobody; a declared one, its callers only.
    """
    route = INTERNAL_ROUTES.get(route_key)
    if route is None:
        return DENY
    try:
        caller = tokens.verify(token or "", callers=route.callers, audience=route.service)
    except (Unauthorized, Forbidden):
        return DENY
    return {"isAuthorized": True, "context": {"service": caller}}


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


@lru_cache(maxsize=1)
def _verifier() -> TokenVerifier:
    settings = _settings()
    return TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer)


@lru_cache(maxsize=1)
def _session_check() -> SessionCheck:
    from cloudshop import aws_sync
    from cloudshop.sessions import session_is_active

    settings = _settings()
    dynamodb = aws_sync.dynamodb_for(settings)
    return lambda session_id: session_is_active(dynamodb, table=settings.sessions_table, session_id=session_id)


@lru_cache(maxsize=1)
def _internal_tokens() -> InternalTokens:
    return internal_tokens_for(load_secrets(_settings()), service="gateway")


def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    headers = event.get("headers") or {}
    return authorize(headers.get("authorization"), _verifier(), session_active=_session_check())


def service_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    headers = event.get("headers") or {}
    return authorize_service(
        headers.get(SERVICE_TOKEN_HEADER), _internal_tokens(), route_key=str(event.get("routeKey", ""))
    )
