"""Kafka ACLs of the clients outside AWS (`cloudshop.estate.SCRAM_CLIENTS`), set by an admin client.

MSK takes no ACLs from CloudFormation: they are Kafka metadata, written through the Kafka protocol.
The same code writes them in both places it matters:

- on MSK, from the `Custom::KafkaAcls` resource (`cdk/runtime/kafka_acls.py`), signed in with IAM
  (`kafka-cluster:AlterCluster`), IAM principals being outside what ACLs govern;
- on the local broker's SCRAM listener (`cloudshop.local.servers.ScramListener`), through its PLAINTEXT
  listener, whose principal is the broker's super user, in the rehearsal of the cloud link
  (`tests/analytics/test_cloud_link.py`).

`apply_acls` makes a principal's ACLs exactly the wanted set (it also deletes what is no longer
wanted), so it can run on every deploy. The brokers run with `allow.everyone.if.no.acl.found=false`:
a SCRAM user without an ACL can do nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from cloudshop.estate import ScramClient

ANY_HOST = "*"


@dataclass(frozen=True, order=True)
class AclBinding:
    """One ALLOW entry: `principal` may do `operation` on the resource (Kafka's names, upper case)."""

    principal: str
    resource_type: str  # TOPIC | GROUP
    resource_name: str
    pattern: str  # LITERAL | PREFIXED
    operation: str  # READ | WRITE | DESCRIBE
    host: str = ANY_HOST


def principal_of(client: ScramClient) -> str:
    return f"User:{client.name}"


def bindings_for(client: ScramClient) -> list[AclBinding]:
    """What `client` may do: READ its read topics (DESCRIBE comes with it) as a member of its groups,
    WRITE its write topics. Nothing on the cluster: producers need no IDEMPOTENT_WRITE since Kafka 3.0
    (KIP-679: WRITE on a topic implies it)."""
    principal = principal_of(client)
    bindings = [AclBinding(principal, "TOPIC", topic, "LITERAL", "READ") for topic in client.read_topics]
    if client.read_topics:
        if not client.group_prefix:
            raise ValueError(f"{client.name} reads topics, so it needs a consumer group prefix")
        bindings.append(AclBinding(principal, "GROUP", client.group_prefix, "PREFIXED", "READ"))
    bindings += [AclBinding(principal, "TOPIC", topic, "LITERAL", "WRITE") for topic in client.write_topics]
    return sorted(bindings)


def broker_principal(bootstrap_servers: str) -> str:
    """The principal MSK's brokers replicate as: their TLS certificate's name, `*.<the cluster's DNS
    suffix>` (`b-1.name.abc123.c2.kafka.eu-west-1.amazonaws.com:9098` ->
    `User:CN=*.name.abc123.c2.kafka.eu-west-1.amazonaws.com`)."""
    host = bootstrap_servers.split(",")[0].strip().rsplit(":", 1)[0]
    if "." not in host:
        raise ValueError(f"no broker host name in {bootstrap_servers!r}")
    return f"User:CN=*.{host.split('.', 1)[1]}"


def replication_bindings(principal: str, topics: Iterable[str]) -> list[AclBinding]:
    """What the brokers need on topics that carry ACLs, as the MSK developer guide asks ("Apache Kafka
    ACLs"): a topic with ACLs is closed to every principal they do not name, the brokers' own included,
    and its replication would stop."""
    bindings = [AclBinding(principal, "TOPIC", topic, "LITERAL", "READ") for topic in sorted(set(topics))]
    return sorted([*bindings, AclBinding(principal, "GROUP", "*", "LITERAL", "READ")])


def topics_of(bindings: Iterable[AclBinding]) -> list[str]:
    return sorted({b.resource_name for b in bindings if b.resource_type == "TOPIC"})


def to_json(bindings: Iterable[AclBinding]) -> str:
    """The custom resource's property: a change of the declaration changes it, so the deploy re-applies."""
    return json.dumps([asdict(binding) for binding in sorted(bindings)], sort_keys=True, separators=(",", ":"))


def from_json(text: str) -> list[AclBinding]:
    return sorted(AclBinding(**item) for item in json.loads(text))


@dataclass(frozen=True)
class AclChanges:
    created: tuple[AclBinding, ...]
    deleted: tuple[AclBinding, ...]


class AclError(RuntimeError):
    """The broker refused to create or delete an ACL; the message says which and why."""


def admin_client(
    bootstrap_servers: str,
    *,
    security_protocol: str = "PLAINTEXT",
    sasl_mechanism: str | None = None,
    client_id: str = "cloudshop-kafka-acls",
    **extra: Any,
) -> Any:
    """A kafka-python admin client; `sasl_mechanism="AWS_MSK_IAM"` signs in with the process's role."""
    from kafka import KafkaAdminClient

    auth = {"sasl_mechanism": sasl_mechanism} if sasl_mechanism else {}
    return KafkaAdminClient(
        bootstrap_servers=bootstrap_servers.split(","),
        security_protocol=security_protocol,
        client_id=client_id,
        request_timeout_ms=30_000,
        **auth,
        **extra,
    )


def current_acls(admin: Any, principal: str) -> set[AclBinding]:
    """Every ACL the broker holds for `principal` (any resource, pattern, operation)."""
    from kafka.admin import (
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePatternFilter,
        ResourceType,
    )
    from kafka.errors import NoError

    acl_filter = ACLFilter(
        principal=principal,
        host=None,
        operation=ACLOperation.ANY,
        permission_type=ACLPermissionType.ANY,
        resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
    )
    acls, error = admin.describe_acls(acl_filter)
    if error is not NoError and not isinstance(error, NoError):
        raise AclError(f"describing the ACLs of {principal} failed: {error}")
    found: set[AclBinding] = set()
    for acl in acls:
        if acl.permission_type != ACLPermissionType.ALLOW:
            continue
        found.add(
            AclBinding(
                principal=acl.principal,
                resource_type=acl.resource_pattern.resource_type.name,
                resource_name=acl.resource_pattern.resource_name,
                pattern=acl.resource_pattern.pattern_type.name,
                operation=acl.operation.name,
                host=acl.host,
            )
        )
    return found


def _kafka_acl(binding: AclBinding, *, as_filter: bool = False) -> Any:
    from kafka.admin import (
        ACL,
        ACLFilter,
        ACLOperation,
        ACLPermissionType,
        ACLResourcePatternType,
        ResourcePattern,
        ResourcePatternFilter,
        ResourceType,
    )

    arguments = {
        "principal": binding.principal,
        "host": binding.host,
        "operation": ACLOperation[binding.operation],
        "permission_type": ACLPermissionType.ALLOW,
    }
    resource_type = ResourceType[binding.resource_type]
    pattern = ACLResourcePatternType[binding.pattern]
    if as_filter:
        return ACLFilter(
            **arguments, resource_pattern=ResourcePatternFilter(resource_type, binding.resource_name, pattern)
        )
    return ACL(**arguments, resource_pattern=ResourcePattern(resource_type, binding.resource_name, pattern))


def apply_acls(admin: Any, bindings: Iterable[AclBinding], *, principal: str) -> AclChanges:
    """Make `principal`'s ACLs exactly `bindings`: create the missing ones, delete the others."""
    wanted = set(bindings)
    if any(binding.principal != principal for binding in wanted):
        raise ValueError(f"every binding must be for {principal}")
    existing = current_acls(admin, principal)
    create = sorted(wanted - existing)
    delete = sorted(existing - wanted)
    if create:
        result = admin.create_acls([_kafka_acl(binding) for binding in create])
        if result["failed"]:
            raise AclError(f"the broker refused ACLs for {principal}: {result['failed']}")
    _delete(admin, delete)
    return AclChanges(created=tuple(create), deleted=tuple(delete))


def remove_acls(admin: Any, *, principal: str) -> AclChanges:
    """Delete every ACL of `principal` (the custom resource's Delete)."""
    existing = sorted(current_acls(admin, principal))
    _delete(admin, existing)
    return AclChanges(created=(), deleted=tuple(existing))


def _delete(admin: Any, bindings: list[AclBinding]) -> None:
    if not bindings:
        return
    from kafka.errors import NoError

    for acl_filter, _matched, error in admin.delete_acls([_kafka_acl(b, as_filter=True) for b in bindings]):
        if error is not NoError and not isinstance(error, NoError):
            raise AclError(f"deleting ACL {acl_filter} failed: {error}")
