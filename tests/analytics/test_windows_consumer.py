"""The windows consumer: `analytics-results` records -> the S3 objects `GET /analytics/windows` reads.

The store (`analytics.windows.WindowStore`) and the consumer (`analytics.results_consumer`) on moto in
process; the Lambda handler with the MSK event of `tests/events/msk_analytics_results.json`; and the
local host (`python -m analytics.results_consumer`'s loop) against the real Kafka broker.
"""

from __future__ import annotations

import base64
import importlib
import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from analytics.results_consumer import (
    DEAD_LETTER_PREFIX,
    ConsumerStats,
    DeadLetters,
    KafkaRecord,
    WindowsConsumer,
    consume,
    kafka_consumer,
    records_from_msk_event,
)
from analytics.windows import (
    InvalidWindowError,
    Outcome,
    WindowConflictError,
    WindowStore,
    list_windows,
    parse_window,
    window_body,
    window_key,
)

EVENTS = Path(__file__).parent.parent / "events"
BUCKET = "cloudshop-test-analytics-results"


def window(start: str = "2026-11-25T10:00:00Z", *, orders: int = 3, final: bool = True, **extra: Any) -> dict:
    minute = int(start[14:16]) + 1
    end = f"{start[:14]}{minute:02d}:00Z" if minute < 60 else None
    assert end is not None, "the tests' windows stay inside one hour"
    return {
        "window_start": start,
        "window_end": end,
        "unique_users": 2,
        "orders": orders,
        "revenue": [{"amount": 449800, "currency": "INR"}],
        "items_sold": 5,
        "final": final,
        **extra,
    }


def record(value: dict | bytes | str | None, *, offset: int = 0, key: str | None = "auto") -> KafkaRecord:
    if isinstance(value, dict):
        raw: bytes | None = json.dumps(value).encode()
        key = value["window_start"] if key == "auto" else key
    else:
        raw = value.encode() if isinstance(value, str) else value
        key = None if key == "auto" else key
    return KafkaRecord("analytics-results", 0, offset, key.encode() if key else None, raw)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


class CountingS3:
    """The S3 client, counting the PutObject calls per key (what "written once" is about)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.puts: dict[str, int] = {}

    def put_object(self, **kwargs: Any) -> Any:
        self.puts[kwargs["Key"]] = self.puts.get(kwargs["Key"], 0) + 1
        return self._client.put_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@pytest.fixture
def counting(s3) -> CountingS3:
    return CountingS3(s3)


@pytest.fixture
def consumer(counting: CountingS3) -> WindowsConsumer:
    return WindowsConsumer(WindowStore(counting, BUCKET), DeadLetters(counting, BUCKET))


def stored(s3, start: str) -> dict:
    return json.loads(s3.get_object(Bucket=BUCKET, Key=window_key(start))["Body"].read())


def dead_letters(s3) -> list[dict]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=DEAD_LETTER_PREFIX).get("Contents", [])
    return [json.loads(s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read()) for item in listed]


# --- what a window is --------------------------------------------------------------------------------


def test_a_window_of_the_job_parses_to_itself():
    item = window()
    assert parse_window(json.dumps(item).encode(), key=item["window_start"].encode()) == item
    assert json.loads(window_body(item)) == item


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"window_start": "2026-11-25 10:00"}, "window_start"),
        ({"window_start": "2026-11-25T10:00:30Z", "window_end": "2026-11-25T10:01:30Z"}, "not on a minute"),
        ({"window_end": "2026-11-25T10:05:00Z"}, "one minute after"),
        ({"orders": -1}, "orders"),
        ({"orders": True}, "orders"),
        ({"unique_users": "2"}, "unique_users"),
        ({"revenue": [{"amount": 1, "currency": "inr"}]}, "ISO 4217"),
        ({"revenue": [{"amount": 1, "currency": "INR"}, {"amount": 2, "currency": "EUR"}]}, "sorted"),
        ({"revenue": [{"amount": 1.5, "currency": "INR"}]}, "revenue amount"),
        ({"final": "yes"}, "final"),
        ({"extra": 1}, "unknown"),
    ],
)
def test_a_record_that_is_not_a_window_is_refused_with_the_reason(change, reason):
    item = {**window(), **change}
    with pytest.raises(InvalidWindowError, match=reason):
        parse_window(json.dumps(item))


@pytest.mark.parametrize("value", [None, b"\xff\xfe", b"{not json", b"[1, 2]"])
def test_values_that_are_not_json_objects_are_refused(value):
    with pytest.raises(InvalidWindowError):
        parse_window(value)


def test_a_key_that_disagrees_with_the_window_is_refused():
    with pytest.raises(InvalidWindowError, match="record key"):
        parse_window(json.dumps(window()), key=b"2026-11-25T10:07:00Z")


# --- written once ------------------------------------------------------------------------------------


def test_the_same_window_delivered_twice_is_written_once(s3, counting):
    store = WindowStore(counting, BUCKET)
    assert store.put(window()) is Outcome.WRITTEN
    etag = s3.head_object(Bucket=BUCKET, Key=window_key(window()["window_start"]))["ETag"]

    assert store.put(window()) is Outcome.DUPLICATE

    assert counting.puts == {window_key("2026-11-25T10:00:00Z"): 1}
    assert s3.head_object(Bucket=BUCKET, Key=window_key("2026-11-25T10:00:00Z"))["ETag"] == etag
    assert list_windows(s3, BUCKET, limit=5)[0] == [window()]


def test_a_snapshot_gives_way_to_the_final_window_but_never_the_other_way(s3):
    store = WindowStore(s3, BUCKET)
    snapshot, final = window(orders=1, final=False), window(orders=3)
    assert store.put(snapshot) is Outcome.WRITTEN
    assert store.put(window(orders=2, final=False)) is Outcome.REPLACED  # a newer --once snapshot
    assert store.put(final) is Outcome.REPLACED
    assert store.put(snapshot) is Outcome.STALE
    assert stored(s3, final["window_start"]) == final


def test_a_different_final_window_for_a_stored_start_is_a_conflict(s3):
    store = WindowStore(s3, BUCKET)
    store.put(window(orders=3))
    with pytest.raises(WindowConflictError):
        store.put(window(orders=4))
    assert stored(s3, "2026-11-25T10:00:00Z")["orders"] == 3


def test_two_writers_racing_on_a_new_window_write_it_once(s3):
    # Given a writer that reads "absent", and another that writes the window before it puts
    class Racing(CountingS3):
        raced = False

        def put_object(self, **kwargs: Any) -> Any:
            if not self.raced:
                self.raced = True
                s3.put_object(Bucket=BUCKET, Key=kwargs["Key"], Body=window_body(window()))
            return super().put_object(**kwargs)

    racing = Racing(s3)
    # When the first one puts: its conditional write loses, it reads again and finds the same window
    assert WindowStore(racing, BUCKET).put(window()) is Outcome.DUPLICATE
    assert racing.puts == {window_key("2026-11-25T10:00:00Z"): 1}


# --- the consumer ------------------------------------------------------------------------------------


def test_a_malformed_record_goes_to_the_dead_letters_and_the_rest_of_the_batch_goes_on(s3, consumer):
    first, second = window("2026-11-25T10:00:00Z"), window("2026-11-25T10:01:00Z")
    batch = consumer.handle(
        [record(first, offset=1), record(b"{not json", offset=2), record(second, offset=3), record(first, offset=4)]
    )

    assert batch.as_dict() == {"dead_letter": 1, "duplicate": 1, "written": 2}
    items, _ = list_windows(s3, BUCKET, limit=10)
    assert items == [second, first]
    (letter,) = dead_letters(s3)
    assert letter["offset"] == 2 and "not UTF-8 JSON" in letter["reason"]
    assert base64.b64decode(letter["value"]) == b"{not json"


def test_a_redelivered_batch_writes_nothing_twice_not_even_its_dead_letters(s3, consumer, counting):
    records = [record(window(), offset=7), record(b"garbage", offset=8)]
    consumer.handle(records)
    again = consumer.handle(records)

    assert again.as_dict() == {"dead_letter": 1, "duplicate": 1}
    assert consumer.stats.as_dict() == {"dead_letter": 2, "duplicate": 1, "written": 1}
    assert counting.puts[window_key("2026-11-25T10:00:00Z")] == 1
    assert len(dead_letters(s3)) == 1  # the same record, the same dead letter


def test_a_conflicting_final_window_is_a_dead_letter_and_the_first_one_stays(s3, consumer):
    consumer.handle([record(window(orders=3), offset=1)])
    batch = consumer.handle([record(window(orders=9), offset=2)])
    assert batch.as_dict() == {"dead_letter": 1}
    assert stored(s3, "2026-11-25T10:00:00Z")["orders"] == 3
    assert "different final window" in dead_letters(s3)[0]["reason"]


def test_an_s3_failure_fails_the_batch_for_the_event_source_to_retry(s3):
    class Down(CountingS3):
        def put_object(self, **kwargs: Any) -> Any:
            raise s3.exceptions.ClientError({"Error": {"Code": "ServiceUnavailable"}}, "PutObject")

    down = Down(s3)
    with pytest.raises(s3.exceptions.ClientError):
        WindowsConsumer(WindowStore(down, BUCKET), DeadLetters(down, BUCKET)).handle([record(window())])


# --- the Lambda host ---------------------------------------------------------------------------------


def test_msk_events_are_read_in_partition_and_offset_order():
    event = json.loads((EVENTS / "msk_analytics_results.json").read_text())
    event["records"]["analytics-results-0"].reverse()
    records = records_from_msk_event(event)
    assert [r.offset for r in records] == [41, 42, 43, 44]
    assert records[1].key is None and records[0].key == b"2026-11-25T10:00:00Z"
    assert records_from_msk_event({"records": {}}) == []


def test_the_lambda_stores_an_msk_batch_and_counts_its_dead_letters(s3, monkeypatch, capsys):
    # Given the function's environment as CDK sets it, and a batch with a malformed record and a duplicate
    monkeypatch.setenv("ANALYTICS_RESULTS_BUCKET", BUCKET)
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "cloudshop")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    module = importlib.import_module("cdk.runtime.windows_consumer")
    module._consumer.cache_clear()
    event = json.loads((EVENTS / "msk_analytics_results.json").read_text())

    # When Lambda invokes it, twice (a redelivery)
    from tests.services.test_lambda_handlers import Context

    first = module.handler(event, Context())
    again = module.handler(event, Context())
    module._consumer.cache_clear()

    # Then both windows are stored once, the bad record is one dead letter, and the counts are metrics
    assert first == {"records": 4, "written": 2, "duplicate": 1, "dead_letter": 1}
    assert again == {"records": 4, "duplicate": 3, "dead_letter": 1}
    items, _ = list_windows(s3, BUCKET, limit=10)
    assert [item["window_start"] for item in items] == ["2026-11-25T10:01:00Z", "2026-11-25T10:00:00Z"]
    assert len(dead_letters(s3)) == 1
    emitted = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    assert any(metric.get("WindowDeadLetters") == [1.0] or metric.get("WindowDeadLetters") == 1.0 for metric in emitted)


# --- the local host, on the real broker --------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.slow
def test_the_local_consumer_stores_the_topic_and_commits_only_what_it_stored(kafka_server, moto_server):
    from kafka import KafkaProducer

    topic, group = f"analytics-results-{uuid.uuid4().hex[:8]}", f"cloudshop-windows-{uuid.uuid4().hex[:8]}"
    kafka_server.create_topics([topic])
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")
    bucket = f"windows-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})

    def publish(*values: dict | bytes) -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_server.bootstrap_servers)
        for value in values:
            body = json.dumps(value).encode() if isinstance(value, dict) else value
            key = value["window_start"].encode() if isinstance(value, dict) else None
            producer.send(topic, key=key, value=body)
        producer.flush(timeout=30)
        producer.close()

    publish(window("2026-11-25T10:00:00Z"), b"not a window", window("2026-11-25T10:01:00Z"))

    def run_until(count: int, stats: ConsumerStats) -> None:
        stop = threading.Event()
        kafka = kafka_consumer(kafka_server.bootstrap_servers, topic=topic, group=group)
        consumer = WindowsConsumer(WindowStore(s3, bucket), DeadLetters(s3, bucket), stats=stats)
        thread = threading.Thread(target=consume, args=(consumer, kafka, stop), kwargs={"poll_ms": 200})
        thread.start()
        deadline = time.monotonic() + 60
        while sum(stats.counts.values()) < count and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        thread.join(timeout=30)
        kafka.close()

    stats = ConsumerStats()
    run_until(3, stats)
    assert stats.as_dict() == {"dead_letter": 1, "written": 2}
    assert [w["window_start"] for w in list_windows(s3, bucket, limit=5)[0]] == [
        "2026-11-25T10:01:00Z",
        "2026-11-25T10:00:00Z",
    ]
    # A restart of the same group resumes after what it committed: only the new record is handled.
    publish(window("2026-11-25T10:02:00Z"))
    again = ConsumerStats()
    run_until(1, again)
    assert again.as_dict() == {"written": 1}


def test_the_consumer_reads_the_environment_names_of_the_settings_contract():
    from analytics.results_consumer import ENVIRONMENT
    from cloudshop.settings import Settings

    assert set(ENVIRONMENT) <= set(Settings.model_fields)
    assert all(name == field.upper() for field, name in ENVIRONMENT.items())
