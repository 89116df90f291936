"""User service API: registration, login, sessions, profile, and the bad input around them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cloudshop.settings import Settings
from functions.user.bootstrap import build_app, build_service, migrate_schema
from tests.helpers import assert_problem
from tests.services.user_fixtures import PASSWORD, Clock, bearer, login, register, user_client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["moto", "dynalite"])
def user_app(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], database_url: str, clock: Clock
) -> Iterator[TestClient]:
    """Users in SQL (SQLite and PostgreSQL), sessions in DynamoDB (moto and dynalite)."""
    settings = make_settings(database_url=database_url, dynamodb=request.param, login_max_failures=3)
    migrate_schema(build_service(settings).users.engine)
    yield from user_client(build_app(settings, clock=clock))


def test_register_login_and_read_own_profile(user_app: TestClient, unique_email: Callable[..., str]) -> None:
    email = unique_email()
    user = register(user_app, email)
    assert user["role"] == "customer" and user["email"] == email and "password" not in str(user)

    tokens = login(user_app, email.upper())
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] > 0

    me = user_app.get("/api/v1/users/me", headers=bearer(tokens))
    assert me.status_code == 200 and me.json()["id"] == user["id"]


def test_duplicate_email_is_a_conflict(user_app: TestClient, unique_email: Callable[..., str]) -> None:
    email = unique_email()
    register(user_app, email)
    answer = user_app.post("/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "B"})
    assert_problem(answer, 409)


def test_login_failures_are_uniform_and_rate_limited(user_app: TestClient, unique_email: Callable[..., str]) -> None:
    email = unique_email()
    register(user_app, email)
    wrong_password = user_app.post("/api/v1/auth/login", json={"email": email, "password": "nope-nope-1"})
    unknown_user = user_app.post("/api/v1/auth/login", json={"email": unique_email(), "password": "nope-nope-1"})
    assert assert_problem(wrong_password, 401)["detail"] == assert_problem(unknown_user, 401)["detail"]

    for _ in range(2):
        user_app.post("/api/v1/auth/login", json={"email": email, "password": "nope-nope-1"})
    # Even the right password is refused while the account is throttled.
    throttled = user_app.post("/api/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert_problem(throttled, 429)


def test_refresh_rotates_and_a_reused_refresh_token_ends_the_session(
    user_app: TestClient, unique_email: Callable[..., str], clock: Clock
) -> None:
    email = unique_email()
    register(user_app, email)
    first = login(user_app, email)
    second = user_app.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]

    clock.advance(11)  # past the grace in which a just-rotated token still answers (10 s)
    replay = user_app.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(replay, 401)
    # Reuse means theft: the rotated token dies with the session.
    assert_problem(user_app.post("/api/v1/auth/refresh", json={"refresh_token": second.json()["refresh_token"]}), 401)
    assert_problem(user_app.get("/api/v1/users/me", headers=bearer(second.json())), 401)


def test_logout_revokes_the_session_and_its_access_tokens(
    user_app: TestClient, unique_email: Callable[..., str]
) -> None:
    email = unique_email()
    register(user_app, email)
    tokens = login(user_app, email)
    assert user_app.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}).status_code == 204

    assert_problem(user_app.get("/api/v1/users/me", headers=bearer(tokens)), 401)
    assert_problem(user_app.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}), 401)


def test_profile_update_and_password_change(user_app: TestClient, unique_email: Callable[..., str]) -> None:
    email = unique_email()
    register(user_app, email)
    tokens = login(user_app, email)
    renamed = user_app.patch("/api/v1/users/me", json={"name": "Asha K"}, headers=bearer(tokens))
    assert renamed.status_code == 200 and renamed.json()["name"] == "Asha K"

    wrong = user_app.patch(
        "/api/v1/users/me", json={"password": "new-secret-99", "current_password": "x"}, headers=bearer(tokens)
    )
    assert_problem(wrong, 422)
    changed = user_app.patch(
        "/api/v1/users/me", json={"password": "new-secret-99", "current_password": PASSWORD}, headers=bearer(tokens)
    )
    assert changed.status_code == 200
    login(user_app, email, "new-secret-99")


def test_a_customer_cannot_read_another_user(user_app: TestClient, unique_email: Callable[..., str]) -> None:
    other = register(user_app, unique_email())
    email = unique_email()
    register(user_app, email)
    tokens = login(user_app, email)
    assert_problem(user_app.get(f"/api/v1/users/{other['id']}", headers=bearer(tokens)), 403)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ('{"email": "a@b.co", "password": ', 400),
        ({"email": "a@b.co", "password": 12345678901, "name": "x"}, 422),
        ({"email": "not-an-email", "password": PASSWORD, "name": "x"}, 422),
        ({"email": "a@b.co", "password": "short1", "name": "x"}, 422),
        ({"email": "a@b.co", "password": PASSWORD, "name": "x" * 101}, 422),
        ({"email": "a@b.co", "password": PASSWORD, "name": "x", "role": "admin"}, 422),
        ({"email": "a@b.co", "password": PASSWORD}, 422),
        ([1, 2, 3], 422),
    ],
)
def test_bad_registrations_get_a_problem_and_write_nothing(user_app: TestClient, body: Any, status: int) -> None:
    if isinstance(body, str):
        answer = user_app.post("/api/v1/auth/register", content=body, headers={"content-type": "application/json"})
    else:
        answer = user_app.post("/api/v1/auth/register", json=body)
    assert_problem(answer, status)
    # Nothing was half-written: the address is still free (each test has a fresh database).
    register(user_app, "a@b.co")


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Basic abc", "Bearer not-a-jwt", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."],
)
def test_bad_tokens_are_refused(user_app: TestClient, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    assert_problem(user_app.get("/api/v1/users/me", headers=headers), 401)


def test_expired_token_is_refused(make_settings: Callable[..., Settings], key_pair: tuple[str, str]) -> None:
    import time

    import jwt

    settings = make_settings()
    app = build_app(settings)
    expired = jwt.encode(
        {"sub": "u1", "role": "customer", "iss": "cloudshop", "aud": "cloudshop", "exp": int(time.time()) - 5},
        key_pair[0],
        algorithm="RS256",
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        body = assert_problem(client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {expired}"}), 401)
    assert "expired" in body["detail"]


def test_oversized_chunked_body_is_refused(user_app: TestClient) -> None:
    def chunks():  # no Content-Length: the body arrives chunked
        for _ in range(100):
            yield b"x" * 2000

    answer = user_app.post("/api/v1/auth/register", content=chunks(), headers={"content-type": "application/json"})
    assert_problem(answer, 413)


def test_a_small_chunked_body_still_goes_through(user_app: TestClient, unique_email: Callable[..., str]) -> None:
    body = json.dumps({"email": unique_email(), "password": PASSWORD, "name": "Chunky"}).encode()

    answer = user_app.post(
        "/api/v1/auth/register", content=iter([body[:10], body[10:]]), headers={"content-type": "application/json"}
    )

    assert answer.status_code == 201, answer.text


def test_oversized_body_is_refused(user_app: TestClient) -> None:
    answer = user_app.post(
        "/api/v1/auth/register", content=b"x" * 200_000, headers={"content-type": "application/json"}
    )
    assert_problem(answer, 413)
