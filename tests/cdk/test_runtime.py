"""The infrastructure's own Lambda code: the gateway authorizer and the JWT key generator."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from cdk.runtime import authorizer, jwt_keygen
from cloudshop.auth import TokenIssuer, TokenVerifier, generate_key_pair

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_key_pair()


def issue(private_key: str, *, role: str = "customer", ttl: int = 300, issuer: str = "cloudshop") -> str:
    return TokenIssuer(private_key, issuer=issuer, access_ttl_seconds=ttl).access_token(
        user_id="u-1", role=role, email="a@example.com", session_id="s-1"
    )


def test_valid_access_token_is_authorized_with_the_principal_in_context(keys) -> None:
    private, public = keys
    answer = authorizer.authorize(f"Bearer {issue(private)}", TokenVerifier(public, issuer="cloudshop"))
    assert answer == {"isAuthorized": True, "context": {"sub": "u-1", "role": "customer"}}


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic abc", "Bearer ", "Bearer not-a-jwt"],
)
def test_missing_or_malformed_token_is_denied(keys, header: str | None) -> None:
    assert authorizer.authorize(header, TokenVerifier(keys[1], issuer="cloudshop")) == {"isAuthorized": False}


def test_token_from_another_key_issuer_or_expired_is_denied(keys) -> None:
    private, public = keys
    other_private, _ = generate_key_pair()
    verifier = TokenVerifier(public, issuer="cloudshop")
    assert authorizer.authorize(f"Bearer {issue(other_private)}", verifier)["isAuthorized"] is False
    assert authorizer.authorize(f"Bearer {issue(private, issuer='evil')}", verifier)["isAuthorized"] is False
    expired = jwt.encode(
        {"sub": "u", "role": "customer", "iss": "cloudshop", "exp": int(time.time()) - 10}, private, algorithm="RS256"
    )
    assert authorizer.authorize(f"Bearer {expired}", verifier)["isAuthorized"] is False


def test_handler_reads_the_key_from_the_settings(keys, monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = keys
    monkeypatch.setenv("JWT_PUBLIC_KEY", public)
    authorizer._verifier.cache_clear()
    event = {"headers": {"authorization": f"Bearer {issue(private, role='admin')}"}}
    assert authorizer.handler(event, None)["context"]["role"] == "admin"
    authorizer._verifier.cache_clear()


class InMemorySecrets:
    """A Secrets Manager fake: enough of get/put_secret_value for the key generator."""

    def __init__(self, **values: str) -> None:
        self.values = dict(values)
        self.puts: list[str] = []

    def get_secret_value(self, SecretId: str) -> dict[str, Any]:
        return {"SecretString": self.values[SecretId]}

    def put_secret_value(self, SecretId: str, SecretString: str) -> None:
        self.puts.append(SecretId)
        self.values[SecretId] = SecretString


def test_first_deploy_replaces_the_placeholder_with_a_key_pair() -> None:
    secrets = InMemorySecrets(private="random-placeholder", public="random-placeholder")
    public = jwt_keygen.ensure_key(secrets, "private", public_secret_id="public")
    assert "BEGIN PRIVATE KEY" in secrets.values["private"]
    assert secrets.values["public"] == public
    token = issue(secrets.values["private"])
    assert TokenVerifier(public, issuer="cloudshop").verify(token).user_id == "u-1"


def test_later_deploys_keep_the_existing_key() -> None:
    private, public = generate_key_pair()
    secrets = InMemorySecrets(private=private, public=public)
    assert jwt_keygen.ensure_key(secrets, "private", public_secret_id="public") == public
    assert secrets.puts == []


def test_custom_resource_always_answers_cloudformation(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[tuple[str, dict[str, str]]] = []
    monkeypatch.setattr(jwt_keygen, "_respond", lambda event, status, data, reason="": answers.append((status, data)))
    monkeypatch.setattr(jwt_keygen.boto3, "client", lambda _name: InMemorySecrets(p="placeholder"))
    event = {"RequestType": "Create", "ResourceProperties": {"PrivateKeySecretArn": "p"}}
    jwt_keygen.handler(event, None)
    assert answers[-1][0] == "SUCCESS" and "BEGIN PUBLIC KEY" in answers[-1][1]["PublicKeyPem"]
    jwt_keygen.handler({"RequestType": "Delete"}, None)
    assert answers[-1] == ("SUCCESS", {})
    monkeypatch.setattr(jwt_keygen.boto3, "client", lambda _name: InMemorySecrets())
    jwt_keygen.handler(event, None)
    assert answers[-1][0] == "FAILED"
