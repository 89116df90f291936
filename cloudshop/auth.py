"""RS256 access tokens for people, HS256 tokens for calls between services.

The user service alone holds the private key and issues access tokens; every service verifies them
with the public key. Service-to-service calls carry a short-lived token signed with a shared secret
and the audience `internal`, so a customer's token can never reach an internal endpoint.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cloudshop.errors import Forbidden, Unauthorized

Role = Literal["customer", "admin"]
ROLES: tuple[str, ...] = ("customer", "admin")
INTERNAL_AUDIENCE = "internal"
# The header that carries a service token (a header name, not a secret).
SERVICE_TOKEN_HEADER = "x-service-token"  # noqa: S105
ACCESS_AUDIENCE = "cloudshop"


@dataclass(frozen=True)
class Principal:
    user_id: str
    role: str
    email: str = ""
    session_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def require_admin(self) -> None:
        if not self.is_admin:
            raise Forbidden("This action needs the admin role.")

    def require_owner(self, owner_id: str) -> None:
        """Owners and admins pass; anybody else gets a 404 so that ids cannot be probed."""
        if owner_id != self.user_id and not self.is_admin:
            from cloudshop.errors import NotFound

            raise NotFound("No such resource.")


def generate_key_pair() -> tuple[str, str]:
    """A fresh RSA key pair as (private PEM, public PEM); the local runner and tests use it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class TokenIssuer:
    def __init__(self, private_key_pem: str, *, issuer: str, access_ttl_seconds: int) -> None:
        self._key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
        self.issuer = issuer
        self.access_ttl_seconds = access_ttl_seconds

    def access_token(self, *, user_id: str, role: str, email: str, session_id: str) -> str:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": ACCESS_AUDIENCE,
            "sub": user_id,
            "role": role,
            "email": email,
            "sid": session_id,
            "iat": now,
            "exp": now + self.access_ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self._key, algorithm="RS256")  # type: ignore[arg-type]


class TokenVerifier:
    def __init__(self, public_key_pem: str, *, issuer: str) -> None:
        if not public_key_pem:
            raise ValueError("JWT_PUBLIC_KEY is not set")
        self._key = serialization.load_pem_public_key(public_key_pem.encode())
        self.issuer = issuer

    def verify(self, token: str) -> Principal:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,  # type: ignore[arg-type]
                algorithms=["RS256"],
                audience=ACCESS_AUDIENCE,
                issuer=self.issuer,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is invalid.") from exc
        role = claims.get("role")
        if role not in ROLES:
            raise Unauthorized("The access token is invalid.")
        return Principal(
            user_id=str(claims["sub"]),
            role=str(role),
            email=str(claims.get("email", "")),
            session_id=str(claims.get("sid", "")),
        )


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("An access token is required.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Use 'Authorization: Bearer <token>'.")
    return token.strip()


class InternalTokens:
    """Short-lived HS256 tokens for calls between services."""

    ttl_seconds = 300

    def __init__(self, secret: str, *, service: str) -> None:
        if len(secret) < 32:
            raise ValueError("INTERNAL_TOKEN_SECRET must be at least 32 characters")
        self._secret = secret
        self.service = service
        self._cached: tuple[str, float] | None = None

    def token(self) -> str:
        # Reused until close to expiry: signing on every call is wasted work on the hot path.
        now = time.time()
        if self._cached and self._cached[1] - now > 60:
            return self._cached[0]
        exp = now + self.ttl_seconds
        token = jwt.encode(
            {"sub": self.service, "aud": INTERNAL_AUDIENCE, "iat": int(now), "exp": int(exp)},
            self._secret,
            algorithm="HS256",
        )
        self._cached = (token, exp)
        return token

    def verify(self, token: str) -> str:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], audience=INTERNAL_AUDIENCE)
        except jwt.PyJWTError as exc:
            raise Unauthorized("A valid service token is required.") from exc
        return str(claims["sub"])
