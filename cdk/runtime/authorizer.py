"""HTTP API Lambda authorizers: the two ways a request gets past the gateway.

- `handler` (user routes): a valid access token of a live session. The token is checked exactly as
  the services check it, with `cloudshop.auth.TokenVerifier` (RS256 signature with the public key,
  issuer, audience, expiry, role), and its session (`sid`) must still be active in the `sessions`
  table (`cloudshop.sessions.session_is_active`), so a logged-out session's tokens are refused at the
  edge like the local gateway refuses them. API Gateway must not cache these answers: a cached
  "allow" would outlive a logout.
- `service_handler` (internal routes): a service token in `x-service-token`, checked with
  `cloudshop.auth.InternalTokens` and the shared secret, which `load_secrets` reads by its ARN
  (`INTERNAL_TOKEN_SECRET_ARN`). A user's access token never opens an internal route.

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
from cloudshop.auth import SERVICE_TOKEN_HEADER, InternalTokens, TokenVerifier, bearer_token
from cloudshop.errors import Unauthorized
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


def authorize_service(token: str | None, tokens: InternalTokens) -> dict[str, Any]:
    """The answer for one `x-service-token` value on an internal route; never raises."""
    try:
        caller = tokens.verify(token or "")
    except Unauthorized:
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
    from cloudshop import aws
    from cloudshop.sessions import session_is_active

    settings = _settings()
    dynamodb = aws.client("dynamodb", settings)
    return lambda session_id: session_is_active(dynamodb, table=settings.sessions_table, session_id=session_id)


@lru_cache(maxsize=1)
def _internal_tokens() -> InternalTokens:
    settings = load_secrets(_settings())
    return InternalTokens(settings.internal_token_secret.get_secret_value(), service="gateway")


def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    headers = event.get("headers") or {}
    return authorize(headers.get("authorization"), _verifier(), session_active=_session_check())


def service_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    headers = event.get("headers") or {}
    return authorize_service(headers.get(SERVICE_TOKEN_HEADER), _internal_tokens())
