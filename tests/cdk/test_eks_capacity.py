"""Node capacity: in every CDK environment, every pod the cluster runs fits on the node group CDK
synthesises, with each workload at its HPA maximum (and a rollout's surge on top).

There is no cluster autoscaler (eks_services/k8s/README.md says why), so the managed node group is
fixed at `DeploymentConfig.node_count` nodes. CDK never runs kustomize: this test does. For each
environment it follows the preset's ArgoCD root to what the cluster runs, and adds up:

- the services: the rendered overlay's Deployments at their HPA `maxReplicas`, plus the pods a
  rolling update surges (`maxSurge`), with the pods' requests as rendered;
- the monitoring stack: the pods each chart runs with our values, at the requests declared in the
  Applications' `valuesObject` (kube-prometheus-stack, Loki; Alloy and node-exporter once per node);
- ArgoCD and the AWS Load Balancer Controller, at the requests CDK gives their Helm charts;
- the kube-system pods EKS runs (`SYSTEM_PODS`, `SYSTEM_DAEMONS`, at their published defaults).

It packs them (tests/cdk/capacity.py) onto the synthesised group: instance type, node count, the
subnets' zones, and the allocatable CPU and memory an EKS AL2023 node offers. The group must hold
everything with one node to spare, and be no larger than that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App

from cdk.config import EnvironmentName, preset
from cdk.deployment import build_deployment
from tests.cdk.capacity import (
    INSTANCES,
    MIB,
    Pod,
    Resources,
    allocatable,
    kube_reserved_cpu,
    kube_reserved_memory,
    millicores,
    nodes_needed,
    pack,
    pod_requests,
    requests,
)
from tests.cdk.conftest import REPO
from tests.cdk.test_eks import render
from tests.cdk.test_gitops_contract import ENVIRONMENTS, gitops
from tests.infra import find

pytestmark = pytest.mark.infra

# One node more than the packing needs: the scheduler spreads pods rather than bin-packing them, and
# a node lost at peak must not leave the services' pods pending until its replacement joins.
SPARE_NODES = 1
ZONE = "topology.kubernetes.io/zone"


@dataclass(frozen=True)
class SystemPod:
    name: str
    replicas: int
    needs: Resources
    source: str


# kube-system pods that EKS and its add-ons run, at the requests they ship with (none is ours to set).
SYSTEM_PODS = (
    SystemPod("coredns", 2, Resources(100, 70 * MIB), "EKS's CoreDNS Deployment: 2 replicas, 100m / 70Mi"),
    SystemPod(
        "metrics-server",
        2,
        Resources(100, 200 * MIB),
        "metrics-server chart: 100m / 200Mi; counted at 2 replicas, the most the EKS add-on runs by default",
    ),
    SystemPod(
        "ebs-csi-controller",
        2,
        Resources(6 * 10, 6 * 40 * MIB),
        "aws-ebs-csi-driver chart: 2 replicas of 6 containers (plugin, provisioner, attacher, snapshotter,"
        " resizer, liveness probe), each 10m / 40Mi (the sidecars default to the controller's requests)",
    ),
)
SYSTEM_DAEMONS = (
    SystemPod("kube-proxy", 1, Resources(100, 0), "EKS's kube-proxy DaemonSet: 100m CPU"),
    SystemPod(
        "aws-node", 1, Resources(2 * 25, 0), "aws-vpc-cni chart: aws-node and the network policy agent, 25m each"
    ),
    SystemPod(
        "ebs-csi-node",
        1,
        Resources(3 * 10, 3 * 40 * MIB),
        "aws-ebs-csi-driver chart: plugin, node-driver-registrar, liveness probe, each 10m / 40Mi",
    ),
    SystemPod("eks-pod-identity-agent", 1, Resources(), "eks-pod-identity-agent chart: no requests"),
)


@dataclass(frozen=True)
class ChartPod:
    """A pod a chart runs with our values: where each container's `resources` and the replica count
    are in the Application's `valuesObject`, or that it runs on every node."""

    name: str
    containers: tuple[tuple[str, ...], ...]
    replicas: tuple[str, ...] | None = None
    per_node: bool = False


PROMETHEUS_RELOADER = ("prometheusOperator", "prometheusConfigReloader", "resources")
GRAFANA_SIDECAR = ("grafana", "sidecar", "resources")
# What each chart of eks_services/argocd/apps runs with the values there. The admission-webhook and
# test hooks are short-lived Jobs and left out; a chart missing here fails
# `test_every_chart_the_cluster_runs_is_accounted_for`.
CHART_PODS: dict[str, tuple[ChartPod, ...]] = {
    "kube-prometheus-stack": (
        ChartPod(
            "prometheus",
            (("prometheus", "prometheusSpec", "resources"), PROMETHEUS_RELOADER),
            replicas=("prometheus", "prometheusSpec", "replicas"),
        ),
        ChartPod(
            "alertmanager",
            (("alertmanager", "alertmanagerSpec", "resources"), PROMETHEUS_RELOADER),
            replicas=("alertmanager", "alertmanagerSpec", "replicas"),
        ),
        ChartPod(
            "grafana", (("grafana", "resources"), GRAFANA_SIDECAR, GRAFANA_SIDECAR), replicas=("grafana", "replicas")
        ),
        ChartPod("prometheus-operator", (("prometheusOperator", "resources"),)),
        ChartPod(
            "kube-state-metrics", (("kube-state-metrics", "resources"),), replicas=("kube-state-metrics", "replicas")
        ),
        ChartPod("node-exporter", (("prometheus-node-exporter", "resources"),), per_node=True),
    ),
    "loki": (
        ChartPod(
            "loki", (("singleBinary", "resources"), ("sidecar", "resources")), replicas=("singleBinary", "replicas")
        ),
    ),
    "alloy": (ChartPod("alloy", (("alloy", "resources"), ("configReloader", "resources")), per_node=True),),
}
# The argo-cd chart's components that run with CDK's values (dex is off).
ARGOCD_COMPONENTS = ("controller", "repoServer", "server", "redis", "applicationSet", "notifications")
# aws-load-balancer-controller chart default.
ALB_CONTROLLER_REPLICAS = 2


@dataclass(frozen=True)
class NodeGroup:
    """The managed node group as synthesised."""

    instance_type: str
    min_size: int
    desired_size: int
    max_size: int
    zones: int

    @property
    def allocatable(self) -> Resources:
        return allocatable(INSTANCES[self.instance_type])


@dataclass(frozen=True)
class Demand:
    pods: list[Pod]
    daemons: list[Resources]


def dig(values: Mapping[str, Any], path: Sequence[str]) -> Any:
    found: Any = values
    for key in path:
        if not isinstance(found, Mapping) or key not in found:
            return None
        found = found[key]
    return found


def surge(deployment: Mapping[str, Any], replicas: int) -> int:
    """The extra pods a rolling update of `replicas` pods starts (`maxSurge`, default 25%)."""
    strategy = deployment["spec"].get("strategy", {})
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return 0
    max_surge = strategy.get("rollingUpdate", {}).get("maxSurge", "25%")
    if isinstance(max_surge, str) and max_surge.endswith("%"):
        return math.ceil(replicas * int(max_surge[:-1]) / 100)
    return int(max_surge)


def zone_spread(spec: Mapping[str, Any]) -> int | None:
    """The `maxSkew` of a hard (`DoNotSchedule`) spread over zones, if the pod has one."""
    for constraint in spec.get("topologySpreadConstraints", []):
        if constraint["topologyKey"] == ZONE and constraint.get("whenUnsatisfiable") == "DoNotSchedule":
            return int(constraint["maxSkew"])
    return None


def overlay_demand(objects: list[dict[str, Any]]) -> Demand:
    """The services as rendered: Deployments at their HPA maximum plus a rollout's surge."""
    maxima = {
        h["spec"]["scaleTargetRef"]["name"]: int(h["spec"]["maxReplicas"])
        for h in find(objects, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    }
    pods: list[Pod] = []
    daemons = [pod_requests(d["spec"]["template"]["spec"]) for d in find(objects, "DaemonSet")]
    for kind in ("Deployment", "StatefulSet"):
        for workload in find(objects, kind):
            name = workload["metadata"]["name"]
            spec = workload["spec"]["template"]["spec"]
            replicas = maxima.get(name, int(workload["spec"].get("replicas", 1)))
            count = replicas + (surge(workload, replicas) if kind == "Deployment" else 0)
            skew = zone_spread(spec)
            group = f"{kind}/{name}" if skew is not None else None
            pods += [Pod(f"{name}-{i}", pod_requests(spec), group, skew or 1) for i in range(count)]
    return Demand(pods, daemons)


def chart_demand(application: Mapping[str, Any]) -> Demand:
    """The pods a chart Application runs, at the requests in its `valuesObject`."""
    source = application["spec"]["source"]
    values = source["helm"]["valuesObject"]
    pods: list[Pod] = []
    daemons: list[Resources] = []
    for chart_pod in CHART_PODS[source["chart"]]:
        needs = sum((requests(dig(values, path)) for path in chart_pod.containers), Resources(pods=1))
        if chart_pod.per_node:
            daemons.append(needs)
            continue
        replicas = int(dig(values, chart_pod.replicas) or 1) if chart_pod.replicas else 1
        pods += [Pod(f"{chart_pod.name}-{i}", needs) for i in range(replicas)]
    return Demand(pods, daemons)


def helm_values(template: Mapping[str, Any], chart: str) -> dict[str, Any]:
    (chart_resource,) = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "Custom::AWSCDK-EKS-HelmChart" and r["Properties"]["Chart"] == chart
    ]
    return dict(json.loads(render(chart_resource.get("Values", "{}"))))


def cdk_chart_demand(template: Mapping[str, Any]) -> Demand:
    """ArgoCD and the AWS Load Balancer Controller, installed by CDK with these values."""
    argocd = helm_values(template, "argo-cd")
    assert argocd["dex"]["enabled"] is False, "dex runs: count it"
    pods = [
        Pod(f"argocd-{component}-{i}", requests(dig(argocd, (component, "resources"))) + Resources(pods=1))
        for component in ARGOCD_COMPONENTS
        for i in range(int(dig(argocd, (component, "replicas")) or 1))
    ]
    alb = helm_values(template, "aws-load-balancer-controller")
    pods += [
        Pod(f"aws-load-balancer-controller-{i}", requests(alb.get("resources")) + Resources(pods=1))
        for i in range(int(alb.get("replicaCount", ALB_CONTROLLER_REPLICAS)))
    ]
    return Demand(pods, [])


def system_demand() -> Demand:
    pods = [Pod(f"{s.name}-{i}", s.needs + Resources(pods=1)) for s in SYSTEM_PODS for i in range(s.replicas)]
    return Demand(pods, [s.needs + Resources(pods=1) for s in SYSTEM_DAEMONS])


def cluster_demand(environment: EnvironmentName, template: Mapping[str, Any]) -> Demand:
    view = gitops(environment)
    parts = [overlay_demand(view["objects"]), cdk_chart_demand(template), system_demand()]
    parts += [chart_demand(a) for a in find(view["children"], "Application") if "chart" in a["spec"]["source"]]
    return Demand([p for d in parts for p in d.pods], [r for d in parts for r in d.daemons])


def node_group(template: Mapping[str, Any]) -> NodeGroup:
    (group,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::EKS::Nodegroup"]
    (instance_type,) = group["InstanceTypes"]
    scaling = group["ScalingConfig"]
    return NodeGroup(
        instance_type=instance_type,
        min_size=scaling["MinSize"],
        desired_size=scaling["DesiredSize"],
        max_size=scaling["MaxSize"],
        zones=len(group["Subnets"]),
    )


@pytest.fixture(scope="module")
def eks_templates(synth, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The Eks template of each CDK environment, synthesised as app.py does (dev is the session's)."""
    from cloudshop.build import prepare, prepare_storefront

    templates = {synth.config.environment: synth.templates["Eks"]}
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    build = prepare(tmp_path_factory.mktemp("capacity-build"), allow_placeholder=True)
    storefront = prepare_storefront(tmp_path_factory.mktemp("capacity-storefront"), allow_placeholder=True)
    for environment in ENVIRONMENTS:
        if environment in templates:
            continue
        app = App(outdir=str(tmp_path_factory.mktemp(f"cdk.out.{environment}")), context=context)
        config = preset(environment)
        build_deployment(app, config=config, build=build, storefront=storefront)
        assembly = app.synth()
        path = Path(assembly.directory) / f"{config.stack_prefix}-Eks.template.json"
        templates[environment] = json.loads(path.read_text())
    return templates


def report(demand: Demand, group: NodeGroup, nodes: int) -> str:
    per_node = sum(demand.daemons, Resources())
    return (
        f"{len(demand.pods)} pods ({sum((p.needs for p in demand.pods), Resources())}) plus {len(demand.daemons)}"
        f" per node ({per_node}) on {nodes} x {group.instance_type} ({group.allocatable} allocatable each)"
    )


def test_an_al2023_m6i_large_offers_pods_1930m_and_6903mi() -> None:
    node = allocatable(INSTANCES["m6i.large"])

    assert kube_reserved_cpu(2) == 70  # 6% of the first core + 1% of the second
    assert kube_reserved_memory(29) == (11 * 29 + 255) * MIB == 574 * MIB
    assert (node.cpu, node.memory // MIB, node.pods) == (1930, 6903, 29)


def test_a_pod_never_spans_nodes() -> None:
    node = Resources(cpu=1000, memory=1024 * MIB, pods=10)
    pods = [Pod(f"p{i}", Resources(600, 100 * MIB, 1)) for i in range(3)]

    _, unplaced = pack(pods, daemons=[], nodes=2, zones=1, node=node)

    # 1800m of requests, 2000m of nodes: the third pod still finds no node with 600m free.
    assert [p.name for p in unplaced] == ["p2"]
    assert nodes_needed(pods, daemons=[], zones=1, node=node) == 3


def test_daemonsets_take_their_share_of_every_node() -> None:
    node = Resources(cpu=1000, memory=1024 * MIB, pods=10)
    pods = [Pod("p", Resources(900, 100 * MIB, 1))]

    assert pack(pods, daemons=[Resources(200, 0, 1)], nodes=3, zones=1, node=node)[1] == pods


def test_a_hard_zone_spread_keeps_its_skew_even_when_another_zone_has_room() -> None:
    node = Resources(cpu=1000, memory=1024 * MIB, pods=10)
    spread = [Pod(f"s{i}", Resources(500, 0, 1), spread="web") for i in range(6)]
    # Three nodes in three zones: two spread pods per zone fit; a seventh would need a second node
    # in one zone, and the skew forbids piling it on.
    assert not pack(spread, daemons=[], nodes=3, zones=3, node=node)[1]
    more = [*spread, Pod("s6", Resources(500, 0, 1), spread="web")]
    assert [p.name for p in pack(more, daemons=[], nodes=3, zones=3, node=node)[1]] == ["s6"]
    assert not pack(more, daemons=[], nodes=4, zones=3, node=node)[1]


def test_requests_come_from_quantities_as_kubernetes_writes_them() -> None:
    assert (millicores("500m"), millicores("2"), millicores("0.25")) == (500, 2000, 250)
    assert requests({"requests": {"cpu": "50m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}}) == Resources(
        50, 1024 * MIB
    )
    assert requests({"limits": {"memory": "1Gi"}}) == Resources()
    spec = {
        "initContainers": [{"resources": {"requests": {"cpu": "1"}}}],
        "containers": [{"resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}] * 2,
    }
    assert pod_requests(spec) == Resources(1000, 128 * MIB, 1)


def test_a_rollout_surges_a_quarter_of_the_replicas_rounded_up() -> None:
    deployment = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}}}

    assert (surge(deployment, 10), surge(deployment, 8), surge(deployment, 2)) == (3, 2, 1)
    assert surge({"spec": {"strategy": {"type": "Recreate"}}}, 10) == 0


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_chart_the_cluster_runs_is_accounted_for_with_declared_requests(environment: EnvironmentName) -> None:
    applications = [a for a in find(gitops(environment)["children"], "Application") if "chart" in a["spec"]["source"]]

    assert {a["spec"]["source"]["chart"] for a in applications} == set(CHART_PODS)
    for application in applications:
        values = application["spec"]["source"]["helm"]["valuesObject"]
        for chart_pod in CHART_PODS[application["spec"]["source"]["chart"]]:
            for path in chart_pod.containers:
                declared = requests(dig(values, path))
                assert declared.cpu > 0 and declared.memory > 0, f"{'.'.join(path)} declares no requests"


def test_argocd_and_the_load_balancer_controller_declare_their_requests(eks_templates) -> None:
    for environment, template in eks_templates.items():
        for pod in cdk_chart_demand(template).pods:
            assert pod.needs.cpu > 0 and pod.needs.memory > 0, f"{environment}: {pod.name} declares no requests"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_node_group_holds_every_pod_at_peak_with_a_node_to_spare(
    environment: EnvironmentName, eks_templates
) -> None:
    template = eks_templates[environment]
    group = node_group(template)
    demand = cluster_demand(environment, template)
    serving = group.desired_size - SPARE_NODES

    _, unplaced = pack(demand.pods, daemons=demand.daemons, nodes=serving, zones=group.zones, node=group.allocatable)

    needed = nodes_needed(demand.pods, daemons=demand.daemons, zones=group.zones, node=group.allocatable)
    assert not unplaced, (
        f"{environment}: {report(demand, group, serving)} leaves {len(unplaced)} pods pending"
        f" ({', '.join(sorted(p.name for p in unplaced))}); the packing needs {needed} nodes,"
        f" so node_count must be {needed and needed + SPARE_NODES}"
    )
    assert group.min_size == group.desired_size == group.max_size, "no autoscaler: the group is fixed"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_the_node_group_is_no_larger_than_the_peak_needs(environment: EnvironmentName, eks_templates) -> None:
    template = eks_templates[environment]
    group = node_group(template)
    demand = cluster_demand(environment, template)

    needed = nodes_needed(demand.pods, daemons=demand.daemons, zones=group.zones, node=group.allocatable)

    assert needed is not None
    assert group.desired_size <= needed + SPARE_NODES, (
        f"{environment}: {report(demand, group, needed)} fits; node_count can be {needed + SPARE_NODES}"
    )
