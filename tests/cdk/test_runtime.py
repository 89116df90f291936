"""The infrastructure's own Lambda code: the gateway authorizers and the JWT key generator.

`authorize`/`authorize_service` are tested with injected verifiers and session checks; the handlers
once more against the real stores on moto (a logout, a secret read by ARN), as the cloud runs them.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from cdk.runtime import authorizer, jwt_keygen
from cloudshop import aws, aws_sync
from cloudshop.auth import InternalTokens, TokenIssuer, TokenVerifier, generate_key_pair, internal_tokens_for
from cloudshop.estate import ESTATE
from cloudshop.settings import Settings
from functions.user.repository import DynamoDBSessionStore

pytestmark = pytest.mark.infra


@pytest.fixture(scope="module")
def keys() -> tuple[str, str]:
    return generate_key_pair()


def issue(private_key: str, *, role: str = "customer", ttl: int = 300, issuer: str = "cloudshop") -> str:
    return TokenIssuer(private_key, issuer=issuer, access_ttl_seconds=ttl).access_token(
        user_id="u-1", role=role, email="a@example.com", session_id="s-1"
    )


def live(_session_id: str) -> bool:
    return True


def test_valid_access_token_of_a_live_session_is_authorized_with_the_principal_in_context(keys) -> None:
    private, public = keys
    checked: list[str] = []

    def session_active(session_id: str) -> bool:
        checked.append(session_id)
        return True

    answer = authorizer.authorize(
        f"Bearer {issue(private)}", TokenVerifier(public, issuer="cloudshop"), session_active=session_active
    )

    assert answer == {"isAuthorized": True, "context": {"sub": "u-1", "role": "customer"}}
    assert checked == ["s-1"]


def test_token_of_a_revoked_session_is_denied(keys) -> None:
    private, public = keys

    answer = authorizer.authorize(
        f"Bearer {issue(private)}", TokenVerifier(public, issuer="cloudshop"), session_active=lambda _sid: False
    )

    assert answer == {"isAuthorized": False}


def test_a_failing_session_lookup_denies(keys) -> None:
    private, public = keys

    def unreachable(_session_id: str) -> bool:
        raise ConnectionError("DynamoDB is unreachable")

    answer = authorizer.authorize(
        f"Bearer {issue(private)}", TokenVerifier(public, issuer="cloudshop"), session_active=unreachable
    )

    assert answer == {"isAuthorized": False}


@pytest.mark.parametrize(
    "header",
    [None, "", "Basic abc", "Bearer ", "Bearer not-a-jwt"],
)
def test_missing_or_malformed_token_is_denied(keys, header: str | None) -> None:
    verifier = TokenVerifier(keys[1], issuer="cloudshop")
    assert authorizer.authorize(header, verifier, session_active=live) == {"isAuthorized": False}


def test_token_from_another_key_issuer_or_expired_is_denied(keys) -> None:
    private, public = keys
    other_private, _ = generate_key_pair()
    verifier = TokenVerifier(public, issuer="cloudshop")
    assert (
        authorizer.authorize(f"Bearer {issue(other_private)}", verifier, session_active=live)["isAuthorized"] is False
    )
    evil = issue(private, issuer="evil")
    assert authorizer.authorize(f"Bearer {evil}", verifier, session_active=live)["isAuthorized"] is False
    expired = jwt.encode(
        {"sub": "u", "role": "customer", "iss": "cloudshop", "exp": int(time.time()) - 10}, private, algorithm="RS256"
    )
    assert authorizer.authorize(f"Bearer {expired}", verifier, session_active=live)["isAuthorized"] is False


# --- internal routes: service tokens only ------------------------------------------------------------


SECRETS = {pair: pair[0] * 48 for pair in ESTATE.token_pairs}
RESERVE = "POST /api/v1/internal/reservations"
RELEASE = "POST /api/v1/internal/reservations/{order_id}/release"
DENIED = {"isAuthorized": False}


def gateway_tokens() -> InternalTokens:
    return internal_tokens_for(Settings(internal_token_secrets=SECRETS), service="gateway")


@pytest.mark.parametrize("route_key", [RESERVE, RELEASE])
def test_internal_route_with_its_callers_token_is_authorized_with_the_caller_in_context(route_key: str) -> None:
    token = InternalTokens(SECRETS, service="order").token("product")

    answer = authorizer.authorize_service(token, gateway_tokens(), route_key=route_key)

    assert answer == {"isAuthorized": True, "context": {"service": "order"}}


def test_user_access_token_never_opens_an_internal_route(keys) -> None:
    access_token = issue(keys[0], role="admin")

    assert authorizer.authorize_service(access_token, gateway_tokens(), route_key=RESERVE) == DENIED
    assert authorizer.authorize_service(f"Bearer {access_token}", gateway_tokens(), route_key=RESERVE) == DENIED


@pytest.mark.parametrize("token", [None, "", "not-a-jwt"])
def test_internal_route_without_a_valid_service_token_is_denied(token: str | None) -> None:
    assert authorizer.authorize_service(token, gateway_tokens(), route_key=RESERVE) == DENIED


def test_service_token_signed_with_another_secret_is_denied() -> None:
    forged = InternalTokens({"order-product": "f" * 48}, service="order").token("product")
    assert authorizer.authorize_service(forged, gateway_tokens(), route_key=RESERVE) == DENIED


def test_a_token_of_another_pair_or_caller_or_route_is_denied() -> None:
    # The order service's token for the payment service, signed with that pair's secret;
    for_payment = InternalTokens(SECRETS, service="order").token("payment")
    # a token that claims another caller of the product service, signed with the one secret it has;
    as_payment = InternalTokens({"payment-product": SECRETS["order-product"]}, service="payment").token("product")
    # and the right token, on a route key the estate does not declare internal.
    right = InternalTokens(SECRETS, service="order").token("product")

    assert authorizer.authorize_service(for_payment, gateway_tokens(), route_key=RESERVE) == DENIED
    assert authorizer.authorize_service(as_payment, gateway_tokens(), route_key=RESERVE) == DENIED
    assert authorizer.authorize_service(right, gateway_tokens(), route_key="ANY /api/v1/orders/{proxy+}") == DENIED


def test_service_handler_takes_the_token_from_the_service_token_header_only(monkeypatch: pytest.MonkeyPatch) -> None:
    clear_caches()
    monkeypatch.setenv("INTERNAL_TOKEN_SECRETS", json.dumps({"order-product": SECRETS["order-product"]}))
    token = InternalTokens(SECRETS, service="order").token("product")
    try:
        event = {"routeKey": RESERVE, "headers": {"x-service-token": token}}
        assert authorizer.service_handler(event, None)["isAuthorized"] is True
        assert (
            authorizer.service_handler({"routeKey": RESERVE, "headers": {"authorization": f"Bearer {token}"}}, None)
            == DENIED
        )
    finally:
        clear_caches()


# --- the handlers against the real stores (moto): sessions table and Secrets Manager ---------------


def clear_caches() -> None:
    for cached in (authorizer._settings, authorizer._verifier, authorizer._session_check, authorizer._internal_tokens):
        cached.cache_clear()


@pytest.fixture
def cloud_env(make_settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The environment the authorizers get from CDK, pointed at a provisioned estate on moto."""
    settings = make_settings(prefix="authz-")
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(settings.aws_endpoint_url))
    monkeypatch.setenv("JWT_PUBLIC_KEY", settings.jwt_public_key)
    monkeypatch.setenv("SESSIONS_TABLE", settings.sessions_table)
    clear_caches()
    yield settings
    clear_caches()


def test_handler_refuses_the_tokens_of_a_session_once_it_is_logged_out(cloud_env) -> None:
    sessions = DynamoDBSessionStore(aws_sync.dynamodb_for(cloud_env), table=cloud_env.sessions_table)
    session_id = f"s-{uuid.uuid4().hex}"
    sessions.create(session_id=session_id, user_id="u-1", secret="refresh", ttl_seconds=600)
    token = TokenIssuer(
        cloud_env.jwt_private_key.get_secret_value(), issuer="cloudshop", access_ttl_seconds=300
    ).access_token(user_id="u-1", role="admin", email="a@example.com", session_id=session_id)
    event = {"headers": {"authorization": f"Bearer {token}"}}

    assert authorizer.handler(event, None)["context"] == {"sub": "u-1", "role": "admin"}
    sessions.revoke(session_id)
    assert authorizer.handler(event, None) == {"isAuthorized": False}


def test_service_handler_reads_the_secret_by_its_arn(cloud_env, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "k" * 64
    arn = aws.client("secretsmanager", cloud_env).create_secret(
        Name=f"authz-internal-token-order-product-{uuid.uuid4().hex}", SecretString=secret
    )["ARN"]
    monkeypatch.setenv("INTERNAL_TOKEN_SECRET_ARNS", json.dumps({"order-product": arn}))
    monkeypatch.delenv("INTERNAL_TOKEN_SECRETS", raising=False)
    token = InternalTokens({"order-product": secret}, service="order").token("product")
    event = {"routeKey": RESERVE, "headers": {"x-service-token": token}}

    assert authorizer.service_handler(event, None)["context"] == {"service": "order"}


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
    escaped = answers[-1][1]["PublicKeyPemJsonEscaped"]
    assert "\n" not in escaped, "one line: it is pasted into a JSON string"
    assert json.loads(f'"{escaped}"') == answers[-1][1]["PublicKeyPem"]
    jwt_keygen.handler({"RequestType": "Delete"}, None)
    assert answers[-1] == ("SUCCESS", {})
    monkeypatch.setattr(jwt_keygen.boto3, "client", lambda _name: InMemorySecrets())
    jwt_keygen.handler(event, None)
    assert answers[-1][0] == "FAILED"
