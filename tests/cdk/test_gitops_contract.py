"""The contract between the CDK app and the GitOps tree, read from both sides so they cannot drift.

For every CDK environment the chain is followed as the cluster follows it: the preset's ArgoCD root
(`eks_services/argocd/bootstrap/<name>.yaml`, which CDK applies) -> `argocd/envs/<x>` -> the
`cloudshop-services` Application -> its kustomize overlay, rendered. What the rendered objects say is
then compared with what CDK builds: namespace and ServiceAccounts (Pod Identity), Services (the
TargetGroupBindings), images (ECR repositories), the settings the pods get (git ConfigMap + CDK's
`cloudshop-aws`), the gateway subnets and VPC CIDR in the NetworkPolicies, and the repository the
ArgoCD Applications sync from.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from pathlib import Path
from typing import Any, get_args

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_logs as logs

from cdk.access import SERVICE_ACCESS
from cdk.alerts import MONITORING_NAMESPACE
from cdk.config import DeploymentConfig, EnvironmentName, preset
from cdk.eks import AWS_SETTINGS_CONFIGMAP, argocd_bootstrap, workload_settings_configmap
from cdk.network import Network
from cdk.service_ingress import SERVICE_PORT
from cdk.streaming import IAM_PORT
from cloudshop.estate import ESTATE, WORKLOADS, Workload
from cloudshop.settings import Settings
from tests.cdk.test_access import touched
from tests.cdk.test_eks import manifest, manifests
from tests.infra import REPO, find, kustomize_build, one

pytestmark = pytest.mark.infra

ENVIRONMENTS: tuple[EnvironmentName, ...] = get_args(EnvironmentName)
SERVICE_URL_FIELDS = {f"{w.name}_service_url": w for w in WORKLOADS}


def application_path(documents: list[dict[str, Any]], name: str) -> str:
    return str(one(documents, "Application", name)["spec"]["source"]["path"])


@functools.cache
def gitops(environment: EnvironmentName) -> dict[str, Any]:
    """What the cluster of a CDK environment runs: root documents, child Applications, overlay objects."""
    config = preset(environment)
    root = argocd_bootstrap(config.argocd_bootstrap)
    children = kustomize_build(application_path(root, "cloudshop-root"))
    overlay = application_path(children, "cloudshop-services")
    return {
        "config": config,
        "root": root,
        "children": children,
        "overlay": overlay,
        "objects": kustomize_build(overlay),
    }


@functools.cache
def gateway_subnets(environment: EnvironmentName) -> tuple[list[str], str]:
    """(gateway subnet CIDRs, VPC CIDR) as `cdk/network.py` lays out the VPC of this environment."""
    config: DeploymentConfig = preset(environment)
    stack = Stack(App(), "Probe")
    network = Network(
        stack,
        "Network",
        cidr=config.vpc_cidr,
        availability_zones=config.azs,
        nat_gateways=config.nat_gateways,
        log_retention=logs.RetentionDays.ONE_MONTH,
    )
    subnets = network.vpc.select_subnets(subnet_group_name="gateway").subnets
    return [s.ipv4_cidr_block for s in subnets], config.vpc_cidr


def container(objects: list[dict[str, Any]], workload: Workload) -> dict[str, Any]:
    (only,) = one(objects, "Deployment", workload.name)["spec"]["template"]["spec"]["containers"]
    return only


def git_config(objects: list[dict[str, Any]]) -> dict[str, str]:
    (config_map,) = [m for m in find(objects, "ConfigMap") if m["metadata"]["name"].startswith("cloudshop-config")]
    return dict(config_map["data"])


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_cdk_environment_deploys_an_overlay_through_its_argocd_root(environment: EnvironmentName) -> None:
    view = gitops(environment)
    root = one(view["root"], "Application", "cloudshop-root")

    assert (REPO / view["overlay"] / "kustomization.yaml").is_file()
    assert view["overlay"].startswith("eks_services/k8s/overlays/")
    assert root["metadata"]["namespace"] == "argocd"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_argocd_application_syncs_the_repository_and_revision_of_its_root(environment: EnvironmentName) -> None:
    view = gitops(environment)
    source = one(view["root"], "Application", "cloudshop-root")["spec"]["source"]
    git_sources = [a["spec"]["source"] for a in find(view["children"], "Application") if "path" in a["spec"]["source"]]

    assert git_sources
    for child in git_sources:
        assert (child["repoURL"], child["targetRevision"]) == (source["repoURL"], source["targetRevision"])
    for project in find(view["root"], "AppProject") + find(view["children"], "AppProject"):
        assert source["repoURL"] in project["spec"]["sourceRepos"], project["metadata"]["name"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_pods_run_in_the_namespace_and_as_the_service_account_pod_identity_binds(
    synth, environment: EnvironmentName, workload: Workload
) -> None:
    objects = gitops(environment)["objects"]
    associations = {
        (r["Properties"]["Namespace"], r["Properties"]["ServiceAccount"])
        for r in synth.resources("Eks", "AWS::EKS::PodIdentityAssociation").values()
    }
    deployment = one(objects, "Deployment", workload.name)
    account = one(objects, "ServiceAccount", workload.service_account)
    services = one(gitops(environment)["children"], "Application", "cloudshop-services")["spec"]

    assert (workload.namespace, workload.service_account) in associations
    assert deployment["metadata"]["namespace"] == account["metadata"]["namespace"] == workload.namespace
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == workload.service_account
    assert services["destination"]["namespace"] == workload.namespace
    # `monitoring` too: CDK writes Alertmanager's config Secret there (cdk/alerts.py).
    assert {m["metadata"]["name"] for m in manifests(synth) if m["kind"] == "Namespace"} == {
        *(w.namespace for w in WORKLOADS),
        MONITORING_NAMESPACE,
    }


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_the_target_group_binding_finds_the_service_and_its_pods(
    synth, environment: EnvironmentName, workload: Workload
) -> None:
    objects = gitops(environment)["objects"]
    binding = manifest(synth, "TargetGroupBinding", workload.name)
    service = one(objects, "Service", binding["spec"]["serviceRef"]["name"])
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == binding["spec"]["serviceRef"]["port"]]
    (container_port,) = [p for p in container(objects, workload)["ports"] if p["name"] == port["targetPort"]]

    assert binding["metadata"]["namespace"] == service["metadata"]["namespace"]
    assert port["port"] == SERVICE_PORT == 80
    assert container_port["containerPort"] == workload.port == 8080
    synth.template("Eks").has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup", {"Port": workload.port, "TargetType": "ip"}
    )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_images_come_from_the_ecr_repository_cdk_creates(
    synth, environment: EnvironmentName, workload: Workload
) -> None:
    repositories = {r["Properties"]["RepositoryName"] for r in synth.resources("Eks", "AWS::ECR::Repository").values()}
    image = container(gitops(environment)["objects"], workload)["image"]
    match = re.fullmatch(r"\d{12}\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<repo>[^:@]+)[:@].*", image)

    assert match, image
    assert match["repo"] in repositories
    assert match["repo"] == f"cloudshop/{workload.name}"
    assert match["region"] == gitops(environment)["config"].region


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_network_policies_admit_the_gateway_subnets_and_reach_msk_in_the_vpc(environment: EnvironmentName) -> None:
    objects = gitops(environment)["objects"]
    subnets, vpc = gateway_subnets(environment)
    gateway = one(objects, "NetworkPolicy", "allow-gateway-ingress")["spec"]["ingress"][0]["from"]
    (msk_rule,) = one(objects, "NetworkPolicy", "allow-msk-egress")["spec"]["egress"]

    assert len(subnets) == 3
    assert sorted(p["ipBlock"]["cidr"] for p in gateway) == sorted(subnets)
    assert [p["ipBlock"]["cidr"] for p in msk_rule["to"]] == [vpc]
    assert msk_rule["ports"] == [{"protocol": "TCP", "port": IAM_PORT}]
    assert all(ipaddress.ip_network(s).subnet_of(ipaddress.ip_network(vpc)) for s in subnets)  # type: ignore[arg-type]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_pods_read_the_cdk_settings_after_the_git_settings(environment: EnvironmentName, workload: Workload) -> None:
    sources = container(gitops(environment)["objects"], workload)["envFrom"]

    assert [s["configMapRef"]["name"].startswith("cloudshop-config") for s in sources] == [True, False, False]
    assert sources[1] == {"configMapRef": {"name": AWS_SETTINGS_CONFIGMAP, "optional": True}}
    # Last, what this workload alone may see (the ARNs of its service-token secrets).
    assert sources[2] == {"configMapRef": {"name": workload_settings_configmap(workload.name), "optional": True}}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_git_and_cdk_agree_on_the_settings_both_set(synth, environment: EnvironmentName) -> None:
    git = git_config(gitops(environment)["objects"])
    cdk = manifest(synth, "ConfigMap", AWS_SETTINGS_CONFIGMAP)["data"]
    shared = set(git) & set(cdk)

    # ENVIRONMENT is only a fallback in git (the demo overlay runs as CDK's `staging`).
    assert shared <= {"ENVIRONMENT", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM"}
    for name in shared - {"ENVIRONMENT"}:
        assert git[name] == cdk[name], name
    Settings.model_validate({k.lower(): v for k, v in git.items()})


@pytest.mark.parametrize("environment", ENVIRONMENTS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda w: w.name)
def test_pods_get_every_setting_their_code_reads(synth, environment: EnvironmentName, workload: Workload) -> None:
    objects = gitops(environment)["objects"]
    uses = touched(workload.name)
    needed = {"SERVICE_NAME", "AWS_REGION", "JWT_PUBLIC_KEY"}
    needed |= {ESTATE.table(t).settings_field.upper() for t in uses.tables}
    needed |= {ESTATE.bucket(b).settings_field.upper() for b in uses.buckets}
    needed |= {ESTATE.queue(q).settings_field.upper() for q in uses.queues}
    if uses.internal_token:
        needed.add("INTERNAL_TOKEN_SECRET_ARNS")
    if uses.topics:
        needed |= {"KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM"}
    source = "\n".join(p.read_text() for p in (REPO / "eks_services" / workload.name).rglob("*.py"))
    callees = [
        field for field in Settings.model_fields if field.endswith("_service_url") and f"settings.{field}" in source
    ]
    needed |= {field.upper() for field in callees}
    git = git_config(objects)
    cdk = manifest(synth, "ConfigMap", AWS_SETTINGS_CONFIGMAP)["data"]
    own = manifest(synth, "ConfigMap", workload_settings_configmap(workload.name))["data"]
    env = {e["name"] for e in container(objects, workload)["env"]}

    assert needed <= set(git) | set(cdk) | set(own) | env
    assert SERVICE_ACCESS[workload.name].internal_token == uses.internal_token
    for field in callees:
        callee = SERVICE_URL_FIELDS.get(field)
        if callee is not None:  # another pod: its Service, in-cluster
            assert git[field.upper()] == f"http://{callee.name}.{callee.namespace}.svc.cluster.local"
        else:  # a Lambda: through the HTTP API
            assert cdk[field.upper()] == "<token>"  # the ApiEndpoint, known at deploy time


def test_the_ingress_to_the_pods_is_cdks_alb_alone() -> None:
    for environment in ENVIRONMENTS:
        assert not find(gitops(environment)["objects"], "Ingress")
    assert not list((REPO / "eks_services" / "k8s").rglob("ingress.yaml"))
    assert Path(REPO / "cdk" / "service_ingress.py").is_file()
