"""Payment service API on the real servers: charges once per order, refunds within the capture,
idempotency keys, who may see and refund what, the `payment.refunded` events on SQS, and the bad input
around them.

Production wiring throughout: DynamoDB on dynalite through the async client, the outbox relay
publishing to an SQS queue on moto (one fresh queue per test). The payment service calls nobody: a
charge is trusted because only the order service's token may ask for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jsonschema
import jwt
import pytest
from fastapi.testclient import TestClient

from cloudshop import aws
from cloudshop.auth import InternalTokens, TokenIssuer
from cloudshop.dynamodb import dynamodb_for
from cloudshop.estate import token_pair
from cloudshop.events import SCHEMA_DIR
from cloudshop.settings import Settings
from eks_services.payment.bootstrap import build_app
from eks_services.payment.model import ChargeRequest, ChargeResult, Payment, ProviderError, RefundResult
from eks_services.payment.provider import SimulatedProvider
from eks_services.payment.repository import DynamoDBPaymentRepository
from tests.conftest import client_for
from tests.helpers import assert_problem
from tests.services.payment_fakes import InMemoryEventPublisher

AMOUNT = 129900


@dataclass(frozen=True)
class Order:
    """An order as the order service sends it to be charged."""

    id: str
    user_id: str
    amount: int = AMOUNT
    currency: str = "INR"


def new_order(*, user_id: str | None = None, amount: int = AMOUNT) -> Order:
    return Order(id=f"ord-{uuid.uuid4().hex}", user_id=user_id or new_user(), amount=amount)


class CountingProvider(SimulatedProvider):
    """The simulated provider, counting what reached it; refunds can be made to fail."""

    def __init__(self, *, slow_charge_seconds: float) -> None:
        super().__init__(slow_charge_seconds=slow_charge_seconds)
        self.charges: list[str] = []
        self.refunds: list[str] = []
        self.refunds_fail = False

    async def charge(self, *, payment_id: str, amount: int, currency: str, payment_method: str) -> ChargeResult:
        self.charges.append(payment_id)
        return await super().charge(
            payment_id=payment_id, amount=amount, currency=currency, payment_method=payment_method
        )

    async def refund(self, *, payment_id: str, refund_id: str, amount: int) -> RefundResult:
        if self.refunds_fail:
            raise ProviderError("simulated refund outage")
        self.refunds.append(refund_id)
        return await super().refund(payment_id=payment_id, refund_id=refund_id, amount=amount)


def eventually(check: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@dataclass
class PaymentQueue:
    """The test's own `payment-events` queue on moto: what the relay published, read as it arrives."""

    sqs: Any
    url: str

    def __post_init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def receive(self) -> list[dict[str, Any]]:
        answer = self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        for message in answer.get("Messages", []):
            self.events.append(json.loads(message["Body"]))
            self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=message["ReceiptHandle"])
        return self.events

    def refunds_of(self, payment_id: str, count: int) -> list[dict[str, Any]]:
        """Wait for `count` distinct `payment.refunded` events of a payment (the relay is at least
        once: duplicates carry the same event id)."""

        def distinct() -> dict[str, dict[str, Any]]:
            return {e["event_id"]: e for e in self.receive() if e["data"]["payment_id"] == payment_id}

        eventually(lambda: len(distinct()) >= count, what=f"{count} refund events")
        time.sleep(0.3)  # and no more than that
        events = sorted(distinct().values(), key=lambda e: e["occurred_at"])
        assert len(events) == count
        return events


@dataclass
class PaymentWorld:
    client: TestClient
    provider: CountingProvider
    settings: Settings
    issuer: TokenIssuer
    service_token: str
    payments: DynamoDBPaymentRepository
    queue: PaymentQueue

    def bearer(self, user_id: str, role: str = "customer") -> dict[str, str]:
        token = self.issuer.access_token(user_id=user_id, role=role, email=f"{user_id}@example.com", session_id="s1")
        return {"Authorization": f"Bearer {token}"}

    @property
    def internal(self) -> dict[str, str]:
        return {"x-service-token": self.service_token}

    def charge(self, order: Order, *, payment_method: str = "pm_card_ok", **overrides: Any) -> Any:
        body = {**charge_body(order, payment_method=payment_method), **overrides}
        return self.client.post("/api/v1/internal/payments", json=body, headers=self.internal)

    def read(self, payment_id: str, *, as_user: str = "admin-1") -> dict[str, Any]:
        role = "admin" if as_user.startswith("admin") else "customer"
        answer = self.client.get(f"/api/v1/payments/{payment_id}", headers=self.bearer(as_user, role))
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def captured_payment(self, *, amount: int = AMOUNT) -> dict[str, Any]:
        answer = self.charge(new_order(amount=amount))
        assert answer.status_code == 201 and answer.json()["status"] == "CAPTURED", answer.text
        return answer.json()  # type: ignore[no-any-return]

    def admin_refund(self, payment_id: str, *, key: str, amount: int | None = None) -> Any:
        body = {} if amount is None else {"amount": amount}
        return self.client.post(
            f"/api/v1/payments/{payment_id}/refunds",
            json=body,
            headers={**self.bearer("admin-1", "admin"), "Idempotency-Key": key},
        )

    def stored(self, payment_id: str) -> Payment:
        return self.client.portal.call(self.payments.require, payment_id)  # type: ignore[union-attr]


def charge_body(order: Order, *, payment_method: str = "pm_card_ok") -> dict[str, Any]:
    return {
        "order_id": order.id,
        "user_id": order.user_id,
        "amount": {"amount": order.amount, "currency": order.currency},
        "payment_method": payment_method,
    }


def new_user() -> str:
    return f"user-{uuid.uuid4().hex[:12]}"


def fresh_queue(settings: Settings) -> PaymentQueue:
    sqs = aws.client("sqs", settings)
    return PaymentQueue(sqs, sqs.create_queue(QueueName=f"payment-events-{uuid.uuid4().hex[:12]}")["QueueUrl"])


@pytest.fixture
def world(
    make_settings: Callable[..., Settings], key_pair: tuple[str, str], internal_secrets: dict[str, str]
) -> Iterator[PaymentWorld]:
    # dynalite, not moto: one-charge-per-order rests on atomic conditional writes, which moto does not
    # guarantee under concurrent requests (DynamoDB and dynalite do).
    settings = make_settings(dynamodb="dynalite", payment_slow_charge_seconds=0.3)
    queue = fresh_queue(settings)
    settings.payment_events_queue_url = queue.url
    provider = CountingProvider(slow_charge_seconds=settings.payment_slow_charge_seconds)
    payments = DynamoDBPaymentRepository(dynamodb_for(settings), table=settings.payments_table)
    app = build_app(settings, provider=provider, payments=payments)
    issuer = TokenIssuer(key_pair[0], issuer=settings.jwt_issuer, access_ttl_seconds=900)
    token = InternalTokens(internal_secrets, service="order").token("payment")
    for client in client_for(app):
        yield PaymentWorld(client, provider, settings, issuer, token, payments, queue)


# --- charges ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("token", "status", "decline_code", "failure_reason"),
    [
        ("pm_card_ok", "CAPTURED", None, None),
        ("pm_card_slow", "CAPTURED", None, None),
        ("pm_card_declined", "DECLINED", "card_declined", None),
        ("pm_card_insufficient_funds", "DECLINED", "insufficient_funds", None),
        ("pm_card_error", "FAILED", None, "provider_error"),
    ],
)
def test_each_test_token_settles_the_charge_as_the_simulated_provider_says(
    world: PaymentWorld, token: str, status: str, decline_code: str | None, failure_reason: str | None
) -> None:
    order = new_order()
    answer = world.charge(order, payment_method=token)

    assert answer.status_code == 201, answer.text
    payment = answer.json()
    assert (payment["status"], payment["decline_code"], payment["failure_reason"]) == (
        status,
        decline_code,
        failure_reason,
    )
    assert payment["order_id"] == order.id and payment["user_id"] == order.user_id
    assert payment["amount"] == {"amount": AMOUNT, "currency": "INR"}
    assert payment["refunded"] == {"amount": 0, "currency": "INR"} and payment["refunds"] == []
    assert payment["id"].startswith("pay_") and payment["payment_method"] == token


def test_a_repeat_charge_answers_the_first_one_without_charging_again(world: PaymentWorld) -> None:
    order = new_order()
    first = world.charge(order)
    again = world.charge(order)

    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    assert world.provider.charges.count(first.json()["id"]) == 1


def test_five_concurrent_identical_charges_make_one_charge_and_one_answer(world: PaymentWorld) -> None:
    order = new_order()
    with ThreadPoolExecutor(max_workers=5) as pool:
        answers = list(pool.map(lambda _: world.charge(order, payment_method="pm_card_slow"), range(5)))

    assert sorted(a.status_code for a in answers) == [200, 200, 200, 200, 201]
    bodies = [a.json() for a in answers]
    assert all(body == bodies[0] for body in bodies) and bodies[0]["status"] == "CAPTURED"
    assert world.provider.charges.count(bodies[0]["id"]) == 1
    records = world.client.portal.call(world.payments.for_order, order.id)  # type: ignore[union-attr]
    assert [p.id for p in records] == [bodies[0]["id"]]


def test_the_same_order_with_another_amount_is_a_conflict(world: PaymentWorld) -> None:
    order = new_order()
    assert world.charge(order).status_code == 201
    assert_problem(world.charge(order, amount={"amount": AMOUNT + 1, "currency": "INR"}), 409)
    assert_problem(world.charge(order, payment_method="pm_card_declined"), 409)


@pytest.mark.parametrize("caller", ["product", "notification", "user", "payment"])
def test_only_the_order_service_may_charge_or_refund_by_order(
    world: PaymentWorld, caller: str, internal_secrets: dict[str, str]
) -> None:
    # Given a token of another service, signed even with the one secret the payment service holds
    signed = {token_pair(caller, "payment"): internal_secrets[token_pair("order", "payment")]}
    other = {"x-service-token": InternalTokens(signed, service=caller).token("payment")}
    payment = world.captured_payment(amount=1000)

    charge = world.client.post("/api/v1/internal/payments", json=charge_body(new_order()), headers=other)
    refund = world.client.post(
        f"/api/v1/internal/payments/{payment['id']}/refunds", json={"idempotency_key": "k"}, headers=other
    )

    assert_problem(charge, 403)
    assert_problem(refund, 403)
    assert world.provider.charges == [payment["id"]] and world.provider.refunds == []


def test_no_secret_but_the_order_payment_pair_and_no_long_lived_token_opens_a_payment_route(
    world: PaymentWorld, internal_secrets: dict[str, str]
) -> None:
    # Given what the internet-facing product Lambda holds: the secret the order service signs its
    # calls to it with. A token in the order service's name for the payment service, signed with it,
    now = int(time.time())
    claims = {"sub": "order", "aud": "payment", "iat": now, "exp": now + 60}
    as_order = jwt.encode(claims, internal_secrets[token_pair("order", "product")], algorithm="HS256")
    # tokens signed with the right secret but without an expiry, or living a day,
    right = internal_secrets[token_pair("order", "payment")]
    without_expiry = jwt.encode({k: v for k, v in claims.items() if k != "exp"}, right, algorithm="HS256")
    for_a_day = jwt.encode({**claims, "exp": now + 86400}, right, algorithm="HS256")
    # and the order service's own token for another callee
    for_product = InternalTokens(internal_secrets, service="order").token("product")
    payment = world.captured_payment(amount=1000)

    answers = [
        world.client.post(
            f"/api/v1/internal/payments/{payment['id']}/refunds",
            json={"idempotency_key": "k"},
            headers={"x-service-token": token},
        )
        for token in (as_order, without_expiry, for_a_day, for_product)
    ]

    for answer in answers:
        assert_problem(answer, 401)
    assert world.provider.refunds == []


def test_a_charge_is_taken_as_the_order_service_sends_it_without_asking_it_back(world: PaymentWorld) -> None:
    # No order service exists in this world: the charge needs nothing from it (issue 9's cycle).
    order = new_order(amount=4321)
    answer = world.charge(order)
    assert answer.status_code == 201 and answer.json()["amount"] == {"amount": 4321, "currency": "INR"}


def test_a_charge_abandoned_by_a_dead_process_is_completed_by_the_repeat(world: PaymentWorld) -> None:
    # Given a PENDING claim whose lease ran out (its process died between claim and settle)
    order = new_order()
    request = ChargeRequest(
        order_id=order.id, user_id=order.user_id, amount=order.amount, currency="INR", payment_method="pm_card_ok"
    )
    stale = Payment.claim(request, now=datetime.now(UTC) - timedelta(minutes=5), lease_seconds=60)
    assert world.client.portal.call(world.payments.claim, stale)  # type: ignore[union-attr]

    answer = world.charge(order)

    assert answer.status_code == 200 and answer.json()["status"] == "CAPTURED"
    assert answer.json()["id"] == stale.id


def test_a_charge_still_in_progress_is_a_clear_conflict(
    make_settings: Callable[..., Settings], internal_secrets: dict[str, str]
) -> None:
    settings = make_settings()
    payments = DynamoDBPaymentRepository(dynamodb_for(settings), table=settings.payments_table)
    tokens = InternalTokens(internal_secrets, service="order")
    order = new_order()
    request = ChargeRequest(
        order_id=order.id, user_id=order.user_id, amount=order.amount, currency="INR", payment_method="pm_card_ok"
    )
    app = build_app(settings, payments=payments, publisher=InMemoryEventPublisher(), pending_wait_seconds=0.2)
    for client in client_for(app):
        claimed = Payment.claim(request, now=datetime.now(UTC), lease_seconds=60)
        assert client.portal.call(payments.claim, claimed)  # type: ignore[union-attr]
        answer = client.post(
            "/api/v1/internal/payments", json=charge_body(order), headers={"x-service-token": tokens.token("payment")}
        )
        assert assert_problem(answer, 409)["type"].endswith("/payment-in-progress")


# --- payment methods -----------------------------------------------------------------------------------
def test_known_payment_methods_verify(world: PaymentWorld) -> None:
    answer = world.client.post(
        "/api/v1/internal/payment-methods/verify", json={"payment_method": "pm_card_ok"}, headers=world.internal
    )
    assert answer.status_code == 200 and answer.json() == {"payment_method": "pm_card_ok", "valid": True}


@pytest.mark.parametrize("token", ["pm_card_stolen", "4242424242424242", "pm_card ok", ""])
def test_unknown_payment_methods_are_refused_before_anything_is_charged(world: PaymentWorld, token: str) -> None:
    verify = world.client.post(
        "/api/v1/internal/payment-methods/verify", json={"payment_method": token}, headers=world.internal
    )
    assert_problem(verify, 422)
    order = new_order()
    assert_problem(world.charge(order, payment_method=token), 422)
    assert world.provider.charges == []


# --- reading payments ----------------------------------------------------------------------------------
def test_owner_and_admin_read_a_payment_and_nobody_else_can_tell_it_exists(world: PaymentWorld) -> None:
    payment = world.captured_payment()
    url = f"/api/v1/payments/{payment['id']}"

    own = world.client.get(url, headers=world.bearer(payment["user_id"]))
    assert own.status_code == 200 and own.json() == payment
    assert world.client.get(url, headers=world.bearer("admin-1", "admin")).status_code == 200
    stranger = assert_problem(world.client.get(url, headers=world.bearer(new_user())), 404)
    missing = assert_problem(world.client.get("/api/v1/payments/pay_nope", headers=world.bearer("u")), 404)
    assert stranger["detail"] == missing["detail"]
    assert_problem(world.client.get(url), 401)


def test_internal_endpoints_need_a_service_token_not_an_access_token(world: PaymentWorld) -> None:
    body = charge_body(new_order())
    assert_problem(world.client.post("/api/v1/internal/payments", json=body), 401)
    as_admin = world.client.post(
        "/api/v1/internal/payments",
        json=body,
        headers={**world.bearer("admin-1", "admin"), "x-service-token": "forged"},
    )
    assert_problem(as_admin, 401)
    assert world.provider.charges == []


# --- refunds -------------------------------------------------------------------------------------------
def test_partial_then_full_refund_each_announced_on_the_payment_events_queue(world: PaymentWorld) -> None:
    payment = world.captured_payment(amount=1000)

    partial = world.admin_refund(payment["id"], key="r1", amount=400)
    assert partial.status_code == 201 and partial.json()["amount"] == {"amount": 400, "currency": "INR"}
    rest = world.admin_refund(payment["id"], key="r2")
    assert rest.status_code == 201 and rest.json()["amount"]["amount"] == 600

    after = world.read(payment["id"])
    assert after["status"] == "REFUNDED" and after["refunded"]["amount"] == 1000
    assert [r["id"] for r in after["refunds"]] == [partial.json()["id"], rest.json()["id"]]
    first, second = world.queue.refunds_of(payment["id"], 2)
    schema = json.loads((SCHEMA_DIR / "payment_refunded.v1.schema.json").read_text())
    for event in (first, second):
        jsonschema.validate(event, schema)
        assert (event["event_type"], event["version"], event["source"]) == ("payment.refunded", 1, "payment-service")
    money = lambda amount: {"amount": amount, "currency": "INR"}  # noqa: E731
    assert first["data"] == {
        "payment_id": payment["id"],
        "order_id": payment["order_id"],
        "user_id": payment["user_id"],
        "amount": money(400),
        "refunded_total": money(400),
        "captured": money(1000),
        "fully_refunded": False,
    }
    assert (second["data"]["amount"], second["data"]["refunded_total"]) == (money(600), money(1000))
    assert second["data"]["fully_refunded"] is True


def test_a_partial_refund_leaves_the_payment_partially_refunded(world: PaymentWorld) -> None:
    payment = world.captured_payment(amount=1000)
    world.admin_refund(payment["id"], key="r1", amount=1)
    after = world.read(payment["id"], as_user=payment["user_id"])
    assert after["status"] == "PARTIALLY_REFUNDED" and after["refunded"]["amount"] == 1


def test_a_refund_never_exceeds_what_was_captured(world: PaymentWorld) -> None:
    payment = world.captured_payment(amount=1000)
    assert world.admin_refund(payment["id"], key="r1", amount=700).status_code == 201
    body = assert_problem(world.admin_refund(payment["id"], key="r2", amount=301), 409)
    assert body["refundable"] == {"amount": 300, "currency": "INR"}
    assert world.admin_refund(payment["id"], key="r3", amount=300).status_code == 201
    assert_problem(world.admin_refund(payment["id"], key="r4"), 409)


def test_concurrent_refunds_together_never_exceed_the_capture(world: PaymentWorld) -> None:
    payment = world.captured_payment(amount=1000)
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(lambda i: world.admin_refund(payment["id"], key=f"r{i}", amount=300), range(6)))

    assert sorted(a.status_code for a in answers) == [201, 201, 201, 409, 409, 409]
    after = world.read(payment["id"])
    assert after["refunded"]["amount"] == 900 and len(after["refunds"]) == 3
    assert after["status"] == "PARTIALLY_REFUNDED"
    events = world.queue.refunds_of(payment["id"], 3)
    assert sorted(e["data"]["refunded_total"]["amount"] for e in events) == [300, 600, 900]
    assert not any(e["data"]["fully_refunded"] for e in events)


def test_same_key_and_body_replays_the_refund_and_another_body_is_refused(world: PaymentWorld) -> None:
    payment = world.captured_payment(amount=1000)
    first = world.admin_refund(payment["id"], key="refund-once", amount=250)
    replay = world.admin_refund(payment["id"], key="refund-once", amount=250)

    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json() == first.json() and replay.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert world.provider.refunds == [first.json()["id"]]
    assert_problem(world.admin_refund(payment["id"], key="refund-once", amount=300), 422)
    assert_problem(world.admin_refund(payment["id"], key="refund-once"), 422)
    assert len(world.queue.refunds_of(payment["id"], 1)) == 1


def test_replaying_a_full_refund_still_answers_the_first_response(world: PaymentWorld) -> None:
    payment = world.captured_payment(amount=1000)
    first = world.admin_refund(payment["id"], key="all")
    replay = world.admin_refund(payment["id"], key="all")
    assert (first.status_code, replay.status_code) == (201, 201) and replay.json() == first.json()


def test_the_refund_stands_while_the_queue_is_down_and_its_event_follows_once_it_is_back(
    make_settings: Callable[..., Settings], key_pair: tuple[str, str], internal_secrets: dict[str, str]
) -> None:
    settings = make_settings(dynamodb="dynalite", outbox_relay_interval_seconds=0.05)
    publisher = InMemoryEventPublisher(failing=True)
    issuer = TokenIssuer(key_pair[0], issuer=settings.jwt_issuer, access_ttl_seconds=900)
    admin = {
        "Authorization": f"Bearer {issuer.access_token(user_id='a', role='admin', email='a@x.io', session_id='s')}"
    }
    order = new_order(amount=1000)
    for client in client_for(build_app(settings, publisher=publisher)):
        internal = {"x-service-token": InternalTokens(internal_secrets, service="order").token("payment")}
        payment = client.post("/api/v1/internal/payments", json=charge_body(order), headers=internal).json()

        refund = client.post(
            f"/api/v1/payments/{payment['id']}/refunds", json={}, headers=admin | {"Idempotency-Key": "r1"}
        )
        assert refund.status_code == 201
        assert client.get(f"/api/v1/payments/{payment['id']}", headers=admin).json()["status"] == "REFUNDED"
        time.sleep(0.3)  # a few failing relay rounds
        assert publisher.published == []

        publisher.failing = False

        # The table is shared with other tests, whose leftover events this relay may publish too.
        def ours() -> list[dict[str, Any]]:
            return [e for e in publisher.bodies() if e["data"]["payment_id"] == payment["id"]]

        eventually(lambda: bool(ours()), what="the event after the outage")
        (event,) = {e["event_id"]: e for e in ours()}.values()
        assert event["data"]["fully_refunded"] is True


def test_a_refund_the_provider_refuses_is_taken_back(world: PaymentWorld) -> None:
    payment = world.captured_payment(amount=1000)
    world.provider.refunds_fail = True
    assert_problem(world.admin_refund(payment["id"], key="r1", amount=100), 503)

    after = world.read(payment["id"])
    assert after["status"] == "CAPTURED" and after["refunded"]["amount"] == 0 and after["refunds"] == []
    world.provider.refunds_fail = False
    assert world.admin_refund(payment["id"], key="r1", amount=100).status_code == 201
    # Only the refund that happened was announced.
    (event,) = world.queue.refunds_of(payment["id"], 1)
    assert event["data"]["amount"]["amount"] == 100


def test_internal_refund_by_idempotency_key_for_order_cancel(world: PaymentWorld) -> None:
    payment = world.captured_payment(amount=1000)
    url = f"/api/v1/internal/payments/{payment['id']}/refunds"
    body = {"idempotency_key": f"cancel-{payment['order_id']}"}
    first = world.client.post(url, json=body, headers=world.internal)
    again = world.client.post(url, json=body, headers=world.internal)

    assert first.status_code == 201 and first.json()["amount"]["amount"] == 1000
    assert again.status_code == 201 and again.json() == first.json()
    # Announced like every refund, once: the order service reads its own cancel back as a no-op.
    (event,) = world.queue.refunds_of(payment["id"], 1)
    assert event["data"]["fully_refunded"] is True


@pytest.mark.parametrize("token", ["pm_card_declined", "pm_card_error"])
def test_a_payment_that_took_no_money_cannot_be_refunded(world: PaymentWorld, token: str) -> None:
    order = new_order()
    payment = world.charge(order, payment_method=token).json()
    assert_problem(world.admin_refund(payment["id"], key="r1"), 409)


def test_customers_cannot_refund_even_their_own_payment(world: PaymentWorld) -> None:
    payment = world.captured_payment()
    answer = world.client.post(
        f"/api/v1/payments/{payment['id']}/refunds",
        json={},
        headers={**world.bearer(payment["user_id"]), "Idempotency-Key": "k"},
    )
    assert_problem(answer, 403)
    assert world.provider.refunds == []


def test_refunding_an_unknown_payment_is_not_found(world: PaymentWorld) -> None:
    assert_problem(world.admin_refund("pay_unknown", key="k"), 404)


@pytest.mark.parametrize(
    ("body", "headers", "status"),
    [
        ({}, {}, 422),  # no Idempotency-Key
        ({"amount": 0}, {"Idempotency-Key": "k"}, 422),
        ({"amount": -5}, {"Idempotency-Key": "k"}, 422),
        ({"amount": "100"}, {"Idempotency-Key": "k"}, 422),
        ({"amount": 1.5}, {"Idempotency-Key": "k"}, 422),
        ({"amount": 10, "currency": "USD"}, {"Idempotency-Key": "k"}, 422),
        ({}, {"Idempotency-Key": "k" * 256}, 422),
        ('{"amount": ', {"Idempotency-Key": "k"}, 400),
    ],
)
def test_bad_refund_requests_get_a_problem_and_refund_nothing(
    world: PaymentWorld, body: Any, headers: dict[str, str], status: int
) -> None:
    payment = world.captured_payment()
    headers = {**world.bearer("admin-1", "admin"), **headers}
    url = f"/api/v1/payments/{payment['id']}/refunds"
    if isinstance(body, str):
        answer = world.client.post(url, content=body, headers={**headers, "content-type": "application/json"})
    else:
        answer = world.client.post(url, json=body, headers=headers)
    assert_problem(answer, status)
    assert world.provider.refunds == []


@pytest.mark.parametrize(
    "change",
    [
        {"amount": {"amount": 0, "currency": "INR"}},
        {"amount": {"amount": "129900", "currency": "INR"}},
        {"amount": {"amount": AMOUNT, "currency": "inr"}},
        {"amount": AMOUNT},
        {"order_id": "../orders/x"},
        {"order_id": ""},
        {"payment_method": "4111 1111 1111 1111"},
        {"card_number": "4111111111111111"},
    ],
)
def test_bad_charges_get_a_problem_and_charge_nothing(world: PaymentWorld, change: dict[str, Any]) -> None:
    order = new_order()
    assert_problem(world.charge(order, **change), 422)
    assert world.provider.charges == []


def test_readiness_and_metrics(world: PaymentWorld) -> None:
    world.captured_payment()
    ready = world.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == ["payments"]
    metrics = world.client.get("/metrics").text
    assert 'payment_charges_total{status="CAPTURED"}' in metrics
