"""The event stream: Apache Kafka when `KAFKA_BOOTSTRAP_SERVERS` is set, else the embedded file log.

The file log keeps one directory per topic under `EVENT_LOG_DIR` (`<dir>/<topic>/`) made of segment
files: one per publish, named by the topic offset of its first record (`00000000000000000042.jsonl`),
written under a hidden name and renamed into place, then never changed. The analytics job's Spark
file source follows such a directory (it tracks files, not appended lines); the contract is in
`analytics/README.md` ("File log layout").

Both publishers are at-least-once: `publish` returns only once every record is durable (Kafka
acks=all, or an fsync'd segment) and raises otherwise, so the outbox keeps the events for a retry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from cloudshop.observability import count_backend_call
from cloudshop.settings import Settings

Record = tuple[str, str]  # (key, JSON value)


class PublishError(RuntimeError):
    pass


class EventPublisher(Protocol):
    def publish(self, topic: str, records: list[Record]) -> None: ...

    def close(self) -> None: ...


class FileEventLog:
    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def topic_dir(self, topic: str) -> Path:
        return self.directory / topic

    def publish(self, topic: str, records: list[Record]) -> None:
        if not records:
            return
        directory = self.topic_dir(topic)
        directory.mkdir(parents=True, exist_ok=True)
        lines = "".join(value.strip() + "\n" for _, value in records)
        with self._lock, open(directory / ".lock", "a") as lock:
            # Several processes may publish (order replicas, tests): the file lock orders segments.
            fcntl.flock(lock, fcntl.LOCK_EX)
            segments = sorted(directory.glob("*.jsonl"))
            # The next offset follows from the last segment itself: nothing to get out of step after a crash.
            offset = int(segments[-1].stem) + _count_lines(segments[-1]) if segments else 0
            temporary = directory / f".{offset:020d}.jsonl.tmp"
            with open(temporary, "w", encoding="utf-8") as handle:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
            os.rename(temporary, directory / f"{offset:020d}.jsonl")
            _fsync_directory(directory)

    def read(self, topic: str) -> Iterator[dict[str, object]]:
        for segment in sorted(self.topic_dir(topic).glob("*.jsonl")):
            with open(segment, encoding="utf-8") as handle:
                for line in handle:
                    if line.strip():
                        yield json.loads(line)

    def close(self) -> None:
        pass


def _count_lines(path: Path) -> int:
    with open(path, "rb") as handle:
        return sum(1 for _ in handle)


def _fsync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class KafkaEventPublisher:
    """One long-lived producer per process, created lazily so a broker that is down at start-up
    delays events instead of failing the service."""

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        security_protocol: str = "PLAINTEXT",
        sasl_mechanism: str | None = None,
        timeout_seconds: float = 5.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.security_protocol = security_protocol
        self.sasl_mechanism = sasl_mechanism
        self.timeout_seconds = timeout_seconds
        self._producer: Any = None
        self._lock = threading.Lock()

    def producer_config(self) -> dict[str, Any]:
        """The producer's settings. Idempotent, asked for explicitly: the broker drops a retried
        batch it already has and keeps each partition's batches in the order they were sent, with up
        to 5 in flight, so a retry can neither duplicate nor reorder an order's events. kafka-python
        (3.0) turns idempotence on by default but silently off when another setting conflicts with it;
        asked for explicitly, a conflict (acks=1, more than 5 in flight) fails at start instead."""
        auth = {"sasl_mechanism": self.sasl_mechanism} if self.sasl_mechanism else {}
        return {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            **auth,
            "enable_idempotence": True,
            "acks": "all",
            "max_in_flight_requests_per_connection": 5,
            "retries": 5,
            "linger_ms": 2,
            "max_block_ms": int(self.timeout_seconds * 1000),
            "request_timeout_ms": int(self.timeout_seconds * 1000),
            "key_serializer": str.encode,
            "value_serializer": str.encode,
        }

    def _connect(self):  # type: ignore[no-untyped-def]
        from kafka import KafkaProducer

        return KafkaProducer(**self.producer_config())

    def publish(self, topic: str, records: list[Record]) -> None:
        with self._lock:
            try:
                if self._producer is None:
                    self._producer = self._connect()
                futures = [self._producer.send(topic, key=key, value=value) for key, value in records]
                if records:
                    # The records go out together in the flush: one batch, one produce round trip.
                    count_backend_call("kafka", "Produce")
                self._producer.flush(timeout=self.timeout_seconds)
                for future in futures:
                    future.get(timeout=self.timeout_seconds)
            except Exception as exc:  # any broker trouble: drop the producer, let the outbox retry
                self._reset()
                raise PublishError(f"Kafka publish to {topic} failed: {exc!r}") from exc

    def _reset(self) -> None:
        if self._producer is not None:
            # A producer that is already broken may fail to close; there is nothing left to do then.
            with contextlib.suppress(Exception):
                self._producer.close(timeout=0)
        self._producer = None

    def close(self) -> None:
        with self._lock:
            self._reset()


def publisher_from_settings(settings: Settings) -> EventPublisher:
    if settings.kafka_bootstrap_servers:
        return KafkaEventPublisher(
            settings.kafka_bootstrap_servers,
            security_protocol=settings.kafka_security_protocol,
            sasl_mechanism=settings.kafka_sasl_mechanism,
        )
    return FileEventLog(settings.event_log_dir)
