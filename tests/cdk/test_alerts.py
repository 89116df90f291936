"""Alertmanager's way out: the `alerts` SNS topic, Alertmanager's permission to publish, its config."""

from __future__ import annotations

import pytest
import yaml
from aws_cdk.assertions import Capture, Match

from cdk.alerts import ALERTMANAGER_CONFIG_SECRET, ALERTMANAGER_SERVICE_ACCOUNT, MONITORING_NAMESPACE
from tests.cdk.test_eks import manifest
from tests.infra import REPO

pytestmark = pytest.mark.infra


def test_alerts_topic_is_encrypted_with_a_rotated_key_and_tls_only(synth) -> None:
    template = synth.template("Eks")
    key = Capture()
    template.has_resource_properties(
        "AWS::SNS::Topic", {"DisplayName": Match.string_like_regexp("alerts$"), "KmsMasterKeyId": key}
    )
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})]
                )
            }
        },
    )
    assert "Fn::GetAtt" in key.as_object()
    template.has_resource_properties(
        "AWS::KMS::Key", {"EnableKeyRotation": True, "Description": Match.string_like_regexp("alerts topic")}
    )


def test_alertmanager_service_account_may_publish_to_the_topic(synth) -> None:
    template = synth.template("Eks")
    template.has_resource_properties(
        "AWS::EKS::PodIdentityAssociation",
        {"Namespace": MONITORING_NAMESPACE, "ServiceAccount": ALERTMANAGER_SERVICE_ACCOUNT},
    )
    template.has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Action": "sns:Publish", "Effect": "Allow", "Resource": {"Ref": Match.any_value()}}
                        )
                    ]
                )
            }
        },
    )


def test_alertmanager_config_routes_to_the_topic_with_sigv4(synth) -> None:
    secret = manifest(synth, "Secret", ALERTMANAGER_CONFIG_SECRET)
    config = yaml.safe_load(secret["stringData"]["alertmanager.yaml"])
    receivers = {r["name"]: r for r in config["receivers"]}

    assert secret["metadata"]["namespace"] == MONITORING_NAMESPACE
    assert config["route"]["receiver"] == "sns"
    (sns_config,) = receivers["sns"]["sns_configs"]
    assert sns_config["topic_arn"] == "<token>" or sns_config["topic_arn"].startswith("arn:")
    assert sns_config["sigv4"] == {"region": synth.config.region}


def test_the_chart_reads_the_config_secret_cdk_writes() -> None:
    app = yaml.safe_load((REPO / "eks_services/argocd/apps/kube-prometheus-stack.yaml").read_text())
    spec = app["spec"]["source"]["helm"]["valuesObject"]["alertmanager"]["alertmanagerSpec"]

    assert spec["configSecret"] == ALERTMANAGER_CONFIG_SECRET
