"""EksCore and PrivateIngress: cluster, a fixed node group, the VPC CNI enforcing NetworkPolicies, EBS
storage, Pod Identity, ECR, ArgoCD, and the ALB that the gateway's VPC link reaches the services through.
(Whether the node group holds what the cluster runs: test_eks_capacity.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from aws_cdk.assertions import Capture, Match

from cdk.eks import ARGOCD_BOOTSTRAP_DIR, EBS_CSI_CONTROLLER_SERVICE_ACCOUNT, STORAGE_CLASS, workload_settings_configmap
from cdk.service_ingress import listener_port
from cdk.settings_env import shared_pod_settings
from cloudshop.estate import ESTATE, WORKLOADS, Workload
from cloudshop.settings import Settings, resource_settings
from tests.cdk.test_functions import settings_names
from tests.infra import ENVIRONMENTS, kustomize_build

pytestmark = pytest.mark.infra


def render(value: Any) -> str:
    """A template string with every deploy-time value replaced by `<token>` (Fn::Join flattened)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(render(part) for part in parts)
    return "<token>"


def manifests(synth) -> list[dict[str, Any]]:
    """Every Kubernetes object CDK applies (the Custom::AWSCDK-EKS-KubernetesResource manifests)."""
    objects: list[dict[str, Any]] = []
    for resource in synth.resources("Eks", "Custom::AWSCDK-EKS-KubernetesResource").values():
        objects += json.loads(render(resource["Properties"]["Manifest"]))
    return objects


def manifest(synth, kind: str, name: str) -> dict[str, Any]:
    found = [m for m in manifests(synth) if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(found) == 1, f"no single {kind} {name}"
    return found[0]


def test_cluster_logs_everything_and_encrypts_secrets(synth) -> None:
    synth.template("Eks").has_resource_properties(
        "AWS::EKS::Cluster",
        {
            "Version": synth.config.kubernetes_version,
            "EncryptionConfig": [{"Provider": {"KeyArn": Match.any_value()}, "Resources": ["secrets"]}],
            "Logging": {
                "ClusterLogging": {
                    "EnabledTypes": Match.array_with(
                        [{"Type": t} for t in ("api", "audit", "authenticator", "controllerManager", "scheduler")]
                    )
                }
            },
        },
    )


def addon_id(synth, name: str) -> str:
    (found,) = synth.template("Eks").find_resources("AWS::EKS::Addon", {"Properties": {"AddonName": name}})
    return str(found)


def test_node_group_is_fixed_at_the_environments_node_count(synth) -> None:
    count = synth.config.node_count
    synth.template("Eks").has_resource_properties(
        "AWS::EKS::Nodegroup",
        {
            "ScalingConfig": {"MinSize": count, "DesiredSize": count, "MaxSize": count},
            "InstanceTypes": [synth.config.node_instance_type],
            "AmiType": "AL2023_x86_64_STANDARD",
        },
    )


def test_the_vpc_cni_enforces_network_policies_before_any_node_joins(synth) -> None:
    synth.template("Eks").has_resource_properties(
        "AWS::EKS::Addon",
        {
            "AddonName": "vpc-cni",
            "ConfigurationValues": Match.serialized_json({"enableNetworkPolicy": "true"}),
            # EKS installed a self-managed aws-node with the cluster; the add-on takes it over.
            "ResolveConflicts": "OVERWRITE",
            "PreserveOnDelete": True,
        },
    )
    synth.template("Eks").has_resource(
        "AWS::EKS::Nodegroup", {"DependsOn": Match.array_with([addon_id(synth, "vpc-cni")])}
    )


def test_the_ebs_csi_controller_gets_its_role_by_pod_identity(synth) -> None:
    role = Capture()
    synth.template("Eks").has_resource_properties(
        "AWS::EKS::Addon",
        {
            "AddonName": "aws-ebs-csi-driver",
            "PodIdentityAssociations": [
                {"RoleArn": {"Fn::GetAtt": [role, "Arn"]}, "ServiceAccount": EBS_CSI_CONTROLLER_SERVICE_ACCOUNT}
            ],
        },
    )
    properties = synth.templates["Eks"]["Resources"][role.as_string()]["Properties"]

    assert properties["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Effect": "Allow",
            "Principal": {"Service": "pods.eks.amazonaws.com"},
        }
    ]
    assert [render(arn) for arn in properties["ManagedPolicyArns"]] == [
        "arn:<token>:iam::aws:policy/service-role/AmazonEBSCSIDriverPolicy"
    ]
    assert "Policies" not in properties


def test_the_ebs_csi_driver_starts_once_nodes_and_the_pod_identity_agent_run(synth) -> None:
    (nodegroup,) = synth.resources("Eks", "AWS::EKS::Nodegroup")
    driver = synth.templates["Eks"]["Resources"][addon_id(synth, "aws-ebs-csi-driver")]

    assert {nodegroup, addon_id(synth, "eks-pod-identity-agent")} <= set(driver["DependsOn"])


def test_gp3_is_the_default_storage_class_encrypted_and_bound_where_the_pod_runs(synth) -> None:
    storage_class = manifest(synth, "StorageClass", STORAGE_CLASS)

    assert storage_class["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert storage_class["provisioner"] == "ebs.csi.aws.com"
    assert storage_class["parameters"]["type"] == "gp3"
    assert storage_class["parameters"]["encrypted"] == "true"
    assert storage_class["volumeBindingMode"] == "WaitForFirstConsumer"
    assert storage_class["allowVolumeExpansion"] is True


def test_the_storage_class_is_applied_after_the_ebs_csi_driver(synth) -> None:
    (applied,) = [
        resource
        for resource in synth.resources("Eks", "Custom::AWSCDK-EKS-KubernetesResource").values()
        if any(m["kind"] == "StorageClass" for m in json.loads(render(resource["Properties"]["Manifest"])))
    ]

    assert addon_id(synth, "aws-ebs-csi-driver") in applied["DependsOn"]


def storage_class_names(value: Any) -> Iterator[str]:
    """Every storage class a Helm values tree names (`storageClassName`, or Loki's `storageClass`)."""
    if isinstance(value, dict):
        for key, child in value.items():
            if key in {"storageClassName", "storageClass"} and isinstance(child, str):
                yield child
            else:
                yield from storage_class_names(child)
    elif isinstance(value, list):
        for child in value:
            yield from storage_class_names(child)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_volume_the_argocd_charts_claim_uses_the_storage_class_cdk_applies(environment: str) -> None:
    documents = kustomize_build(f"eks_services/argocd/envs/{environment}")
    applications = [d for d in documents if d["kind"] == "Application"]
    named = [
        name
        for application in applications
        for name in storage_class_names(application["spec"]["source"].get("helm", {}).get("valuesObject", {}))
    ]

    assert named, "Prometheus and Loki keep their data on volumes"
    assert set(named) == {STORAGE_CLASS}


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_workload_service_account_gets_its_role_by_pod_identity(synth, workload: Workload) -> None:
    synth.template("Eks").has_resource_properties(
        "AWS::EKS::PodIdentityAssociation",
        {
            "Namespace": workload.namespace,
            "ServiceAccount": workload.service_account,
            "RoleArn": Match.any_value(),
            "ClusterName": Match.any_value(),
        },
    )
    synth.template("Eks").has_resource_properties(
        "AWS::IAM::Role",
        {
            "Description": f"Pod Identity role of {workload.namespace}/{workload.service_account}",
            "AssumeRolePolicyDocument": {
                "Statement": [
                    Match.object_like(
                        {
                            "Action": ["sts:AssumeRole", "sts:TagSession"],
                            "Principal": {"Service": "pods.eks.amazonaws.com"},
                        }
                    )
                ],
                "Version": "2012-10-17",
            },
        },
    )


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_workload_has_an_immutable_scanned_repository(synth, workload: Workload) -> None:
    synth.template("Eks").has_resource(
        "AWS::ECR::Repository",
        {
            "Properties": Match.object_like(
                {
                    "RepositoryName": f"cloudshop/{workload.name}",
                    "ImageTagMutability": "IMMUTABLE",
                    "ImageScanningConfiguration": {"ScanOnPush": True},
                    "EncryptionConfiguration": {"EncryptionType": "KMS"},
                }
            ),
            "DeletionPolicy": "Retain",
        },
    )


@pytest.mark.parametrize("addon", ["metrics-server", "eks-pod-identity-agent", "vpc-cni", "aws-ebs-csi-driver"])
def test_cluster_addon(synth, addon: str) -> None:
    synth.template("Eks").has_resource_properties("AWS::EKS::Addon", {"AddonName": addon})


def test_argocd_is_installed_by_helm(synth) -> None:
    synth.template("Eks").has_resource_properties(
        "Custom::AWSCDK-EKS-HelmChart",
        {
            "Chart": "argo-cd",
            "Repository": "https://argoproj.github.io/argo-helm",
            "Version": synth.config.argocd_chart_version,
            "Namespace": "argocd",
            "CreateNamespace": True,
        },
    )


def test_argocd_root_is_the_committed_bootstrap(synth) -> None:
    committed = [
        d for d in yaml.safe_load_all((ARGOCD_BOOTSTRAP_DIR / f"{synth.config.argocd_bootstrap}.yaml").read_text()) if d
    ]
    applied = [m for m in manifests(synth) if m.get("kind") in {"Application", "AppProject"}]
    for document in applied:
        # CDK labels what it applies so that it can prune it later; that label is CDK's, not ours.
        labels = document["metadata"].pop("labels", {})
        assert all(key.startswith("aws.cdk.eks/prune-") for key in labels)
    assert applied == committed


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_workload_pods_are_bound_to_an_internal_alb_listener(synth, workload: Workload) -> None:
    index = WORKLOADS.index(workload)
    synth.template("Eks").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {"Port": listener_port(index), "Protocol": "HTTP", "DefaultActions": [Match.object_like({"Type": "forward"})]},
    )
    synth.template("Eks").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        {"Port": workload.port, "Protocol": "HTTP", "TargetType": "ip", "HealthCheckPath": "/healthz"},
    )
    binding = manifest(synth, "TargetGroupBinding", workload.name)
    assert binding["metadata"]["namespace"] == workload.namespace
    assert binding["spec"]["serviceRef"] == {"name": workload.name, "port": 80}
    assert binding["spec"]["targetType"] == "ip"
    assert binding["spec"]["targetGroupARN"] == "<token>"


def test_load_balancer_is_internal_and_logs_access(synth) -> None:
    synth.template("Eks").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::LoadBalancer",
        {
            "Scheme": "internal",
            "LoadBalancerAttributes": Match.array_with(
                [
                    {"Key": "routing.http.drop_invalid_header_fields.enabled", "Value": "true"},
                    {"Key": "access_logs.s3.enabled", "Value": "true"},
                ]
            ),
        },
    )


def test_deploy_time_settings_reach_the_pods_through_a_configmap(synth) -> None:
    data = manifest(synth, "ConfigMap", "cloudshop-aws")["data"]
    for name in (
        "ORDER_EVENTS_QUEUE_URL",
        "PAYMENT_EVENTS_QUEUE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "JWT_PUBLIC_KEY",
        "PRODUCT_SERVICE_URL",
        "AWS_REGION",
        *resource_settings(synth.config.prefix),
    ):
        assert name in data, name
    assert {k: data[k] for k in resource_settings(synth.config.prefix)} == resource_settings(synth.config.prefix)
    assert (data["KAFKA_SECURITY_PROTOCOL"], data["KAFKA_SASL_MECHANISM"]) == ("SASL_SSL", "AWS_MSK_IAM")
    assert float(data["TRACE_SAMPLE_RATIO"]) == synth.config.trace_sample_ratio  # the environment's share
    # Per pod (SERVICE_NAME) or git's choice (LOG_LEVEL); and no pod may find a secret it cannot read.
    assert not {"SERVICE_NAME", "LOG_LEVEL", "JWT_PRIVATE_KEY", "JWT_PRIVATE_KEY_SECRET_ARN"} & set(data)
    assert not {"DATABASE_URL", "DATABASE_SECRET_ARN"} & set(data), "no workload uses SQL"
    # Each workload's service-token secrets are its own (`cloudshop-aws-<workload>`), never shared.
    assert "INTERNAL_TOKEN_SECRET_ARNS" not in data


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_a_pod_finds_the_secrets_of_its_own_token_pairs_and_no_others(synth, workload: Workload) -> None:
    own = manifest(synth, "ConfigMap", workload_settings_configmap(workload.name))["data"]

    assert set(own) == {"INTERNAL_TOKEN_SECRET_ARNS"}
    assert sorted(json.loads(own["INTERNAL_TOKEN_SECRET_ARNS"])) == list(ESTATE.token_pairs_of(workload.name))
    assert own["INTERNAL_TOKEN_SECRET_ARNS"].count("<token>") == len(ESTATE.token_pairs_of(workload.name))


def test_every_configmap_key_is_a_settings_field_and_every_literal_validates(synth) -> None:
    data = manifest(synth, "ConfigMap", "cloudshop-aws")["data"]
    unknown = set(data) - settings_names()
    assert not unknown, f"not Settings fields: {unknown}"
    Settings.model_validate({k.lower(): v for k, v in data.items() if "<token>" not in v})


def test_workloads_of_a_namespace_must_agree_on_their_shared_settings() -> None:
    assert shared_pod_settings({"a": {"X": "1", "SERVICE_NAME": "a"}, "b": {"X": "1", "SERVICE_NAME": "b"}}) == {
        "X": "1"
    }
    with pytest.raises(ValueError, match="differs"):
        shared_pod_settings({"a": {"X": "1"}, "b": {"X": "2"}})
    with pytest.raises(ValueError, match="may not read"):
        shared_pod_settings({"a": {"DATABASE_SECRET_ARN": "arn:db"}, "b": {}})


def test_pods_reach_no_database_they_do_not_use(synth) -> None:
    ingress = synth.resources("Eks", "AWS::EC2::SecurityGroupIngress")
    assert not any(r["Properties"].get("Description") == "EKS pods to PostgreSQL" for r in ingress.values())
    synth.template("Eks").has_resource_properties(
        "AWS::EC2::SecurityGroupIngress", {"Description": "EKS pods to MSK (SASL/IAM)", "FromPort": 9098}
    )
