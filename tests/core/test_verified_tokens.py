"""A token verified once is a lookup until it expires (`cloudshop.auth.VerifiedTokens`, inside
`TokenVerifier.verify` and `InternalTokens.verify`); nothing else about token checks changes."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from cloudshop.auth import InternalTokens, TokenIssuer, TokenVerifier, VerifiedTokens
from cloudshop.errors import Forbidden, Unauthorized


def test_a_kept_answer_serves_until_its_token_expires_and_never_after() -> None:
    now = [1000.0]
    kept: VerifiedTokens[str] = VerifiedTokens(clock=lambda: now[0])
    assert kept.get("token") is None
    assert kept.keep("token", "order", expires=1060) == "order"
    assert kept.get("token") == "order"
    now[0] = 1059.9
    assert kept.get("token") == "order"
    now[0] = 1060.0  # PyJWT: a token is expired once `exp` <= now
    assert kept.get("token") is None


def test_the_memo_is_bounded() -> None:
    kept: VerifiedTokens[str] = VerifiedTokens(max_entries=2)
    exp = time.time() + 60
    kept.keep("a", "a", expires=exp)
    kept.keep("b", "b", expires=exp)
    kept.keep("c", "c", expires=exp)  # full: starts again empty
    assert (kept.get("a"), kept.get("b"), kept.get("c")) == (None, None, "c")


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every signature check `cloudshop.auth` makes (True) and every unverified peek (False)."""
    seen: list[bool] = []
    decode = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs.get("options", {}).get("verify_signature", True))
        return decode(*args, **kwargs)

    # On PyJWT itself: `cloudshop.auth` imports it on first use (a Lambda cold start skips it).
    monkeypatch.setattr(jwt, "decode", counting)
    return seen


def test_an_access_token_is_verified_once_until_it_expires(key_pair: tuple[str, str], decodes: list[bool]) -> None:
    private, public = key_pair
    now = [time.time()]
    verifier = TokenVerifier(public, issuer="cloudshop", clock=lambda: now[0])
    token = TokenIssuer(private, issuer="cloudshop", access_ttl_seconds=600).access_token(
        user_id="c-1", role="customer", email="c@x.io", session_id="s-1"
    )
    principals = [verifier.verify(token) for _ in range(3)]
    assert principals[0] == principals[2] and principals[0].session_id == "s-1"
    assert decodes.count(True) == 1
    # Past its `exp`, the memo no longer answers: the signature and the expiry are checked again
    # (PyJWT reads the real clock, so here the token still passes that check)
    now[0] += 601
    verifier.verify(token)
    assert decodes.count(True) == 2


def test_a_forged_or_expired_access_token_is_refused_every_time(key_pair: tuple[str, str]) -> None:
    private, public = key_pair
    verifier = TokenVerifier(public, issuer="cloudshop")
    token = TokenIssuer(private, issuer="cloudshop", access_ttl_seconds=600).access_token(
        user_id="c-1", role="customer", email="c@x.io", session_id="s-1"
    )
    verifier.verify(token)
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    claims = jwt.decode(token, options={"verify_signature": False})
    expired = jwt.encode({**claims, "exp": int(time.time()) - 10}, private, algorithm="RS256")
    for refused in (forged, expired, forged, expired):
        with pytest.raises(Unauthorized):
            verifier.verify(refused)


def test_a_service_token_is_verified_once_and_its_caller_checked_per_route(
    internal_secrets: dict[str, str], decodes: list[bool]
) -> None:
    product = InternalTokens(internal_secrets, service="product")
    token = InternalTokens(internal_secrets, service="order").token("product")
    assert [product.verify(token, callers=("order",)) for _ in range(3)] == ["order"] * 3
    assert decodes.count(True) == 1
    # A route that does not admit the caller refuses the same, already verified, token
    with pytest.raises(Forbidden):
        product.verify(token, callers=("payment",))
    # A token for another callee is its own entry: checked, and refused
    with pytest.raises(Unauthorized):
        product.verify(token, callers=("order",), audience="payment")


def test_an_expired_service_token_is_refused_every_time(internal_secrets: dict[str, str]) -> None:
    product = InternalTokens(internal_secrets, service="product")
    past = time.time() - InternalTokens.ttl_seconds - InternalTokens.leeway_seconds - 5
    token = InternalTokens(internal_secrets, service="order", clock=lambda: past).token("product")
    for _ in range(2):
        with pytest.raises(Unauthorized):
            product.verify(token, callers=("order",))
