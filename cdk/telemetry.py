"""Where the pods' spans go and who may read them: the `amazon-cloudwatch-observability` EKS add-on,
whose CloudWatch agent takes the services' OTLP/HTTP spans and writes them to X-Ray, and read-only
access for Grafana (the CloudWatch and X-Ray data sources of the dashboards)."""

from __future__ import annotations

import json

from aws_cdk import aws_eks_v2 as eks
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.eks import pod_identity_role
from cdk.nag import managed_policy, nag

TELEMETRY_ADDON = "amazon-cloudwatch-observability"
# The add-on's agent and its service account (the add-on's documented names); the services send
# OTLP/HTTP to cloudwatch-agent.amazon-cloudwatch:4316 (eks_services/k8s/base/*/deployment.yaml).
COLLECTOR_NAMESPACE = "amazon-cloudwatch"
COLLECTOR_SERVICE_ACCOUNT = "cloudwatch-agent"
# Container logs go to Loki (the logs dashboard): the add-on's Fluent Bit would ship them twice.
TELEMETRY_ADDON_CONFIGURATION = {"containerLogs": {"enabled": False}}
# kube-prometheus-stack's Grafana for the release name the ArgoCD app sets
# (eks_services/argocd/apps/kube-prometheus-stack.yaml).
GRAFANA_NAMESPACE = "monitoring"
GRAFANA_SERVICE_ACCOUNT = "kube-prometheus-stack-grafana"

# X-Ray has no resource-level permissions for these actions: `*` is the only resource IAM accepts.
XRAY_WRITE = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
XRAY_READ = ["xray:BatchGetTraces", "xray:GetTraceSummaries", "xray:GetTraceGraph", "xray:GetServiceGraph"]
# What Grafana's CloudWatch data source needs for metric panels and its function-name variable.
CLOUDWATCH_READ = ["cloudwatch:GetMetricData", "cloudwatch:ListMetrics", "cloudwatch:DescribeAlarms"]
RESOURCE_WILDCARD_REASON = (
    "X-Ray's trace actions and CloudWatch's metric reads support no resource-level permissions (the IAM "
    "service authorization reference lists `*` as their only resource); the role is bound by Pod Identity "
    "to one service account and can only write spans or read metrics and traces."
)


AGENT_POLICY = "CloudWatchAgentServerPolicy"
AGENT_POLICY_REASON = (
    "The CloudWatch agent's AWS-maintained policy: the add-on's agent writes Container Insights metrics "
    "and its own log groups, named by the agent at run time; AWS updates the policy with the agent."
)


class TelemetryAccess(Construct):
    """The CloudWatch observability add-on with its agent's Pod Identity role (X-Ray writes), and
    Grafana's read-only role (CloudWatch metrics and X-Ray traces)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cluster: eks.Cluster,
        pod_identity_agent: Construct,
        nodes: Construct,
    ) -> None:
        super().__init__(scope, construct_id)
        self.collector_role = iam.Role(
            self,
            "CollectorPodRole",
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal("pods.eks.amazonaws.com")),
            description=f"Pod Identity role of {COLLECTOR_NAMESPACE}/{COLLECTOR_SERVICE_ACCOUNT}",
            managed_policies=[iam.ManagedPolicy.from_aws_managed_policy_name(AGENT_POLICY)],
        )
        self.collector_role.add_to_policy(iam.PolicyStatement(actions=XRAY_WRITE, resources=["*"]))
        nag(
            self.collector_role,
            {
                managed_policy(AGENT_POLICY): AGENT_POLICY_REASON,
                "AwsSolutions-IAM5[Resource::*]": RESOURCE_WILDCARD_REASON,
            },
        )
        # The add-on owns the association, so the agent's first pods already get credentials.
        self.addon = eks.CfnAddon(
            self,
            "CloudWatchObservability",
            cluster_name=cluster.cluster_name,
            addon_name=TELEMETRY_ADDON,
            configuration_values=json.dumps(TELEMETRY_ADDON_CONFIGURATION),
            pod_identity_associations=[
                eks.CfnAddon.PodIdentityAssociationProperty(
                    role_arn=self.collector_role.role_arn, service_account=COLLECTOR_SERVICE_ACCOUNT
                )
            ],
        )
        # ACTIVE only once the agent runs: it needs nodes and the Pod Identity agent.
        self.addon.node.add_dependency(nodes, pod_identity_agent)
        self.grafana_role = pod_identity_role(
            self,
            "Grafana",
            cluster=cluster,
            pod_identity_agent=pod_identity_agent,
            namespace=GRAFANA_NAMESPACE,
            service_account=GRAFANA_SERVICE_ACCOUNT,
        )
        self.grafana_role.add_to_policy(iam.PolicyStatement(actions=[*CLOUDWATCH_READ, *XRAY_READ], resources=["*"]))
        nag(self.grafana_role, {"AwsSolutions-IAM5[Resource::*]": RESOURCE_WILDCARD_REASON})
