"""`python -m analytics.job`: argument checks, the settings contract, and `--once` end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import boto3
import pytest

from analytics.eventgen import EventGenerator
from analytics.job import ENVIRONMENT, build_parser, kafka_auth, spark_requirements, validate
from analytics.spark import hadoop_aws_package, kafka_package
from tests.analytics.helpers import SegmentWriter, dumps, reference_batch

REPO = Path(__file__).resolve().parents[2]


def parse(*argv: str):
    parser = build_parser()
    args = parser.parse_args(list(argv))
    validate(args, parser)
    return args


def test_the_job_reads_the_environment_names_of_the_settings_contract():
    from cloudshop.settings import Settings

    fields = set(Settings.model_fields)
    assert set(ENVIRONMENT) <= fields
    assert all(name == field.upper() for field, name in ENVIRONMENT.items())


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--source", "files", "--sink", "console"], "--checkpoint-location"),
        (["--source", "files", "--sink", "parquet", "--once"], "--parquet-path"),
        (["--source", "files", "--sink", "bigquery", "--once"], "--bigquery-table"),
        (["--source", "files", "--sink", "memory", "--once"], "in-process"),
    ],
)
def test_incomplete_command_lines_are_refused_with_the_reason(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_kafka_needs_bootstrap_servers(monkeypatch, capsys):
    monkeypatch.delenv("KAFKA_BOOTSTRAP_SERVERS", raising=False)
    with pytest.raises(SystemExit):
        parse("--source", "kafka", "--sink", "console", "--once")
    assert "KAFKA_BOOTSTRAP_SERVERS" in capsys.readouterr().err


def test_the_windows_sink_takes_its_bucket_from_the_environment(monkeypatch):
    monkeypatch.setenv("ANALYTICS_RESULTS_BUCKET", "results-bucket")
    args = parse("--source", "files", "--sink", "windows", "--once")
    assert args.results_bucket == "results-bucket"


def test_connectors_are_requested_only_when_used(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:5000")
    packages, conf = spark_requirements(parse("--source", "files", "--sink", "console", "--once"))
    assert (packages, conf) == ([], {})
    packages, conf = spark_requirements(
        parse(
            "--source", "kafka", "--kafka-bootstrap-servers", "127.0.0.1:9092",
            "--sink", "parquet", "--parquet-path", "s3a://lake/windows", "--once",
        )
    )  # fmt: skip
    assert packages == [kafka_package(), hadoop_aws_package()]
    assert packages[0].split(":")[1].startswith("spark-sql-kafka-0-10_")
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:5000"


def test_sasl_credentials_come_from_secret_names_and_never_show(monkeypatch):
    secrets = {
        "projects/p/secrets/kafka-user/versions/latest": "analytics\n",
        "projects/p/secrets/pw/versions/3": 'p"w',
    }
    args = parse(
        "--source", "kafka", "--kafka-bootstrap-servers", "b:9096", "--sink", "kafka", "--once",
        "--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", "SCRAM-SHA-512",
        "--kafka-username-secret", "projects/p/secrets/kafka-user/versions/latest",
        "--kafka-password-secret", "projects/p/secrets/pw/versions/3",
    )  # fmt: skip
    auth = kafka_auth(args, read_secret=secrets.__getitem__)
    options = auth.spark_options()
    assert options["kafka.sasl.mechanism"] == "SCRAM-SHA-512"
    assert options["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="analytics" password="p\\"w";'
    )
    assert 'p"w' not in repr(auth)


def test_a_local_run_reads_file_secrets_and_trusts_a_pem_ca(tmp_path, monkeypatch):
    (tmp_path / "user").write_text("analytics\n")
    (tmp_path / "password").write_text("s3cret")
    monkeypatch.setenv("KAFKA_SSL_TRUSTSTORE", str(tmp_path / "ca.pem"))
    args = parse(
        "--source", "kafka", "--kafka-bootstrap-servers", "127.0.0.1:9096", "--sink", "kafka", "--once",
        "--kafka-security-protocol", "SASL_SSL", "--kafka-sasl-mechanism", "SCRAM-SHA-512",
        "--kafka-username-secret", (tmp_path / "user").as_uri(),
        "--kafka-password-secret", (tmp_path / "password").as_uri(),
    )  # fmt: skip
    options = kafka_auth(args).spark_options()
    assert options["kafka.ssl.truststore.type"] == "PEM"
    assert options["kafka.ssl.truststore.location"] == str(tmp_path / "ca.pem")
    assert 'username="analytics" password="s3cret"' in options["kafka.sasl.jaas.config"]
    assert args.kafka_group_id_prefix == "cloudshop-analytics-job"


def test_a_refusal_by_the_broker_is_one_plain_sentence_without_the_password():
    from analytics.kafka_auth import KafkaAuth, explain_kafka_failure

    auth = KafkaAuth("SASL_SSL", "SCRAM-SHA-512", "analytics", "s3cret")
    java = "org.apache.kafka.common.errors.SaslAuthenticationException: Authentication failed during authentication"
    message = explain_kafka_failure(RuntimeError(java), auth)
    assert message is not None and message.startswith(
        "Kafka refused the SASL credentials (SCRAM-SHA-512, user 'analytics')"
    )
    assert "s3cret" not in message
    assert "topic" in (explain_kafka_failure("TopicAuthorizationException: Not authorized", auth) or "")
    assert explain_kafka_failure(RuntimeError("disk full"), auth) is None


@pytest.mark.spark
@pytest.mark.slow
def test_once_writes_every_window_to_s3_objects_and_parquet_then_exits(spark, moto_server, tmp_path):
    # Given a file log with one sealed segment and an active one being appended to
    events = list(EventGenerator(seed=5, users=8, duplicate_rate=0.2).events(70))
    writer = SegmentWriter(tmp_path / "events")
    writer.write_segment(events[:60])
    writer.append([*events[60:], '{"half a line'])
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="eu-west-1")
    results_bucket, lake_bucket = f"results-{uuid.uuid4().hex[:8]}", f"lake-{uuid.uuid4().hex[:8]}"
    for bucket in (results_bucket, lake_bucket):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    env = {
        **os.environ,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "AWS_ENDPOINT_URL": moto_server.endpoint_url,
        "AWS_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "ANALYTICS_RESULTS_BUCKET": results_bucket,
        "EVENT_LOG_DIR": str(tmp_path / "events"),
    }
    # When the job runs once, to the windows objects and to Parquet on s3a://
    completed = subprocess.run(
        [
            sys.executable, "-m", "analytics.job", "--source", "files",
            "--sink", "windows", "--sink", "parquet", "--parquet-path", f"s3a://{lake_bucket}/windows",
            "--watermark", "2 minutes", "--once",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    expected = reference_batch(events, watermark=timedelta(minutes=2))
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary == {"windows": len(expected), "final": sum(w["final"] for w in expected)}

    # Then there is one object per window, equal to the reference, the open windows not final
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=results_bucket, Prefix="windows/")["Contents"])
    assert keys == [f"windows/{w['window_start']}.json" for w in expected]
    objects = [json.loads(s3.get_object(Bucket=results_bucket, Key=key)["Body"].read()) for key in keys]
    assert objects == expected, dumps({"actual": objects, "expected": expected})
    assert objects[-1]["final"] is False

    # And the Parquet data set holds the same windows
    parts = [
        o["Key"] for o in s3.list_objects_v2(Bucket=lake_bucket, Prefix="windows/")["Contents"]
        if o["Key"].endswith(".parquet")
    ]  # fmt: skip
    assert parts
    local = tmp_path / "parquet"
    local.mkdir()
    for key in parts:
        s3.download_file(lake_bucket, key, str(local / Path(key).name))
    rows = spark.read.parquet(str(local)).orderBy("window_start").collect()
    assert [(row["orders"], row["unique_users"], row["final"]) for row in rows] == [
        (w["orders"], w["unique_users"], w["final"]) for w in expected
    ]


def test_the_dataproc_package_holds_the_job_and_is_reproducible(tmp_path):
    from analytics.package import build

    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    names = build(first)
    build(second)
    assert {"analytics/__init__.py", "analytics/job.py", "analytics/transforms.py"} <= set(names)
    assert not [name for name in names if "test" in name or name.endswith(".tf")]
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize(
    ("spark_version", "coordinates"),
    [
        ("4.3.0", "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"),
        ("4.1.3", "org.apache.spark:spark-sql-kafka-0-10_2.13:4.1.3"),
        ("3.5.1", "org.apache.spark:spark-sql-kafka-0-10_2.12:3.5.1"),
    ],
)
def test_the_kafka_connector_matches_the_spark_build(monkeypatch, spark_version, coordinates):
    monkeypatch.delenv("ANALYTICS_KAFKA_PACKAGE", raising=False)
    assert kafka_package(spark_version) == coordinates


@pytest.mark.spark
@pytest.mark.slow
def test_the_streaming_command_emits_closed_windows_and_stops_cleanly_on_sigterm(tmp_path):
    import signal
    import time

    from analytics.eventgen import order_event

    def sale(event_id: str, at: str) -> dict:
        return order_event(
            event_id=event_id, event_type="order.paid", occurred_at=at, order_id=f"o-{event_id}", user_id="u1"
        )

    writer = SegmentWriter(tmp_path / "events")
    log_path = tmp_path / "job.log"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "EVENT_LOG_DIR": str(tmp_path / "events")}
    command = [
        sys.executable, "-m", "analytics.job", "--source", "files", "--sink", "console",
        "--checkpoint-location", str(tmp_path / "checkpoint"), "--trigger-interval", "1 second",
    ]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        # Given a sale at 10:00 and, later, one at 10:05 that takes the watermark past 10:01
        writer.write_segment([sale("e1", "2025-01-01T10:00:10Z"), sale("e2", "2025-01-01T10:00:20Z")])
        writer.write_segment([sale("e3", "2025-01-01T10:05:00Z")])
        # Then the 10:00 window is printed once the stream has caught up
        deadline = time.monotonic() + 120
        while "|2025-01-01 10:00:00|2025-01-01 10:01:00|1 " not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()[-3000:]
            assert time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.5)
        # And SIGTERM stops the query and the process cleanly
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log_path.read_text()[-3000:]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log_path.read_text()
    assert "stopped; late events dropped while running: 0" in output
    assert "10:05:00|2025-01-01 10:06:00" not in output
