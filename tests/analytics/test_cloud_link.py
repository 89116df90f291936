"""Rehearsal of the link between the clouds: the Dataproc job, as Terraform starts it, over SCRAM/TLS.

The local Kafka broker gets a second listener configured as MSK's public endpoint is
(`cloudshop.local.servers.ScramListener`: SASL_SSL, SCRAM-SHA-512 users, ACLs enforced with
`allow.everyone.if.no.acl.found=false`), and its ACLs are set by the code the `Custom::KafkaAcls`
resource runs on MSK (`cloudshop.kafka_acls`, from `cloudshop.estate.SCRAM_CLIENTS`), through the
PLAINTEXT listener, which stands in for MSK's IAM listener: the AWS side (the order relay, the windows
consumer) uses it, as on AWS they use IAM.

The job's command line is the module's own `job_args` (`analytics/terraform/modules/dataproc-analytics`),
evaluated with python-hcl2 (`tests.analytics.terraform`) as the example calls the module, from the
example's variables and `terraform.tfvars.example`, with `msk_scram_bootstrap_servers` set to the local
SCRAM listener (what an operator pastes from the CDK output). What this test then changes in that
command line, and only that, because nothing on this machine is Google Cloud:

- the two Secret Manager version names (`projects/<p>/secrets/<id>/versions/latest`) become
  `file://<dir>/<id>`, files holding what the secrets would hold;
- `gs://<bucket>/...` (checkpoint, Parquet) becomes a local directory of the same layout;
- the `bigquery` sink and its `--bigquery-table` are left out (no BigQuery here; the table's schema
  is checked against the job in test_terraform.py);
- `KAFKA_SSL_TRUSTSTORE` names the local CA (MSK's certificates are trusted by the JVM's default
  store; the local broker's CA is not). It is an environment variable, not an argument.

The windows consumer (`analytics.results_consumer`, the code of the Lambda on `analytics-results`)
runs against the broker's PLAINTEXT listener and the moto server, and the order service's
`GET /api/v1/analytics/windows` answers what it stored.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from fastapi.testclient import TestClient

from analytics.eventgen import EventGenerator, order_event, to_line
from analytics.results_consumer import ConsumerStats, DeadLetters, WindowsConsumer, consume, kafka_consumer
from analytics.windows import WindowStore, window_key
from cloudshop.estate import ESTATE
from cloudshop.kafka_acls import admin_client, apply_acls, bindings_for, principal_of
from cloudshop.local.servers import SCRAM_MECHANISM, KafkaServer, ScramListener
from tests.analytics.helpers import dumps, reference_stream
from tests.analytics.terraform import module_locals

pytestmark = [pytest.mark.spark, pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "analytics" / "terraform" / "examples" / "basic"
(CLIENT,) = ESTATE.scram_clients
T0 = datetime(2025, 1, 1, 10, 0, tzinfo=UTC)
WATERMARK = timedelta(minutes=2)
SECRET_VERSION = re.compile(r"^projects/[^/]+/secrets/([^/]+)/versions/[^/]+$")


# --- the broker and the job's command line -------------------------------------------------------------


@pytest.fixture(scope="module")
def password() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture(scope="module")
def link_broker(tmp_path_factory: pytest.TempPathFactory, password: str) -> Iterator[KafkaServer]:
    broker = KafkaServer(tmp_path_factory.mktemp("kafka-scram"), scram=ScramListener(users={CLIENT.name: password}))
    broker.start()
    try:
        for topic in ESTATE.topics:
            broker.create_topics([topic.name], partitions=topic.partitions)
        admin = admin_client(broker.bootstrap_servers)
        try:
            apply_acls(admin, bindings_for(CLIENT), principal=principal_of(CLIENT))
        finally:
            admin.close()
        yield broker
    finally:
        broker.stop()


def job_args(bootstrap_servers: str) -> list[str]:
    """The Dataproc job's arguments as the module makes them for the example's second apply."""
    return list(
        module_locals(EXAMPLE, variables={"msk_scram_bootstrap_servers": bootstrap_servers}, names=("job_args",))[
            "job_args"
        ]
    )


def localize(args: list[str], *, secrets_dir: Path, storage: Path) -> tuple[list[str], list[str]]:
    """The substitutions of the module docstring; returns the command line and what was changed."""
    changed: list[str] = []
    out: list[str] = []
    pending = list(args)
    while pending:
        arg = pending.pop(0)
        if arg == "--sink" and pending[0] == "bigquery":
            changed.append(f"--sink {pending.pop(0)}")
            continue
        if arg == "--bigquery-table":
            changed.append(f"--bigquery-table {pending.pop(0)}")
            continue
        secret = SECRET_VERSION.match(arg)
        if secret:
            changed.append(arg)
            arg = (secrets_dir / secret.group(1)).as_uri()
        elif arg.startswith("gs://"):
            changed.append(arg)
            arg = (storage / arg.removeprefix("gs://")).as_uri()
        out.append(arg)
    return out, changed


def write_secrets(directory: Path, args: list[str], *, username: str, password: str) -> None:
    """What the two Secret Manager secrets hold once the operator copied them from AWS."""
    directory.mkdir(parents=True, exist_ok=True)
    for flag, value in (("--kafka-username-secret", username), ("--kafka-password-secret", password)):
        match = SECRET_VERSION.match(args[args.index(flag) + 1])
        assert match, args
        (directory / match.group(1)).write_text(value)


class Job:
    """`python -m analytics.job <args>` as a process, stopped as Dataproc stops it (SIGTERM)."""

    def __init__(self, args: list[str], *, ca_file: Path, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "AWS_ENDPOINT"))}
        env.update(SPARK_LOCAL_IP="127.0.0.1", KAFKA_SSL_TRUSTSTORE=str(ca_file), PYTHONUNBUFFERED="1")
        self.log = log
        self._out = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "analytics.job", *args],
            cwd=REPO,
            env=env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self, timeout: float = 90) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.close()

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.close()

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# --- the AWS side: events in, the windows consumer, the API ----------------------------------------------


def paid(event_id: str, seconds: float, *, user: str) -> dict[str, Any]:
    return order_event(
        event_id=event_id,
        event_type="order.paid",
        occurred_at=T0 + timedelta(seconds=seconds),
        order_id=f"o-{event_id}",
        user_id=user,
    )


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for event in events:
            producer.send(topic, key=event["data"]["order_id"].encode(), value=to_line(event).encode())
        producer.flush(timeout=30)
    finally:
        producer.close()


class CountingS3:
    """The consumer's S3 client, counting PutObject per key: a window is to be written once."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.puts: dict[str, int] = {}
        self._lock = threading.Lock()

    def put_object(self, **kwargs: Any) -> Any:
        with self._lock:
            self.puts[kwargs["Key"]] = self.puts.get(kwargs["Key"], 0) + 1
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class RunningConsumer:
    def __init__(self, consumer: WindowsConsumer, kafka: Any) -> None:
        self.consumer, self.kafka = consumer, kafka
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=consume, args=(consumer, kafka, self.stop_event), kwargs={"poll_ms": 200})
        self.thread.start()

    @property
    def stats(self) -> ConsumerStats:
        return self.consumer.stats

    def wait_for(self, condition: Callable[[ConsumerStats], bool], *, job: Job, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.stats):
            assert job.process.poll() is None, f"the job ended early:\n{job.output()[-6000:]}"
            assert time.monotonic() < deadline, f"consumer stats {self.stats.as_dict()}\n{job.output()[-6000:]}"
            time.sleep(0.5)

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        self.kafka.close()


@pytest.fixture
def order_api(make_settings: Callable[..., Any], key_pair: tuple[str, str]) -> Iterator[tuple[TestClient, Any]]:
    from cloudshop.auth import TokenIssuer
    from eks_services.order.bootstrap import app_for, build_runtime
    from tests.conftest import client_for
    from tests.services.order_fakes import (
        InMemoryCatalog,
        InMemoryEventPublisher,
        InMemoryInvoices,
        InMemoryPaymentEventSource,
        InMemoryPayments,
    )

    settings = make_settings(
        prefix="link-",
        outbox_relay_enabled=False,
        abandoned_order_sweeper_enabled=False,
        payment_events_consumer_enabled=False,
    )
    runtime = build_runtime(
        settings,
        catalog=InMemoryCatalog({}),
        payments=InMemoryPayments(),
        invoices=InMemoryInvoices(),
        publisher=InMemoryEventPublisher(),
        payment_events=InMemoryPaymentEventSource(),
    )
    token = TokenIssuer(key_pair[0], issuer="cloudshop", access_ttl_seconds=600).access_token(
        user_id="u-admin", role="admin", email="admin@example.com", session_id="s"
    )
    for client in client_for(app_for(runtime)):
        client.headers["Authorization"] = f"Bearer {token}"
        yield client, settings


# --- the rehearsal -------------------------------------------------------------------------------------------


def test_the_module_gives_the_job_scram_over_tls_and_secret_names_only(link_broker):
    args = job_args(link_broker.scram_bootstrap_servers)
    flags = dict(zip(args[::2], args[1::2], strict=False))
    assert flags["--kafka-security-protocol"] == "SASL_SSL"
    assert flags["--kafka-sasl-mechanism"] == SCRAM_MECHANISM
    assert flags["--kafka-bootstrap-servers"] == link_broker.scram_bootstrap_servers
    assert SECRET_VERSION.match(flags["--kafka-password-secret"])
    # The topics the job uses are those the ACLs open to it.
    assert [flags["--orders-topic"]] == list(CLIENT.read_topics)
    assert [flags["--results-topic"]] == list(CLIENT.write_topics)


def test_the_scram_user_reaches_only_what_its_acls_allow(link_broker, password):
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.errors import TopicAuthorizationFailedError

    scram = {
        "bootstrap_servers": link_broker.scram_bootstrap_servers,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": CLIENT.name,
        "sasl_plain_password": password,
        "ssl_cafile": str(link_broker.ca_file),
    }
    producer = KafkaProducer(**scram)
    try:
        producer.send("analytics-results", b"{}").get(timeout=30)  # allowed: it writes the results
        with pytest.raises(TopicAuthorizationFailedError):
            producer.send("orders", b"{}").get(timeout=30)  # never the order events
    finally:
        producer.close()
    consumer = KafkaConsumer(
        "analytics-results", group_id=f"{CLIENT.group_prefix}-probe", consumer_timeout_ms=3000, **scram
    )
    try:
        with pytest.raises(TopicAuthorizationFailedError):
            list(consumer)  # nor read the results back
    finally:
        consumer.close()


def test_the_dataproc_job_over_scram_feeds_the_windows_api_once_per_window(
    link_broker, password, order_api, moto_server, tmp_path
):
    client, settings = order_api
    bootstrap = link_broker.bootstrap_servers  # the AWS side: IAM on MSK, PLAINTEXT here
    original = job_args(link_broker.scram_bootstrap_servers)
    args, changed = localize(original, secrets_dir=tmp_path / "secrets", storage=tmp_path / "gcs")
    # Exactly the substitutions the module docstring lists, nothing more.
    assert sorted(changed) == sorted(
        [
            *(arg for arg in original if SECRET_VERSION.match(arg) or arg.startswith("gs://")),
            "--sink bigquery",
            f"--bigquery-table {original[original.index('--bigquery-table') + 1]}",
        ]
    )
    write_secrets(tmp_path / "secrets", job_args("x:1"), username=CLIENT.name, password=password)

    # Given three minutes of sales (duplicates included) and a sale at 10:10 on `orders`
    history = list(EventGenerator(seed=5, users=4, duplicate_rate=0.3, mean_gap_seconds=5).events(40))
    first = [e for e in history if e["occurred_at"] < "2025-01-01T10:03"] + [paid("closing", 600, user="closer")]
    produce(bootstrap, "orders", first)
    # and the windows consumer on `analytics-results`, with a malformed record ahead of the windows
    produce_raw(bootstrap, "analytics-results", b"{not a window")
    s3 = CountingS3(boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1"))
    bucket = settings.analytics_results_bucket
    consumer = RunningConsumer(
        WindowsConsumer(WindowStore(s3, bucket), DeadLetters(s3, bucket)), kafka_consumer(bootstrap)
    )
    try:
        # When the job runs with the module's arguments until the closed windows are stored
        expected_first, _ = reference_stream([first], watermark=WATERMARK)
        job = Job(args, ca_file=link_broker.ca_file, log=tmp_path / "job-1.log")
        try:
            consumer.wait_for(lambda s: s["written"] >= len(expected_first), job=job, timeout=180)
            time.sleep(2)  # let the query commit the batch that emitted them
        finally:
            assert job.stop() == 0, job.output()[-6000:]
        # and is restarted from its checkpoint after losing the commit of that batch (a crash between
        # the sinks and the commit), with later sales waiting on the topic
        commits = checkpoint_dir(args) / "commits"
        last = max((path for path in commits.iterdir() if path.name.isdigit()), key=lambda path: int(path.name))
        last.unlink()
        last.with_name(f".{last.name}.crc").unlink(missing_ok=True)
        second = [paid("fresh", 660, user="fresh"), paid("closing-2", 1200, user="closer")]
        produce(bootstrap, "orders", second)
        expected, _ = reference_stream([first, second], watermark=WATERMARK)
        job = Job(args, ca_file=link_broker.ca_file, log=tmp_path / "job-2.log")
        try:
            consumer.wait_for(lambda s: s["written"] >= len(expected), job=job, timeout=180)
        finally:
            assert job.stop() == 0, job.output()[-6000:]
    finally:
        consumer.stop()

    # Then every window was written to S3 exactly once, the replayed batch's copies counted as duplicates
    windows = {window_key(w["window_start"]) for w in expected}
    assert {key: n for key, n in s3.puts.items() if key.startswith("windows/")} == dict.fromkeys(windows, 1)
    assert consumer.stats["duplicate"] >= len(expected_first), consumer.stats.as_dict()
    # and the malformed record is a dead letter, counted, and did not hold anything up
    letters = s3.list_objects_v2(Bucket=bucket, Prefix="dead-letters/analytics-results/")["Contents"]
    values = [json.loads(s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read())["value"] for item in letters]
    assert base64.b64encode(b"{not a window").decode() in values
    assert consumer.stats["dead_letter"] == len(letters)
    # and GET /analytics/windows answers the windows, newest first, as the reference computes them
    answer = client.get("/api/v1/analytics/windows", params={"limit": 100})
    assert answer.status_code == 200, answer.text
    assert answer.json()["items"] == list(reversed(expected)), dumps(
        {"api": answer.json()["items"], "expected": expected}
    )


def test_wrong_scram_credentials_stop_the_job_with_a_clear_error(link_broker, tmp_path):
    args, _ = localize(
        job_args(link_broker.scram_bootstrap_servers), secrets_dir=tmp_path / "secrets", storage=tmp_path / "gcs"
    )
    write_secrets(tmp_path / "secrets", job_args("x:1"), username=CLIENT.name, password="not-the-password")

    job = Job(args, ca_file=link_broker.ca_file, log=tmp_path / "job.log")
    try:
        code = job.wait(timeout=150)
    finally:
        job.close()

    output = job.output()
    assert code == 1, output[-6000:]
    assert "Kafka refused the SASL credentials (SCRAM-SHA-512, user 'analytics')" in output, output[-6000:]
    assert "not-the-password" not in output


# --- helpers -------------------------------------------------------------------------------------------------


def produce_raw(bootstrap: str, topic: str, value: bytes) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer.send(topic, value=value).get(timeout=30)
    finally:
        producer.close()


def checkpoint_dir(args: list[str]) -> Path:
    """The job's checkpoint directory (its `--checkpoint-location`, a local `file://` URI here)."""
    from urllib.parse import unquote, urlparse

    return Path(unquote(urlparse(args[args.index("--checkpoint-location") + 1]).path))


def test_localize_changes_only_secrets_storage_and_bigquery():
    args = job_args("b-1-public.example:9196")
    local, changed = localize(args, secrets_dir=Path("/s"), storage=Path("/g"))
    assert "--kafka-bootstrap-servers" in local and "b-1-public.example:9196" in local
    assert not any(arg.startswith(("gs://", "projects/")) or arg == "bigquery" for arg in local)
    assert len(args) - len(local) == 4 and len(changed) == 6
    assert json.dumps(local)  # plain strings only


# --- the ACL code, on the broker with an authorizer ------------------------------------------------------------


def test_the_custom_resource_sets_exactly_the_declared_acls_and_removes_them_on_delete(link_broker, monkeypatch):
    """`cdk/runtime/kafka_acls.py` as CloudFormation calls it, signed in through the listener that
    stands in for IAM, for a principal of its own (the job's ACLs stay as they are)."""
    from cdk.runtime.kafka_acls import handler
    from cloudshop.kafka_acls import AclBinding, admin_client, broker_principal, current_acls, to_json

    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    monkeypatch.delenv("KAFKA_SASL_MECHANISM", raising=False)
    principal = "User:rehearsal-probe"
    first = [AclBinding(principal, "TOPIC", "orders", "LITERAL", "READ")]
    second = [AclBinding(principal, "TOPIC", "analytics-results", "LITERAL", "WRITE")]
    brokers = broker_principal(link_broker.bootstrap_servers)  # "User:CN=*.0.0.1" here: a name only

    def event(kind: str, bindings: list[AclBinding]) -> dict[str, Any]:
        return {
            "RequestType": kind,
            "PhysicalResourceId": "kafka-acls-probe",
            "ResourceProperties": {
                "BootstrapServers": link_broker.bootstrap_servers,
                "Principal": principal,
                "Acls": to_json(bindings),
                "ReplicatedTopics": '["orders"]',
            },
        }

    admin = admin_client(link_broker.bootstrap_servers)
    try:
        # Created; the brokers' replication ACL comes with it
        handler({**event("Create", first), "PhysicalResourceId": None}, None)
        assert current_acls(admin, principal) == set(first)
        assert AclBinding(brokers, "TOPIC", "orders", "LITERAL", "READ") in current_acls(admin, brokers)
        # Updated: what is no longer declared goes, and a repeat changes nothing
        handler(event("Update", second), None)
        handler(event("Update", second), None)
        assert current_acls(admin, principal) == set(second)
        # Deleted: nothing left for the principal
        handler(event("Delete", second), None)
        assert current_acls(admin, principal) == set()
        assert current_acls(admin, brokers) == set()
        # And the job's own ACLs were never touched
        assert current_acls(admin, principal_of(CLIENT)) == set(bindings_for(CLIENT))
    finally:
        admin.close()
