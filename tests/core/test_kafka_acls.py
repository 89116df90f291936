"""`cloudshop.kafka_acls`: what the SCRAM clients may do, as ACL bindings (the broker-side tests, against
a broker with an authorizer, are in tests/analytics/test_cloud_link.py)."""

from __future__ import annotations

import pytest

from cloudshop.estate import ESTATE, ScramClient
from cloudshop.kafka_acls import (
    AclBinding,
    bindings_for,
    broker_principal,
    from_json,
    principal_of,
    replication_bindings,
    to_json,
    topics_of,
)


def test_the_analytics_job_may_read_orders_in_its_groups_and_write_analytics_results_only():
    (client,) = ESTATE.scram_clients
    assert bindings_for(client) == [
        AclBinding("User:analytics", "GROUP", "cloudshop-analytics-job", "PREFIXED", "READ"),
        AclBinding("User:analytics", "TOPIC", "analytics-results", "LITERAL", "WRITE"),
        AclBinding("User:analytics", "TOPIC", "orders", "LITERAL", "READ"),
    ]
    assert principal_of(client) == "User:analytics"
    # Every topic it names is a topic of the estate, and its group prefix is the job's default.
    from analytics.job import GROUP_ID_PREFIX

    assert set(topics_of(bindings_for(client))) <= {topic.name for topic in ESTATE.topics}
    assert client.group_prefix == GROUP_ID_PREFIX


def test_no_aws_consumer_group_falls_under_the_jobs_prefix():
    from analytics.results_consumer import CONSUMER_GROUP

    (client,) = ESTATE.scram_clients
    assert not CONSUMER_GROUP.startswith(client.group_prefix)


def test_a_reader_without_a_group_prefix_is_refused():
    with pytest.raises(ValueError, match="group prefix"):
        bindings_for(ScramClient(name="x", read_topics=("orders",)))


def test_bindings_survive_the_custom_resource_property():
    (client,) = ESTATE.scram_clients
    text = to_json(bindings_for(client))
    assert from_json(text) == bindings_for(client)
    assert to_json(reversed(bindings_for(client))) == text  # stable: no spurious update


def test_the_brokers_principal_is_the_clusters_certificate_name():
    bootstrap = (
        "b-2.cloudshopdevevents.abc123.c2.kafka.eu-west-1.amazonaws.com:9098,"
        "b-1.cloudshopdevevents.abc123.c2.kafka.eu-west-1.amazonaws.com:9098"
    )
    principal = broker_principal(bootstrap)
    assert principal == "User:CN=*.cloudshopdevevents.abc123.c2.kafka.eu-west-1.amazonaws.com"
    assert replication_bindings(principal, ["orders", "analytics-results", "orders"]) == [
        AclBinding(principal, "GROUP", "*", "LITERAL", "READ"),
        AclBinding(principal, "TOPIC", "analytics-results", "LITERAL", "READ"),
        AclBinding(principal, "TOPIC", "orders", "LITERAL", "READ"),
    ]
    with pytest.raises(ValueError):
        broker_principal("localhost:9092")
