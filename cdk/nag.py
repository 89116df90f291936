"""Helpers to record why a cdk-nag rule or a checkov check does not apply to a resource.

Every suppression carries its reason next to the resource it concerns; the tests fail on any finding
that has none.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, CfnResource, Validations
from constructs import IConstruct

LOG_GROUP_KMS_REASON = (
    "Log groups are encrypted at rest by CloudWatch Logs with AWS-owned keys; services log no secrets or "
    "card data (payment methods are tokens), so a customer-managed key would add key-policy coupling "
    "between every stack and the key without protecting anything more."
)


def nag(construct: IConstruct, rules: Mapping[str, str]) -> None:
    """Acknowledge cdk-nag findings on `construct` and below: {rule or `rule[finding]`: reason}."""
    validations = Validations.of(construct)
    for rule, reason in rules.items():
        validations.acknowledge(Acknowledgment(id=rule, reason=reason))


def checkov_skip(construct: IConstruct, checks: Mapping[str, str]) -> None:
    """Record checkov skips ({check id: reason}) in the resource's template metadata."""
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to annotate")
    metadata = resource.get_metadata("checkov") or {}
    skips = [s for s in metadata.get("skip", []) if s["id"] not in checks]
    skips += [{"id": check, "comment": reason} for check, reason in checks.items()]
    resource.add_metadata("checkov", {"skip": skips})
