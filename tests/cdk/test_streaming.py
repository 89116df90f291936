"""EventStream: MSK with IAM (and, for the analytics link, SCRAM) authentication over TLS, and every
topic of `cloudshop.estate`. The link itself: test_analytics_link.py."""

from __future__ import annotations

import base64
import json

import pytest
from aws_cdk.assertions import Match

from cloudshop.estate import ESTATE, Topic

pytestmark = pytest.mark.infra


def test_cluster_accepts_only_authenticated_clients_over_tls(synth) -> None:
    synth.template("Streaming").has_resource_properties(
        "AWS::MSK::Cluster",
        {
            "ClusterName": f"{synth.config.prefix}events",
            "KafkaVersion": synth.config.kafka_version,
            "NumberOfBrokerNodes": 3,
            "ClientAuthentication": {
                "Sasl": {"Iam": {"Enabled": True}, "Scram": {"Enabled": True}},
                "Unauthenticated": {"Enabled": False},
            },
            "EncryptionInfo": {
                "EncryptionAtRest": {"DataVolumeKMSKeyId": Match.any_value()},
                "EncryptionInTransit": {"ClientBroker": "TLS", "InCluster": True},
            },
            "LoggingInfo": {"BrokerLogs": {"CloudWatchLogs": {"Enabled": True, "LogGroup": Match.any_value()}}},
        },
    )


def test_brokers_never_create_topics_on_their_own(synth) -> None:
    synth.template("Streaming").has_resource_properties(
        "AWS::MSK::Configuration",
        {"ServerProperties": Match.string_like_regexp("auto.create.topics.enable=false")},
    )


@pytest.mark.parametrize("topic", ESTATE.topics, ids=lambda t: t.name)
def test_declared_topic_exists_with_its_partitions_and_retention(synth, topic: Topic) -> None:
    topics = [
        r["Properties"]
        for r in synth.resources("Streaming", "AWS::MSK::Topic").values()
        if r["Properties"]["TopicName"] == topic.name
    ]
    assert len(topics) == 1, f"topic {topic.name} missing or duplicated"
    properties = topics[0]
    assert properties["PartitionCount"] == topic.partitions
    assert properties["ReplicationFactor"] == 3
    configs = base64.b64decode(properties["Configs"]).decode()
    assert f"retention.ms={topic.retention_hours * 3_600_000}" in configs.splitlines()


def test_bootstrap_servers_are_looked_up_and_output(synth) -> None:
    lookups = synth.resources("Streaming", "Custom::AWS").values()
    assert any("getBootstrapBrokers" in json.dumps(r["Properties"]["Update"]) for r in lookups)
    assert "KafkaBootstrapServers" in synth.templates["Streaming"]["Outputs"]
