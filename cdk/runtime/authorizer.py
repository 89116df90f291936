"""HTTP API Lambda authorizer: lets a request through when it carries a valid RS256 access token.

The gateway only checks that the caller holds a token the user service signed (signature, issuer,
expiry, the `sub` and `role` claims); every service checks roles and ownership again behind it. The
public key and the issuer come from the same settings the services read (`JWT_PUBLIC_KEY`, `JWT_ISSUER`).
Simple response format (payload 2.0): `{"isAuthorized": bool, "context": {...}}`.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jwt

from cloudshop.settings import Settings

ALGORITHMS = ["RS256"]
DENY: dict[str, Any] = {"isAuthorized": False}


@lru_cache(maxsize=1)
def _settings() -> Settings:
    return Settings()


def bearer_token(headers: dict[str, str] | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (HTTP API lower-cases header names)."""
    value = (headers or {}).get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authorize(token: str, *, public_key: str, issuer: str) -> dict[str, Any]:
    """The authorizer's answer for one token; never raises."""
    if not public_key:
        return DENY
    try:
        claims = jwt.decode(
            token,
            public_key,
            algorithms=ALGORITHMS,
            issuer=issuer,
            options={"require": ["exp", "sub", "role"]},
        )
    except jwt.PyJWTError:
        return DENY
    if claims.get("role") not in {"customer", "admin"}:
        return DENY
    return {"isAuthorized": True, "context": {"sub": str(claims["sub"]), "role": str(claims["role"])}}


def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    token = bearer_token(event.get("headers"))
    if token is None:
        return DENY
    settings = _settings()
    return authorize(token, public_key=settings.jwt_public_key, issuer=settings.jwt_issuer)
