"""`cloudshop up --profile full` as a user runs it: the tool starts PostgreSQL, Apache Kafka and
dynalite itself, and a purchase goes through them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from kafka import KafkaConsumer

from tests.fixtures.platform import free_base_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres, pytest.mark.kafka]

ADDRESS = {"name": "F", "line1": "1 Road", "city": "Pune", "state": "MH", "postal_code": "411001", "country": "IN"}


def test_the_full_profile_starts_its_own_servers_and_sells(tmp_path: Path) -> None:
    base = free_base_port()
    log = tmp_path / "up.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "DATABASE_URL"}
    with open(log, "w") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cloudshop.cli",
                "up",
                "--profile",
                "full",
                "--state-dir",
                str(tmp_path),
                "--base-port",
                str(base),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while "cloudshop is up" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        text = log.read_text()
        for server in (
            "PostgreSQL ready",
            "Apache Kafka (KRaft) ready",
            "DynamoDB (dynalite) ready",
            "SQS (ElasticMQ) ready",
        ):
            assert server in text

        api = httpx.Client(base_url=f"http://127.0.0.1:{base}/api/v1", timeout=30)
        email = f"full-{uuid.uuid4().hex[:8]}@example.com"
        api.post("/auth/register", json={"email": email, "password": "full-pass-123", "name": "F"})
        login = api.post("/auth/login", json={"email": email, "password": "full-pass-123"}).json()
        buyer = {"Authorization": f"Bearer {login['access_token']}"}
        product = api.get("/products", params={"limit": 1}).json()["items"][0]
        api.put(f"/cart/items/{product['id']}", json={"quantity": 1}, headers=buyer)
        order = api.post(
            "/orders",
            json={"shipping_address": ADDRESS, "payment_method": "pm_card_ok"},
            headers=buyer | {"Idempotency-Key": uuid.uuid4().hex},
        ).json()
        assert order["status"] == "PAID"

        consumer = KafkaConsumer(
            "orders",
            bootstrap_servers=f"127.0.0.1:{base + 9}",
            auto_offset_reset="earliest",
            group_id=f"t-{uuid.uuid4().hex}",
            consumer_timeout_ms=2000,
        )
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while order["id"] not in seen and time.monotonic() < deadline:
            seen |= {json.loads(m.value)["data"]["order_id"] for m in consumer}
        consumer.close()
        assert order["id"] in seen, "the order's events reached the tool's own Kafka broker"
    finally:
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=60) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    assert "stopped." in log.read_text()
