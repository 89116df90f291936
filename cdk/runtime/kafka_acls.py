"""`Custom::KafkaAcls`: the Kafka ACLs of the clients outside AWS, set on MSK at deploy time.

CloudFormation has no resource for Kafka ACLs; they are Kafka metadata. This function (CDK Provider
framework, in the VPC) signs in to the brokers' IAM listener with its role (`AWS_MSK_IAM`, allowed
`kafka-cluster:AlterCluster`) and makes the principal's ACLs exactly the `Acls` property
(`cloudshop.kafka_acls.apply_acls`, the code the local rehearsal runs against its SCRAM broker).
First, though, the brokers' own principal gets READ on the topics the ACLs name (`ReplicatedTopics`),
which MSK asks for so that a topic with ACLs keeps replicating. Create and Update apply; Delete removes
the client's ACLs, then the brokers'. A refusal by the broker fails the resource, and so the deploy,
with the broker's error as the reason.

Properties: `BootstrapServers` (the IAM bootstrap string), `Principal` (`User:<name>`), `Acls` (JSON,
`cloudshop.kafka_acls.to_json`), `ReplicatedTopics` (JSON list: every topic any SCRAM client's ACLs name).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from cloudshop.kafka_acls import (
    admin_client,
    apply_acls,
    broker_principal,
    from_json,
    remove_acls,
    replication_bindings,
)

logger = logging.getLogger(__name__)
logger.setLevel(logging.INFO)


def _admin(properties: dict[str, Any]) -> Any:
    return admin_client(
        str(properties["BootstrapServers"]),
        security_protocol=os.environ.get("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        sasl_mechanism=os.environ.get("KAFKA_SASL_MECHANISM", "AWS_MSK_IAM"),
    )


def handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    properties = event["ResourceProperties"]
    principal = str(properties["Principal"])
    physical_id = event.get("PhysicalResourceId") or f"kafka-acls-{principal}"
    brokers = broker_principal(str(properties["BootstrapServers"]))
    replication = replication_bindings(brokers, json.loads(str(properties.get("ReplicatedTopics", "[]"))))
    admin = _admin(properties)
    try:
        if event["RequestType"] == "Delete":
            changes = remove_acls(admin, principal=principal)
            remove_acls(admin, principal=brokers)
        else:
            # The brokers first: a topic must never carry an ACL that shuts its replication out.
            apply_acls(admin, replication, principal=brokers)
            changes = apply_acls(admin, from_json(str(properties["Acls"])), principal=principal)
    finally:
        admin.close()
    logger.info(
        "ACLs of %s: %d created, %d deleted (%s)",
        principal,
        len(changes.created),
        len(changes.deleted),
        event["RequestType"],
    )
    return {"PhysicalResourceId": physical_id, "Data": {"Created": len(changes.created)}}
