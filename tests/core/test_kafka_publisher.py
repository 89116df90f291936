"""The Kafka publisher's producer (issue 10): idempotent, so a retry neither duplicates nor reorders
an order's events. Its configuration without a broker, then the producer it builds and the order its
events arrive in, on the real broker."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaConfigurationError

from cloudshop.stream import KafkaEventPublisher


def test_the_producer_asks_for_idempotence_with_the_settings_it_needs() -> None:
    config = KafkaEventPublisher("broker-1:9092,broker-2:9092").producer_config()

    assert config["enable_idempotence"] is True
    assert config["acks"] == "all"
    assert 1 <= config["max_in_flight_requests_per_connection"] <= 5
    assert config["retries"] > 0
    assert config["bootstrap_servers"] == ["broker-1:9092", "broker-2:9092"]


def test_a_setting_that_conflicts_with_idempotence_fails_at_start_instead_of_turning_it_off() -> None:
    """kafka-python turns default idempotence off silently on a conflict; asked for, it refuses."""
    config: dict[str, Any] = KafkaEventPublisher("127.0.0.1:1").producer_config() | {"acks": 1}
    with pytest.raises(KafkaConfigurationError):
        KafkaProducer(api_version=(3, 0), **config)


@pytest.mark.kafka
@pytest.mark.slow
def test_the_producer_on_the_broker_is_idempotent_and_keeps_each_keys_order(kafka_server: Any) -> None:
    topic = f"orders-{uuid.uuid4().hex[:8]}"
    kafka_server.create_topics([topic], partitions=3)
    publisher = KafkaEventPublisher(kafka_server.bootstrap_servers)
    keys = [f"ord_{n}" for n in range(5)]
    try:
        for batch in range(10):
            publisher.publish(
                topic, [(key, json.dumps({"key": key, "seq": batch * 20 + n})) for n in range(20) for key in keys]
            )
        assert publisher._producer is not None and publisher._producer.config["enable_idempotence"] is True
    finally:
        publisher.close()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_server.bootstrap_servers,
        group_id=f"t-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    try:
        seen: dict[str, list[int]] = {key: [] for key in keys}
        for message in consumer:
            value = json.loads(message.value)
            seen[value["key"]].append(value["seq"])
    finally:
        consumer.close()
    assert all(sequence == list(range(200)) for sequence in seen.values()), {k: v[:5] for k, v in seen.items()}
