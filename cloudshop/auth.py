"""RS256 access tokens for people, HS256 tokens for calls between services.

The user service alone holds the private key and issues access tokens; every service verifies them
with the public key. Service-to-service calls carry a token that lives a minute, names its caller and
its callee, and is signed with the secret of that one pair (`InternalTokens`), so a customer's token
never reaches an internal endpoint and a service reaches only the internal routes that admit it.

PyJWT is imported by the first token signed or verified, not with this module: with the
`cryptography.x509` its algorithms import, it was ~20 ms of the product and notification functions'
cold start here, and their busiest paths (the catalog's reads, the SQS batches) verify no token. The
keys are still loaded, and so checked, when a verifier or an issuer is built.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from cryptography.hazmat.primitives import serialization

from cloudshop.errors import Forbidden, Unauthorized
from cloudshop.estate import ESTATE, token_pair

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from cloudshop.settings import Settings

Role = Literal["customer", "admin"]
ROLES: tuple[str, ...] = ("customer", "admin")
# The header that carries a service token (a header name, not a secret).
SERVICE_TOKEN_HEADER = "x-service-token"  # noqa: S105
ACCESS_AUDIENCE = "cloudshop"


V = TypeVar("V")


class VerifiedTokens(Generic[V]):
    """What verifying a token answered, kept until the token expires.

    Verifying costs ~50 us of CPU each time (an RS256 signature for an access token, two HS256
    decodes for a service token), and callers send the same token again and again: a buyer its
    access token for 15 minutes, a service its service token for 30 s
    (`InternalTokens.renew_within_seconds`). A token seen before is then a dict lookup. The key holds
    the whole token, signature included, so only the exact string that verified matches; an entry
    serves while the token's `exp` is ahead, after which the verifier answers again (and refuses it).
    Only successes are kept, and nothing outlives its token: sessions are still checked per request
    by the callers, so an ended session is refused at once. Bounded: when full, it starts again empty.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._clock = clock  # the wall clock, as `exp` and PyJWT's check of it
        self._entries: dict[Hashable, tuple[V, float]] = {}

    def get(self, key: Hashable) -> V | None:
        entry = self._entries.get(key)
        if entry is None or self._clock() >= entry[1]:  # PyJWT: expired once `exp` <= now
            return None
        return entry[0]

    def keep(self, key: Hashable, answer: V, *, expires: float) -> V:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (answer, expires)
        return answer


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
    from cryptography.hazmat.primitives.asymmetric import rsa

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
        # Imported now, not by the first login: the service that issues tokens signs or verifies one
        # on nearly every route, so PyJWT belongs in its cold start rather than its first request.
        import jwt  # noqa: F401
        from cryptography.hazmat.primitives.asymmetric import rsa

        # OpenSSL's full check of an RSA private key (primality of its factors) took 30-70 ms of the
        # user Lambda's cold start here. The key is our own (`cdk/runtime/jwt_keygen.py`, or the local
        # runner's), so that check is skipped; one signature verified with the key's own public half
        # (~1 ms) still refuses a damaged key before it signs anything.
        key = serialization.load_pem_private_key(
            private_key_pem.encode(), password=None, unsafe_skip_rsa_key_validation=True
        )
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("JWT_PRIVATE_KEY is not an RSA private key")
        _check_key_pair(key)
        self._key = key
        self.issuer = issuer
        self.access_ttl_seconds = access_ttl_seconds

    def access_token(self, *, user_id: str, role: str, email: str, session_id: str) -> str:
        import jwt  # loaded by __init__ already: a dict lookup

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


def _check_key_pair(key: rsa.RSAPrivateKey) -> None:
    """Raise unless what `key` signs verifies with its public half: a damaged key fails at start-up."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    message = b"cloudshop signing key check"
    signature = key.sign(message, padding.PKCS1v15(), hashes.SHA256())
    try:
        key.public_key().verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature as exc:
        raise ValueError("JWT_PRIVATE_KEY is damaged: what it signs does not verify") from exc


class TokenVerifier:
    def __init__(self, public_key_pem: str, *, issuer: str, clock: Callable[[], float] = time.time) -> None:
        if not public_key_pem:
            raise ValueError("JWT_PUBLIC_KEY is not set")
        self._key = serialization.load_pem_public_key(public_key_pem.encode())
        self.issuer = issuer
        self._verified = VerifiedTokens[Principal](clock=clock)

    def verify(self, token: str) -> Principal:
        """The principal of a valid access token; a token verified before is not verified again
        until it expires (`VerifiedTokens`). Whether its session is still active is the caller's check."""
        known = self._verified.get(token)
        if known is not None:
            return known
        import jwt  # on the first token verified (see the module's docstring)

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
        principal = Principal(
            user_id=str(claims["sub"]),
            role=str(role),
            email=str(claims.get("email", "")),
            session_id=str(claims.get("sid", "")),
        )
        return self._verified.keep(token, principal, expires=float(claims["exp"]))


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise Unauthorized("An access token is required.")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Use 'Authorization: Bearer <token>'.")
    return token.strip()


class InternalTokens:
    """Service tokens: HS256, with one secret per (caller, callee) pair (`cloudshop.estate.token_pair`).

    A token names its caller (`sub`) and its callee (`aud`) and lives `ttl_seconds` (`iat` and `exp`
    both required). The caller signs with the secret of its pair; the callee verifies with the secret
    of the pair the token claims, and only for the callers the route admits (`verify(callers=...)`).
    So a secret opens one service to one caller and no further: the product Lambda holds `order-product`
    alone and can sign nothing the payment service accepts, and no token outlives a minute.
    `secrets` are the pairs this process is a party to (`internal_tokens_for`); `service` is its name.
    """

    ttl_seconds = 60
    # A token is reused until this close to its expiry: signing on every call is wasted work on the hot
    # path, and the margin outlasts a call with its retries (`SERVICE_TIMEOUT_SECONDS`, 10 s).
    renew_within_seconds = 30
    # What a callee accepts: a token's clock may run a little ahead of the callee's.
    leeway_seconds = 5

    def __init__(self, secrets: Mapping[str, str], *, service: str, clock: Callable[[], float] = time.time) -> None:
        for pair, secret in secrets.items():
            if len(secret) < 32:
                raise ValueError(f"the service-token secret {pair} must be at least 32 characters")
        self._secrets = dict(secrets)
        self.service = service
        self._clock = clock
        self._cached: dict[str, tuple[str, float]] = {}
        self._verified = VerifiedTokens[str](clock=clock)

    @property
    def pairs(self) -> tuple[str, ...]:
        return tuple(sorted(self._secrets))

    def token(self, audience: str) -> str:
        """A token for this service's calls to `audience`."""
        pair = token_pair(self.service, audience)
        secret = self._secrets.get(pair)
        if secret is None:
            raise ValueError(f"no service-token secret {pair}: {self.service} does not call {audience}")
        now = self._clock()
        cached = self._cached.get(audience)
        if cached and cached[1] - now > self.renew_within_seconds:
            return cached[0]
        import jwt  # on the first token signed (see the module's docstring)

        exp = int(now) + self.ttl_seconds
        token = jwt.encode(
            {"sub": self.service, "aud": audience, "iat": int(now), "exp": exp, "jti": uuid.uuid4().hex},
            secret,
            algorithm="HS256",
        )
        self._cached[audience] = (token, exp)
        return token

    def verify(self, token: str, *, callers: Collection[str], audience: str | None = None) -> str:
        """The caller of a valid token from one of `callers` to `audience` (this service by default).

        A token of a caller the route does not admit is a 403; anything unsigned, forged, expired,
        long-lived, or for another callee is a 401.
        """
        audience = audience or self.service
        known = self._verified.get((token, audience))
        if known is not None:
            # Verified before (`VerifiedTokens`): whether this route admits its caller is checked anew.
            if known not in callers:
                raise Forbidden("This caller may not call this route.")
            return known
        import jwt  # on the first token verified (see the module's docstring)

        try:
            claimed = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise Unauthorized("A valid service token is required.") from exc
        caller = claimed.get("sub")
        if not isinstance(caller, str) or not caller:
            raise Unauthorized("A valid service token is required.")
        if caller not in callers:
            raise Forbidden("This caller may not call this route.")
        secret = self._secrets.get(token_pair(caller, audience))
        if secret is None:
            raise Unauthorized("A valid service token is required.")
        try:
            claims = jwt.decode(
                token,
                secret,
                algorithms=["HS256"],
                audience=audience,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The service token has expired.") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("A valid service token is required.") from exc
        issued, expires = claims["iat"], claims["exp"]
        if not isinstance(issued, int) or not isinstance(expires, int) or expires - issued > self.ttl_seconds:
            raise Unauthorized("The service token lives too long.")
        if claims["sub"] != caller:
            raise Unauthorized("A valid service token is required.")
        return self._verified.keep((token, audience), caller, expires=float(expires))


def internal_tokens_for(settings: Settings, *, service: str) -> InternalTokens:
    """`service`'s service tokens: the secrets of the pairs the estate makes it a party to, and no others
    (in the cloud it is granted no others; locally the runner hands every process all of them)."""
    pairs = ESTATE.token_pairs_of(service)
    given = settings.internal_token_secrets
    missing = [pair for pair in pairs if pair not in given]
    if missing:
        raise ValueError(f"{service} needs the service-token secrets {missing} (INTERNAL_TOKEN_SECRETS)")
    return InternalTokens({pair: given[pair].get_secret_value() for pair in pairs}, service=service)
