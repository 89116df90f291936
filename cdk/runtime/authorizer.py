"""HTTP API Lambda authorizer: lets a request through when it carries a valid access token.

The gateway checks the token exactly as the services do, with `cloudshop.auth.TokenVerifier` (RS256
signature with the public key, issuer, audience, expiry, role); the services check roles, ownership
and session revocation again behind it. The key and issuer come from the same settings the services
read (`JWT_PUBLIC_KEY`, `JWT_ISSUER`). Simple response format (payload 2.0):
`{"isAuthorized": bool, "context": {...}}`; the context reaches the integration as
`requestContext.authorizer.lambda`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from cloudshop.auth import TokenVerifier, bearer_token
from cloudshop.errors import Unauthorized
from cloudshop.settings import Settings

DENY: dict[str, Any] = {"isAuthorized": False}


@lru_cache(maxsize=1)
def _verifier() -> TokenVerifier:
    settings = Settings()
    return TokenVerifier(settings.jwt_public_key, issuer=settings.jwt_issuer)


def authorize(token_header: str | None, verifier: TokenVerifier) -> dict[str, Any]:
    """The authorizer's answer for one `Authorization` header value; never raises."""
    try:
        principal = verifier.verify(bearer_token(token_header))
    except Unauthorized:
        return DENY
    return {"isAuthorized": True, "context": {"sub": principal.user_id, "role": principal.role}}


def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    headers = event.get("headers") or {}
    return authorize(headers.get("authorization"), _verifier())
