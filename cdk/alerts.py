"""Where Prometheus's alerts go: Alertmanager (kube-prometheus-stack) publishes them to an SNS topic."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import RemovalPolicy
from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from cdk.eks import pod_identity_role

MONITORING_NAMESPACE = "monitoring"
# kube-prometheus-stack's Alertmanager service account for the release name the ArgoCD app sets
# (eks_services/argocd/apps/kube-prometheus-stack.yaml).
ALERTMANAGER_SERVICE_ACCOUNT = "kube-prometheus-stack-alertmanager"
# The Secret the operator reads Alertmanager's configuration from: `alertmanager.alertmanagerSpec.configSecret`.
ALERTMANAGER_CONFIG_SECRET = "alertmanager-cloudshop"  # noqa: S105 - a Secret object's name, not a secret


def alertmanager_config(*, topic_arn: str, region: str) -> dict[str, Any]:
    """Every alert to the SNS topic, grouped per alert and service; the chart's always-firing
    `Watchdog` (a dead man's switch for an external checker) and `InfoInhibitor` go nowhere."""
    return {
        "route": {
            "receiver": "sns",
            "group_by": ["alertname", "service", "namespace"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [{"receiver": "null", "matchers": ['alertname=~"Watchdog|InfoInhibitor"']}],
        },
        "receivers": [
            {"name": "null"},
            {
                "name": "sns",
                "sns_configs": [
                    {
                        "topic_arn": topic_arn,
                        "sigv4": {"region": region},
                        "subject": "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
                        "send_resolved": True,
                    }
                ],
            },
        ],
    }


class AlertRouting(Construct):
    """The `alerts` topic (KMS-encrypted, TLS only), a Pod Identity role letting Alertmanager's service
    account publish to it, and the Alertmanager configuration Secret naming the topic."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        name: str,
        cluster: eks.Cluster,
        region: str,
        pod_identity_agent: Construct,
        alert_email: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "AlertsKey",
            description=f"{name} alerts topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.topic = sns.Topic(
            self,
            "AlertsTopic",
            topic_name=f"{name}alerts",
            display_name=f"{name} alerts",
            master_key=self.key,
            enforce_ssl=True,
        )
        if alert_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alert_email))

        self.role = pod_identity_role(
            self,
            "Alertmanager",
            cluster=cluster,
            pod_identity_agent=pod_identity_agent,
            namespace=MONITORING_NAMESPACE,
            service_account=ALERTMANAGER_SERVICE_ACCOUNT,
        )
        # Not `topic.grant_publish`: its `kms:GenerateDataKey*` wildcard is a cdk-nag IAM5 finding; SNS
        # needs exactly these two key actions to publish to an encrypted topic.
        self.role.add_to_policy(iam.PolicyStatement(actions=["sns:Publish"], resources=[self.topic.topic_arn]))
        self.role.add_to_policy(
            iam.PolicyStatement(actions=["kms:GenerateDataKey", "kms:Decrypt"], resources=[self.key.key_arn])
        )

        config = alertmanager_config(topic_arn=self.topic.topic_arn, region=region)
        # The namespace comes first: CDK applies this before ArgoCD has synced the monitoring apps.
        self.config_manifest = cluster.add_manifest(
            "AlertmanagerConfig",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": MONITORING_NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": ALERTMANAGER_CONFIG_SECRET, "namespace": MONITORING_NAMESPACE},
                "type": "Opaque",
                # JSON is YAML: Alertmanager reads this key as its alertmanager.yaml.
                "stringData": {"alertmanager.yaml": json.dumps(config, indent=2)},
            },
        )
