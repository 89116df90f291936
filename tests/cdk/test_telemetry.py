"""The CloudWatch observability add-on's agent may write spans to X-Ray and Grafana may read CloudWatch
and X-Ray, each through its own Pod Identity role bound to one service account."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from cdk.telemetry import (
    AGENT_POLICY,
    CLOUDWATCH_READ,
    COLLECTOR_NAMESPACE,
    COLLECTOR_SERVICE_ACCOUNT,
    GRAFANA_NAMESPACE,
    GRAFANA_SERVICE_ACCOUNT,
    TELEMETRY_ADDON,
    XRAY_READ,
    XRAY_WRITE,
)

pytestmark = pytest.mark.infra


def _actions_of_role_bound_to(template: Any, *, namespace: str, service_account: str) -> set[str]:
    """Every action the policies attached to the role of (namespace, service_account) allow."""
    [association] = [
        resource["Properties"]
        for resource in template.find_resources("AWS::EKS::PodIdentityAssociation").values()
        if resource["Properties"]["Namespace"] == namespace
        and resource["Properties"]["ServiceAccount"] == service_account
    ]
    return _actions_of_role(template, association["RoleArn"]["Fn::GetAtt"][0])


def _actions_of_role(template: Any, role_id: str) -> set[str]:
    actions: set[str] = set()
    for policy in template.find_resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                listed = statement["Action"]
                actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_the_addon_agent_may_write_spans_to_xray_with_the_agents_own_policy(synth) -> None:
    template = synth.template("Eks")
    [addon] = [
        resource["Properties"]
        for resource in template.find_resources("AWS::EKS::Addon").values()
        if resource["Properties"]["AddonName"] == TELEMETRY_ADDON
    ]
    [association] = addon["PodIdentityAssociations"]
    role_id = association["RoleArn"]["Fn::GetAtt"][0]
    role = template.find_resources("AWS::IAM::Role")[role_id]["Properties"]

    assert association["ServiceAccount"] == COLLECTOR_SERVICE_ACCOUNT
    assert _actions_of_role(template, role_id) == set(XRAY_WRITE)
    assert AGENT_POLICY in json.dumps(role["ManagedPolicyArns"])
    assert role["Description"] == f"Pod Identity role of {COLLECTOR_NAMESPACE}/{COLLECTOR_SERVICE_ACCOUNT}"
    # Container logs go to Loki, not a second time through the add-on's Fluent Bit.
    assert json.loads(addon["ConfigurationValues"]) == {"containerLogs": {"enabled": False}}


def test_grafana_may_read_cloudwatch_metrics_and_xray_traces_and_write_nothing(synth) -> None:
    template = synth.template("Eks")

    actions = _actions_of_role_bound_to(template, namespace=GRAFANA_NAMESPACE, service_account=GRAFANA_SERVICE_ACCOUNT)

    assert actions == set(CLOUDWATCH_READ) | set(XRAY_READ)
    assert not any(action.split(":")[1].startswith(("Put", "Delete", "Create", "Update")) for action in actions)


def test_the_roles_are_assumed_only_through_pod_identity(synth) -> None:
    template = synth.template("Eks")

    template.has_resource_properties(
        "AWS::IAM::Role",
        {
            "Description": f"Pod Identity role of {COLLECTOR_NAMESPACE}/{COLLECTOR_SERVICE_ACCOUNT}",
            "AssumeRolePolicyDocument": {
                "Statement": [
                    Match.object_like(
                        {
                            "Action": ["sts:AssumeRole", "sts:TagSession"],
                            "Principal": {"Service": "pods.eks.amazonaws.com"},
                        }
                    )
                ]
            },
        },
    )
