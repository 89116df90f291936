"""Accounts under attack (issue 10): guessing passwords, locking others out, probing for accounts,
and sessions that outlive what they should. Each test names the hole it closes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pytest
from fastapi.testclient import TestClient
from mangum.handlers.api_gateway import HTTPGateway
from starlette.requests import Request

from cloudshop.settings import Settings
from functions.user.api import client_address
from functions.user.bootstrap import build_app, build_service, migrate_schema
from functions.user.model import Limit
from functions.user.repository import MAX_SESSIONS_PER_USER
from tests.helpers import assert_problem
from tests.services.user_fixtures import (
    PASSWORD,
    WRONG,
    Clock,
    CountingHasher,
    as_address,
    bearer,
    login,
    new_address,
    register,
    user_client,
)

LOGIN = "/api/v1/auth/login"
REFRESH = "/api/v1/auth/refresh"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/users/me"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_app(
    make_settings: Callable[..., Settings], tmp_path: Any, clock: Clock
) -> Iterator[Callable[..., TestClient]]:
    """A user app on SQLite and the chosen DynamoDB, with these settings and the test's clock."""
    opened: list[Iterator[TestClient]] = []

    def factory(*, dynamodb: str = "moto", **overrides: Any) -> TestClient:
        settings = make_settings(
            database_url=f"sqlite:///{tmp_path / f'users-{len(opened)}.db'}", dynamodb=dynamodb, **overrides
        )
        migrate_schema(build_service(settings).users.engine)
        clients = user_client(build_app(settings, clock=clock))
        opened.append(clients)
        return next(clients)

    yield factory
    for clients in opened:
        next(clients, None)


def counting(client: TestClient) -> CountingHasher:
    """Count the service's password checks from here on."""
    hasher = CountingHasher()
    client.app.state.users.hasher = hasher  # type: ignore[attr-defined]
    return hasher


def wrong_login(client: TestClient, email: str, **headers: str) -> Any:
    return client.post(LOGIN, json={"email": email, "password": WRONG}, headers=headers)


def assert_throttled(answer: Any) -> int:
    """A 429 problem that says when to come back; the wait in seconds."""
    body = assert_problem(answer, 429)
    retry_after = int(answer.headers["Retry-After"])
    assert retry_after >= 1 and body["retry_after_ms"] > 0
    return retry_after


# --- Guessing --------------------------------------------------------------------------------------


def test_thirty_parallel_wrong_logins_get_at_most_the_allowed_password_checks(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str]
) -> None:
    # Given an account allowed 5 failed guesses, on the DynamoDB that refuses racing conditional writes
    app = make_app(dynamodb="dynalite", login_max_failures=5, login_address_max_failures=100)
    email = unique_email()
    register(app, email)
    hasher = counting(app)
    start = threading.Barrier(30)

    def guess(_: int) -> int:
        start.wait()
        return wrong_login(app, email).status_code

    # When 30 wrong logins arrive at once (each password check takes ~100 ms)
    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(guess, range(30)))

    # Then exactly 5 passwords are checked; the rest are refused before any check
    assert hasher.checks == 5
    assert sorted(statuses) == [401] * 5 + [429] * 25


def test_the_window_slides_so_a_burst_cannot_double_up_at_a_boundary(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str], clock: Clock
) -> None:
    # Given 3 guesses per 10 minutes, all spent in the last second of one fixed bucket
    app = make_app(login_max_failures=3, login_failure_window_seconds=600)
    email = unique_email()
    register(app, email)
    clock.to_bucket_end(600, before=1)
    assert [wrong_login(app, email).status_code for _ in range(3)] == [401] * 3

    # When the bucket rolls over, the guesses of a second ago still count (a fixed window forgot them)
    clock.advance(2)
    wait = assert_throttled(wrong_login(app, email))
    assert wait <= 600
    assert_throttled(app.post(LOGIN, json={"email": email, "password": PASSWORD}))

    # Then they fade as the window slides past them: halfway, one guess more; a window on, all three
    clock.advance(299)
    assert wrong_login(app, email).status_code == 401
    assert_throttled(wrong_login(app, email))
    clock.advance(600)
    assert login(app, email)["access_token"]


def test_one_password_sprayed_over_many_emails_is_stopped_at_the_address(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str]
) -> None:
    # Given 4 failed guesses per address and 50 per account
    app = make_app(login_address_max_failures=4, login_max_failures=50)
    hasher = counting(app)

    # When one address tries one password on ten emails
    answers = [wrong_login(app, unique_email()) for _ in range(10)]

    # Then the address is stopped after four, whatever the email, and checks no more passwords
    assert [a.status_code for a in answers[:4]] == [401] * 4
    for answer in answers[4:]:
        assert_throttled(answer)
    assert hasher.checks == 4
    # while another address is not
    assert wrong_login(app, unique_email(), **as_address(new_address())).status_code == 401


def test_one_address_cannot_lock_anyone_out_of_their_account(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str]
) -> None:
    # Given the per-address brake (3) below the per-account limit (5)
    app = make_app(login_address_max_failures=3, login_max_failures=5)
    email = unique_email()
    register(app, email)

    # When an attacker's address hammers the victim's email
    statuses = [wrong_login(app, email).status_code for _ in range(20)]
    assert statuses == [401] * 3 + [429] * 17

    # Then the victim, from their own address, still logs in
    assert login(app, email, **as_address(new_address()))["access_token"]


def test_password_change_guesses_are_throttled_like_logins(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str]
) -> None:
    # Given a stolen access token, and 3 failed guesses per address
    app = make_app(login_address_max_failures=3, login_max_failures=10)
    email = unique_email()
    register(app, email)
    stolen = bearer(login(app, email))
    hasher = counting(app)

    # When its thief guesses the current password through PATCH /users/me
    answers = [
        app.patch(ME, json={"password": "new-secret-99", "current_password": f"guess-{n}-x"}, headers=stolen)
        for n in range(10)
    ]

    # Then three guesses are checked and the rest refused unchecked
    assert [a.status_code for a in answers[:3]] == [422] * 3
    for answer in answers[3:]:
        assert_throttled(answer)
    assert hasher.checks == 3
    # and the same budget guards the login door: a guess there is a guess too
    assert_throttled(wrong_login(app, email))


# --- Sessions --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dynamodb", ["moto", "dynalite"])
def test_a_password_change_ends_every_other_session(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str], dynamodb: str
) -> None:
    # Given the owner's session and an intruder's, on the same account
    app = make_app(dynamodb=dynamodb)
    email = unique_email()
    register(app, email)
    owner = login(app, email)
    intruder = login(app, email, **as_address(new_address()))

    # When the owner changes the password
    changed = app.patch(ME, json={"password": "new-secret-99", "current_password": PASSWORD}, headers=bearer(owner))
    assert changed.status_code == 200, changed.text

    # Then the intruder can neither refresh nor use their access token; the owner carries on
    assert_problem(app.post(REFRESH, json={"refresh_token": intruder["refresh_token"]}), 401)
    assert_problem(app.get(ME, headers=bearer(intruder)), 401)
    assert app.get(ME, headers=bearer(owner)).status_code == 200
    assert app.post(REFRESH, json={"refresh_token": owner["refresh_token"]}).status_code == 200
    assert login(app, email, "new-secret-99")["access_token"]


def test_a_login_racing_a_password_change_does_not_outlive_it(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str]
) -> None:
    # Given an intruder who knows the old password and logs in just as the owner changes it
    app = make_app()
    email = unique_email()
    user_id = register(app, email)["id"]
    service = app.app.state.users  # type: ignore[attr-defined]

    class ChangeDuringCheck(CountingHasher):
        """The owner's change lands while the intruder's login checks the old password."""

        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            checked = super().verify(hash, password)
            if self.checks == 1:
                service.update_profile(
                    user_id, name=None, password="new-secret-99", current_password=PASSWORD, client="owner"
                )
            return checked

    service.hasher = ChangeDuringCheck()

    # When the intruder's login finishes after the change ended every session
    answer = app.post(LOGIN, json={"email": email, "password": PASSWORD})

    # Then it gets no session
    assert_problem(answer, 401)
    assert login(app, email, "new-secret-99")["access_token"]


def test_a_user_keeps_at_most_100_live_sessions_and_the_oldest_end_first(
    make_settings: Callable[..., Settings], clock: Clock
) -> None:
    sessions = build_service(make_settings(), clock=clock).sessions
    user_id = f"u-{uuid.uuid4().hex}"
    ids = [uuid.uuid4().hex for _ in range(MAX_SESSIONS_PER_USER + 2)]
    for session_id in ids:
        sessions.create(session_id=session_id, user_id=user_id, secret="s", ttl_seconds=300, lifetime_seconds=900)
        clock.advance(1)

    assert [sessions.is_active(sid) for sid in ids[:3]] == [False, False, True]
    assert sessions.revoke_family(user_id) == MAX_SESSIONS_PER_USER
    assert not any(sessions.is_active(sid) for sid in ids)


def test_a_session_ends_at_its_absolute_lifetime_however_often_it_is_refreshed(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str], clock: Clock
) -> None:
    # Given sessions idle for at most 5 minutes and alive for at most 15
    app = make_app(refresh_token_ttl_seconds=300, session_lifetime_seconds=900)
    email = unique_email()
    register(app, email)
    tokens = login(app, email)

    # When the client refreshes every 4 minutes
    for _ in range(3):
        clock.advance(240)
        answer = app.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
        assert answer.status_code == 200, answer.text
        tokens = answer.json()

    # Then the refresh after the 15th minute is refused, although the session was never idle
    clock.advance(240)
    assert_problem(app.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}), 401)


def test_logout_and_refresh_need_the_refresh_secret_not_just_the_session_id(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str]
) -> None:
    # Given a session, whose id every one of its access tokens carries
    app = make_app()
    email = unique_email()
    register(app, email)
    tokens = login(app, email)
    session_id = tokens["refresh_token"].split(".", 1)[0]
    forged = {"refresh_token": f"{session_id}.not-the-secret"}

    # When someone who knows only the id tries to log it out, or to refresh it
    assert_problem(app.post(LOGOUT, json=forged), 401)
    assert_problem(app.post(REFRESH, json=forged), 401)
    assert_problem(app.post(LOGOUT, headers=bearer(tokens)), 422)

    # Then the session is untouched: its access token works and its refresh token rotates
    assert app.get(ME, headers=bearer(tokens)).status_code == 200
    rotated = app.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})
    assert rotated.status_code == 200
    # and its holder logs out with the secret
    assert app.post(LOGOUT, json={"refresh_token": rotated.json()["refresh_token"]}).status_code == 204
    assert_problem(app.get(ME, headers=bearer(rotated.json())), 401)


def test_two_tabs_refreshing_at_once_both_stay_logged_in(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str]
) -> None:
    # Given one session shared by several tabs, on the DynamoDB that refuses racing conditional writes
    app = make_app(dynamodb="dynalite")
    email = unique_email()
    register(app, email)
    tokens = login(app, email)
    start = threading.Barrier(4)

    def refresh(_: int) -> Any:
        start.wait()
        return app.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})

    # When four tabs refresh with the same token at the same moment
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(refresh, range(4)))

    # Then every tab gets the same new refresh token and the session lives on
    assert [a.status_code for a in answers] == [200] * 4, [a.text for a in answers]
    assert len({a.json()["refresh_token"] for a in answers}) == 1
    assert all(app.get(ME, headers=bearer(a.json())).status_code == 200 for a in answers)
    assert app.post(REFRESH, json={"refresh_token": answers[0].json()["refresh_token"]}).status_code == 200


def test_a_tab_that_refreshes_late_within_the_grace_gets_the_same_token(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str], clock: Clock
) -> None:
    app = make_app(refresh_reuse_grace_seconds=10)
    email = unique_email()
    register(app, email)
    tokens = login(app, email)
    first = app.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}).json()

    clock.advance(5)
    second = app.post(REFRESH, json={"refresh_token": tokens["refresh_token"]})

    assert second.status_code == 200 and second.json()["refresh_token"] == first["refresh_token"]
    # Past the grace the old token is a replay: the session ends
    clock.advance(6)
    assert_problem(app.post(REFRESH, json={"refresh_token": tokens["refresh_token"]}), 401)
    assert_problem(app.post(REFRESH, json={"refresh_token": first["refresh_token"]}), 401)


# --- Probing for accounts --------------------------------------------------------------------------


def test_registering_taken_emails_is_throttled_per_address(
    make_app: Callable[..., TestClient], unique_email: Callable[..., str]
) -> None:
    # Given 3 "already exists" answers per address, and an address that registers new accounts freely
    app = make_app(register_address_max_conflicts=3)
    taken = [unique_email() for _ in range(5)]
    for email in taken:
        register(app, email)

    def probe(email: str, **headers: str) -> Any:
        return app.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "name": "P"}, headers=headers
        )

    # When another address probes which emails have accounts
    prober = as_address(new_address())
    answers = [probe(email, **prober) for email in taken]

    # Then it learns three answers, and the rest are refused without saying
    assert [a.status_code for a in answers[:3]] == [409] * 3
    for answer in answers[3:]:
        assert_throttled(answer)
    assert_throttled(probe(unique_email(), **prober))
    # while other addresses are not held back
    assert probe(taken[4]).status_code == 409


# --- Which address ---------------------------------------------------------------------------------


def scope_request(*, peer: str, forwarded: str | None = None) -> Request:
    headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
    return Request({"type": "http", "method": "POST", "path": "/", "headers": headers, "client": (peer, 1)})


def test_lambda_counts_the_source_ip_api_gateway_saw_never_a_forwarded_claim() -> None:
    event = {
        "version": "2.0",
        "routeKey": "POST /api/v1/auth/login",
        "rawPath": "/api/v1/auth/login",
        "rawQueryString": "",
        "headers": {"x-forwarded-for": "198.51.100.1", "host": "api.cloudshop.example"},
        "requestContext": {"http": {"method": "POST", "path": "/api/v1/auth/login", "sourceIp": "203.0.113.7"}},
        "isBase64Encoded": False,
    }
    scope = HTTPGateway(event, {}, {"api_gateway_base_path": "/", "text_mime_types": [], "exclude_headers": []}).scope

    assert client_address(Request(scope)) == "203.0.113.7"


def test_behind_the_local_gateway_the_entry_it_appended_is_counted() -> None:
    # The local gateway appends the peer it saw to what the client sent
    assert client_address(scope_request(peer="127.0.0.1", forwarded="6.6.6.6, 203.0.113.9")) == "203.0.113.9"
    assert client_address(scope_request(peer="127.0.0.1")) == "127.0.0.1"
    # A peer that is not loopback is no proxy of ours: its header is not believed
    assert client_address(scope_request(peer="203.0.113.7", forwarded="6.6.6.6")) == "203.0.113.7"
    # IPv6 counts per /64; an IPv4-mapped address as the IPv4 one
    assert client_address(scope_request(peer="2001:db8:1:2:aaaa::1")) == "2001:db8:1:2::/64"
    assert client_address(scope_request(peer="::ffff:203.0.113.7")) == "203.0.113.7"


# --- The sliding window itself ---------------------------------------------------------------------


def test_the_previous_bucket_counts_by_the_share_of_it_still_in_the_window() -> None:
    limit = Limit("t", max_attempts=10, window_seconds=100)

    assert limit.room(previous=10, now=1000.5) == 0  # just rolled over: all ten still count
    assert limit.room(previous=10, now=1050) == 5
    assert limit.room(previous=10, now=1099.9) == 9
    assert limit.room(previous=0, now=1000) == 10


def test_the_retry_after_is_when_one_more_attempt_fits() -> None:
    limit = Limit("t", max_attempts=10, window_seconds=100)

    # Full previous bucket, nothing yet in this one: one attempt fits once 10% of it has slid out
    wait = limit.retry_after(previous=10, current=0, now=1000)
    assert wait == pytest.approx(10) and limit.room(previous=10, now=1000 + wait) >= 1
    # This bucket full: wait for the next, plus until one of this bucket's ten slides out
    wait = limit.retry_after(previous=0, current=10, now=1050)
    assert wait == pytest.approx(60) and limit.room(previous=10, now=1050 + wait) >= 1
