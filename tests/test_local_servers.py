"""The real local servers start, serve, stop and restart as the runner and the fixtures rely on."""

from __future__ import annotations

import os
import socket
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from cloudshop.local.servers import (
    HOST,
    KafkaServer,
    ManagedServer,
    PostgresServer,
    ServerStartError,
    free_port,
)

# --- the ManagedServer pattern (fast: plain Python processes) -------------------------------------


class _ScriptServer(ManagedServer):
    """A stand-in server whose process is a Python snippet and whose readiness is a file."""

    name = "script"
    startup_timeout = 3.0
    stop_timeout = 2.0

    def __init__(self, data_dir: Path, *, script: str) -> None:
        super().__init__(data_dir)
        self.script = script

    def _command(self) -> list[str]:
        return [sys.executable, "-c", self.script, str(self.data_dir)]

    def _is_ready(self) -> bool:
        return (self.data_dir / "ready").exists()


def test_free_port_can_be_bound_on_loopback():
    port = free_port()

    with socket.socket() as sock:
        sock.bind((HOST, port))


def test_server_that_exits_early_fails_with_its_log_tail(tmp_path):
    server = _ScriptServer(tmp_path, script="print('config is broken', flush=True); raise SystemExit(3)")

    with pytest.raises(ServerStartError) as failure:
        server.start()

    assert "exited with code 3" in str(failure.value)
    assert "config is broken" in str(failure.value)
    assert not server.running


def test_server_that_never_gets_ready_times_out_with_its_log_tail(tmp_path):
    server = _ScriptServer(tmp_path, script="import time; print('still warming up', flush=True); time.sleep(60)")

    started = time.monotonic()
    with pytest.raises(ServerStartError) as failure:
        server.start()

    assert time.monotonic() - started < 15
    assert "not ready" in str(failure.value)
    assert "still warming up" in str(failure.value)
    assert not server.running


def test_stop_kills_the_whole_process_group(tmp_path):
    # The "server" starts a child that ignores SIGTERM, as a stuck worker process would.
    script = (
        "import pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c',"
        " 'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)'])\n"
        "pathlib.Path(sys.argv[1], 'child.pid').write_text(str(child.pid))\n"
        "pathlib.Path(sys.argv[1], 'ready').touch()\n"
        "time.sleep(120)\n"
    )
    with _ScriptServer(tmp_path, script=script) as server:
        assert server.running
        child_pid = int((tmp_path / "child.pid").read_text())

    assert not server.running
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child_pid):
        time.sleep(0.1)
    assert not _alive(child_pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose; its parent (the stopped server) reaps nothing any more.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- PostgreSQL ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_serves_the_cloudshop_database(postgres_server):
    with psycopg.connect(postgres_server.url) as conn:
        database = conn.execute("SELECT current_database()").fetchone()[0]
        max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])
        listen = conn.execute("SHOW listen_addresses").fetchone()[0]

    assert database == "cloudshop"
    assert max_connections >= 100
    assert listen == HOST
    assert postgres_server.url.startswith(f"postgresql://{postgres_server.user}@{HOST}:")


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_holds_a_hundred_concurrent_connections(postgres_server):
    def hold_connection(_: int) -> int:
        with psycopg.connect(postgres_server.url) as conn:
            time.sleep(0.5)
            return conn.execute("SELECT 1").fetchone()[0]

    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(hold_connection, range(100)))

    assert results == [1] * 100


@pytest.mark.slow
@pytest.mark.postgres
def test_two_postgres_servers_run_side_by_side(tmp_path):
    with PostgresServer(tmp_path / "a") as first, PostgresServer(tmp_path / "b") as second:
        with psycopg.connect(first.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE only_in_first (id int)")
        with psycopg.connect(second.url) as conn:
            tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()

        assert first.port != second.port
        assert tables == []


@pytest.mark.slow
@pytest.mark.postgres
def test_postgres_data_survives_stop_and_start(tmp_path):
    server = PostgresServer(tmp_path)
    with server:
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (id int)")
            conn.execute("INSERT INTO kept VALUES (42)")

    with server:
        with psycopg.connect(server.url) as conn:
            rows = conn.execute("SELECT id FROM kept").fetchall()

    assert rows == [(42,)]


# --- Apache Kafka --------------------------------------------------------------------------------


def _consume_all(bootstrap_servers: str, topic: str, *, expected: int) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap_servers,
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )
    try:
        records = []
        for record in consumer:
            records.append((record.key, record.value))
            if len(records) >= expected:
                break
        return records
    finally:
        consumer.close()


def _produce(bootstrap_servers: str, topic: str, key: bytes, value: bytes) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap_servers, acks="all", retries=5)
    try:
        producer.send(topic, key=key, value=value).get(timeout=30)
    finally:
        producer.close()


@pytest.mark.slow
@pytest.mark.kafka
def test_kafka_round_trip_survives_a_broker_restart(kafka_server: KafkaServer):
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    kafka_server.create_topics([topic])
    _produce(kafka_server.bootstrap_servers, topic, b"order-1", b'{"event": "OrderPlaced"}')
    assert _consume_all(kafka_server.bootstrap_servers, topic, expected=1) == [
        (b"order-1", b'{"event": "OrderPlaced"}')
    ]

    port = kafka_server.port
    kafka_server.stop()
    assert not kafka_server.running
    kafka_server.start()

    assert kafka_server.port == port
    _produce(kafka_server.bootstrap_servers, topic, b"order-2", b'{"event": "OrderPaid"}')
    assert _consume_all(kafka_server.bootstrap_servers, topic, expected=2) == [
        (b"order-1", b'{"event": "OrderPlaced"}'),
        (b"order-2", b'{"event": "OrderPaid"}'),
    ]


@pytest.mark.slow
@pytest.mark.kafka
def test_kafka_create_topics_sets_partitions_and_is_idempotent(kafka_server: KafkaServer):
    topic = f"analytics-{uuid.uuid4().hex[:8]}"

    kafka_server.create_topics([topic], partitions=3)
    kafka_server.create_topics([topic], partitions=3)

    admin = KafkaAdminClient(bootstrap_servers=kafka_server.bootstrap_servers)
    try:
        [description] = admin.describe_topics([topic])
    finally:
        admin.close()
    assert len(description["partitions"]) == 3


# --- moto ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_moto_serves_dynamodb_over_http(moto_server):
    dynamodb = boto3.client(
        "dynamodb",
        endpoint_url=moto_server.endpoint_url,
        region_name="eu-west-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    table = f"orders-{uuid.uuid4().hex[:8]}"
    dynamodb.create_table(
        TableName=table,
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )

    dynamodb.put_item(TableName=table, Item={"pk": {"S": "order#1"}, "status": {"S": "PAID"}})
    item = dynamodb.get_item(TableName=table, Key={"pk": {"S": "order#1"}})["Item"]

    assert item == {"pk": {"S": "order#1"}, "status": {"S": "PAID"}}
    assert moto_server.endpoint_url.startswith(f"http://{HOST}:")


@pytest.mark.slow
def test_dynalite_serves_the_dynamodb_api(dynamodb_server: Any) -> None:
    client = boto3.client(
        "dynamodb",
        endpoint_url=dynamodb_server.endpoint_url,
        region_name="eu-west-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    client.create_table(
        TableName="probe-table",
        KeySchema=[{"AttributeName": "k", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "k", "AttributeType": "S"}],
        BillingMode="PAY_PER_REQUEST",
    )
    # As on DynamoDB, a new table is CREATING for a moment; a write before it is ACTIVE is refused.
    client.get_waiter("table_exists").wait(TableName="probe-table", WaiterConfig={"Delay": 1, "MaxAttempts": 30})
    client.put_item(
        TableName="probe-table", Item={"k": {"S": "a"}, "n": {"N": "1"}}, ConditionExpression="attribute_not_exists(k)"
    )
    with pytest.raises(client.exceptions.ConditionalCheckFailedException):
        client.put_item(TableName="probe-table", Item={"k": {"S": "a"}}, ConditionExpression="attribute_not_exists(k)")
    assert client.get_item(TableName="probe-table", Key={"k": {"S": "a"}})["Item"]["n"] == {"N": "1"}
