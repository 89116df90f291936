"""The event stream: Apache Kafka when `KAFKA_BOOTSTRAP_SERVERS` is set, else the embedded file log.

The file log keeps one append-only JSON-lines file per topic under `EVENT_LOG_DIR`
(`<dir>/<topic>.jsonl`), one event envelope per line; the analytics job reads it in the embedded
profile. Both publishers are at-least-once: `publish` returns only once every record is durable
(Kafka acks=all / fsync'd line) and raises otherwise, so the outbox keeps the events for a retry.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

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

    def path(self, topic: str) -> Path:
        return self.directory / f"{topic}.jsonl"

    def publish(self, topic: str, records: list[Record]) -> None:
        lines = "".join(value.strip() + "\n" for _, value in records)
        with self._lock, open(self.path(topic), "a", encoding="utf-8") as handle:
            # Several processes may append (order replicas, tests): the file lock keeps lines whole.
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                handle.write(lines)
                handle.flush()
                os.fsync(handle.fileno())
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def read(self, topic: str) -> Iterator[dict[str, object]]:
        path = self.path(topic)
        if not path.exists():
            return
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def close(self) -> None:
        pass


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
        self._producer = None
        self._lock = threading.Lock()

    def _connect(self):  # type: ignore[no-untyped-def]
        from kafka import KafkaProducer

        auth = {"sasl_mechanism": self.sasl_mechanism} if self.sasl_mechanism else {}
        return KafkaProducer(
            bootstrap_servers=self.bootstrap_servers.split(","),
            security_protocol=self.security_protocol,
            **auth,
            acks="all",
            retries=2,
            linger_ms=2,
            max_block_ms=int(self.timeout_seconds * 1000),
            request_timeout_ms=int(self.timeout_seconds * 1000),
            key_serializer=str.encode,
            value_serializer=str.encode,
        )

    def publish(self, topic: str, records: list[Record]) -> None:
        with self._lock:
            try:
                if self._producer is None:
                    self._producer = self._connect()
                futures = [self._producer.send(topic, key=key, value=value) for key, value in records]
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
