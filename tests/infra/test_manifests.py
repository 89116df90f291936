"""The Kubernetes manifests as rendered: valid against the Kubernetes schemas, and true to the estate.

Every overlay is built with kustomize and validated offline (kubernetes-validate ships the schemas).
The workloads' scaling bounds, service accounts and ports come from `cloudshop.estate.WORKLOADS`;
the ConfigMap keys are `cloudshop.settings.Settings` fields; what only a deployment knows (names,
queue, brokers, secret ARNs) is left to CDK's `cloudshop-aws` ConfigMap, and
tests/cdk/test_gitops_contract.py checks the two sides together. ArgoCD's objects (CRDs, no schema
offline) are checked structurally.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from cloudshop.estate import WORKLOADS, Workload
from cloudshop.observability import Metrics
from cloudshop.settings import Settings, resource_settings
from tests.infra import ARGOCD, ENVIRONMENTS, K8S, OVERLAYS, REPO, find, kustomize_build, one

pytestmark = pytest.mark.infra

KUBERNETES_VERSION = "1.33"
NAMESPACE = "cloudshop"
DEMO_TARGETS = {"cpu": 15, "memory": 30}
PLACEHOLDER_CIDR = "192.0.2.0/24"
# What git gives the order and payment pods (the rest of the settings contract comes from CDK).
GIT_ENV = {
    "SERVICE_NAME",
    "ENVIRONMENT",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "PAYMENT_SERVICE_URL",
}
# Only a deployment knows these: CDK writes them to the `cloudshop-aws` ConfigMap, git never does.
AWS_SETTINGS_CONFIGMAP = "cloudshop-aws"
DEPLOY_TIME_ENV = {
    "AWS_REGION",
    "RESOURCE_PREFIX",
    *resource_settings("any-"),
    "ORDER_EVENTS_QUEUE_URL",
    "PAYMENT_EVENTS_QUEUE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "PRODUCT_SERVICE_URL",
    "DATABASE_URL",
    "DATABASE_SECRET_ARN",
    "INTERNAL_TOKEN_SECRET_ARNS",
    "JWT_PRIVATE_KEY_SECRET_ARN",
}
# Secret values never appear in git: a pod reads them by ARN, or from an optional Secret.
SECRET_ENV = {"JWT_PUBLIC_KEY", "INTERNAL_TOKEN_SECRETS"}


def render(overlay: str) -> list[dict[str, Any]]:
    return kustomize_build(f"eks_services/k8s/overlays/{overlay}")


def workload_ids(workload: Workload) -> str:
    return workload.name


def container(objects: list[dict[str, Any]], workload: Workload) -> dict[str, Any]:
    pod = one(objects, "Deployment", workload.name)["spec"]["template"]["spec"]
    containers = pod["containers"]
    assert len(containers) == 1
    return containers[0]


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    maps = [m for m in find(objects, "ConfigMap") if m["metadata"]["name"].startswith("cloudshop-config")]
    assert len(maps) == 1
    return maps[0]["data"]


# --- schemas -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_overlay_renders_objects_valid_against_the_kubernetes_schemas(overlay: str) -> None:
    objects = render(overlay)

    assert {o["kind"] for o in objects} >= {
        "Namespace",
        "ConfigMap",
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        assert obj["kind"] == "Namespace" or obj["metadata"]["namespace"] == NAMESPACE


def test_schema_validation_rejects_a_misspelt_field() -> None:
    hpa = dict(one(render("dev"), "HorizontalPodAutoscaler", "order"))
    hpa["spec"] = {**hpa["spec"], "maxReplica": 3}

    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, KUBERNETES_VERSION, strict=True)


# --- autoscaling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_autoscaler_bounds_and_targets_follow_the_estate(overlay: str, workload: Workload) -> None:
    hpa = one(render(overlay), "HorizontalPodAutoscaler", workload.name)
    spec = hpa["spec"]
    targets = {m["resource"]["name"]: m["resource"]["target"] for m in spec["metrics"]}

    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["metadata"]["namespace"] == workload.namespace
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": workload.name}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (workload.min_replicas, workload.max_replicas)
    assert {name: t["type"] for name, t in targets.items()} == {"cpu": "Utilization", "memory": "Utilization"}
    expected = (
        DEMO_TARGETS
        if overlay == "demo"
        else {"cpu": workload.cpu_target_percent, "memory": workload.memory_target_percent}
    )
    assert {name: t["averageUtilization"] for name, t in targets.items()} == expected


def test_the_estate_keeps_seventy_eighty_and_the_demo_overlay_the_original_fifteen_thirty() -> None:
    assert {(w.cpu_target_percent, w.memory_target_percent) for w in WORKLOADS} == {(70, 80)}
    for hpa in find(render("demo"), "HorizontalPodAutoscaler"):
        utilisation = [m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]]
        assert utilisation == [15, 30]


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_autoscaler_scales_up_fast_and_down_slowly(workload: Workload) -> None:
    behavior = one(render("prod"), "HorizontalPodAutoscaler", workload.name)["spec"]["behavior"]

    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert behavior["scaleUp"]["policies"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300
    assert all(p["periodSeconds"] >= 60 for p in behavior["scaleDown"]["policies"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_deployments_leave_the_replica_count_to_the_autoscaler(overlay: str) -> None:
    for deployment in find(render(overlay), "Deployment"):
        assert "replicas" not in deployment["spec"]


# --- pods ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_pods_probe_start_up_on_the_service_port_and_liveness_and_readiness_on_their_own(
    overlay: str, workload: Workload
) -> None:
    c = container(render(overlay), workload)

    assert c["ports"] == [
        {"name": "http", "containerPort": workload.port, "protocol": "TCP"},
        {"name": "health", "containerPort": 8081, "protocol": "TCP"},
    ]
    # Liveness and readiness on the port the app's probe process listens on (cloudshop.liveness), on
    # every address.
    env = {variable["name"]: variable.get("value") for variable in c["env"]}
    assert env["HEALTH_PORT"] == "8081" and env["HEALTH_HOST"] == "0.0.0.0"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    startup_budget = c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"]
    assert 30 <= startup_budget <= 120


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_pods_run_restricted(overlay: str, workload: Workload) -> None:
    objects = render(overlay)
    pod = one(objects, "Deployment", workload.name)["spec"]["template"]["spec"]
    c = container(objects, workload)

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    tmp = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
    assert next(v for v in pod["volumes"] if v["name"] == tmp["name"])["emptyDir"]
    namespace = one(objects, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_pods_request_and_limit_cpu_and_memory(overlay: str, workload: Workload) -> None:
    resources = container(render(overlay), workload)["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_pods_spread_across_zones_and_nodes(workload: Workload) -> None:
    pod = one(render("prod"), "Deployment", workload.name)["spec"]["template"]["spec"]
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}

    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert spread["topology.kubernetes.io/zone"]["whenUnsatisfiable"] == "DoNotSchedule"
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": workload.name}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_each_workload_has_a_disruption_budget_that_keeps_a_pod(overlay: str, workload: Workload) -> None:
    pdb = one(render(overlay), "PodDisruptionBudget", workload.name)["spec"]

    assert pdb["selector"]["matchLabels"] == {"app.kubernetes.io/name": workload.name}
    assert pdb["maxUnavailable"] == 1 < workload.min_replicas


# --- identity, services, images ------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_pods_run_as_the_service_account_pod_identity_is_bound_to(overlay: str, workload: Workload) -> None:
    objects = render(overlay)
    account = one(objects, "ServiceAccount", workload.service_account)
    pod = one(objects, "Deployment", workload.name)["spec"]["template"]["spec"]

    assert account["metadata"]["namespace"] == workload.namespace
    assert pod["serviceAccountName"] == workload.service_account


@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_services_expose_port_80_and_invite_prometheus(workload: Workload) -> None:
    service = one(render("dev"), "Service", workload.name)

    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": workload.name}
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    annotations = service["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(workload.port)
    assert annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_come_from_ecr_and_a_release_is_pinned_by_digest(overlay: str) -> None:
    for workload in WORKLOADS:
        image = container(render(overlay), workload)["image"]
        match = re.fullmatch(
            rf"\d{{12}}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com/cloudshop/{workload.name}"
            r":(?P<tag>[\w.-]+)(?:@(?P<digest>sha256:[0-9a-f]{64}))?",
            image,
        )
        assert match, image
        assert match["tag"] == "bootstrap" or match["digest"], f"{image}: a release needs its digest"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_ingress_the_alb_and_its_target_group_bindings_are_cdks(overlay: str) -> None:
    # An Ingress would make the AWS Load Balancer Controller create a second ALB nobody routes to.
    assert not find(render(overlay), "Ingress")


# --- configuration (the settings contract) -------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_config_keys_are_settings_fields_and_validate(overlay: str) -> None:
    data = config(render(overlay))

    unknown = {key for key in data if key.lower() not in Settings.model_fields}
    assert not unknown, f"not Settings fields: {unknown}"
    settings = Settings.model_validate({key.lower(): value for key, value in data.items()})
    assert settings.environment in {"dev", "prod"}
    # MSK with IAM auth, as CDK configures it (the pods' roles may connect, nothing else).
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "AWS_MSK_IAM")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_git_leaves_what_only_a_deployment_knows_to_cdk(overlay: str) -> None:
    assert not DEPLOY_TIME_ENV & set(config(render(overlay)))


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("workload", WORKLOADS, ids=workload_ids)
def test_pods_read_git_settings_then_cdks_and_secrets_never_from_git(overlay: str, workload: Workload) -> None:
    objects = render(overlay)
    c = container(objects, workload)
    config_name = next(m["metadata"]["name"] for m in find(objects, "ConfigMap"))
    env = {e["name"]: e for e in c["env"]}

    # Later sources win: CDK's deploy-time values override git's.
    assert c["envFrom"] == [
        {"configMapRef": {"name": config_name}},
        {"configMapRef": {"name": AWS_SETTINGS_CONFIGMAP, "optional": True}},
        {"configMapRef": {"name": f"{AWS_SETTINGS_CONFIGMAP}-{workload.name}", "optional": True}},
    ]
    assert GIT_ENV <= set(config(objects)) | set(env)
    assert env["SERVICE_NAME"]["value"] == workload.name
    for name in SECRET_ENV:
        assert set(env[name]) == {"name", "valueFrom"}
        reference = env[name]["valueFrom"]["secretKeyRef"]
        # Optional: on AWS the values come by ARN and from `cloudshop-aws`; the Secret only overrides.
        assert reference["key"] == name and reference["optional"] is True
        assert name not in config(objects)
    # Service-token secrets are per workload: one pod never holds another's pairs.
    assert env["INTERNAL_TOKEN_SECRETS"]["valueFrom"]["secretKeyRef"]["name"] == (
        f"cloudshop-{workload.name}-service-tokens"
    )


@pytest.mark.parametrize(("caller", "callee"), [("order", "payment")])
def test_the_services_reach_each_other_through_their_services(caller: str, callee: str) -> None:
    objects = render("prod")
    target = next(w for w in WORKLOADS if w.name == callee)
    service = one(objects, "Service", target.name)

    assert config(objects)[f"{callee.upper()}_SERVICE_URL"] == (
        f"http://{service['metadata']['name']}.{target.namespace}.svc.cluster.local"
    )
    assert service["spec"]["ports"][0]["port"] == 80
    assert (f"cloudshop/app.kubernetes.io/name={caller}", "TCP/8080") in allowed(objects, callee, "Ingress")
    assert (f"cloudshop/app.kubernetes.io/name={callee}", "TCP/8080") in allowed(objects, caller, "Egress")


# --- network policies ----------------------------------------------------------------------------


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def _peer(peer: dict[str, Any]) -> str:
    if "ipBlock" in peer:
        block = peer["ipBlock"]
        return f"cidr:{block['cidr']}" + (f" except {','.join(block['except'])}" if "except" in block else "")
    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name")
    labels = ",".join(f"{k}={v}" for k, v in sorted(peer["podSelector"].get("matchLabels", {}).items()))
    return f"{namespace or NAMESPACE}/{labels}"


def _port(port: dict[str, Any]) -> str:
    end = f"-{port['endPort']}" if "endPort" in port else ""
    return f"{port.get('protocol', 'TCP')}/{port['port']}{end}"


def allowed(objects: list[dict[str, Any]], workload: str, direction: str) -> set[tuple[str, str]]:
    """The (peer, port) pairs the NetworkPolicies allow for a workload's pods in one direction."""
    labels = one(objects, "Deployment", workload)["spec"]["template"]["metadata"]["labels"]
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    flows: set[tuple[str, str]] = set()
    for policy in find(objects, "NetworkPolicy"):
        spec = policy["spec"]
        if direction not in spec["policyTypes"] or not _selects(spec["podSelector"], labels):
            continue
        for rule in spec.get(key, []):
            assert rule.get(peers_key) and rule.get("ports"), f"{policy['metadata']['name']}: open rule"
            flows |= {(_peer(p), _port(port)) for p in rule[peers_key] for port in rule["ports"]}
    return flows


def _gateway_and_vpc(objects: list[dict[str, Any]]) -> tuple[set[str], str]:
    gateway = one(objects, "NetworkPolicy", "allow-gateway-ingress")["spec"]["ingress"][0]["from"]
    msk = one(objects, "NetworkPolicy", "allow-msk-egress")["spec"]["egress"][0]["to"]
    return {p["ipBlock"]["cidr"] for p in gateway}, msk[0]["ipBlock"]["cidr"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_is_denied_unless_a_policy_allows_it(overlay: str) -> None:
    deny = one(render(overlay), "NetworkPolicy", "default-deny-all")["spec"]

    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlays_replace_the_placeholder_cidrs_with_private_ones_inside_the_vpc(overlay: str) -> None:
    objects = render(overlay)
    gateway, vpc = _gateway_and_vpc(objects)
    vpc_network = ipaddress.ip_network(vpc)

    assert PLACEHOLDER_CIDR not in json.dumps(find(objects, "NetworkPolicy"))
    assert vpc_network.is_private
    for cidr in gateway:
        assert ipaddress.ip_network(cidr).subnet_of(vpc_network)  # type: ignore[arg-type]
        assert ipaddress.ip_network(cidr).prefixlen >= 20, "the gateway subnets, not the whole VPC"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ingress_order_from_the_gateway_payment_from_order_and_both_from_prometheus(overlay: str) -> None:
    objects = render(overlay)
    gateway, _ = _gateway_and_vpc(objects)
    prometheus = ("monitoring/app.kubernetes.io/name=prometheus", "TCP/8080")
    from_gateway = {(f"cidr:{cidr}", "TCP/8080") for cidr in gateway}

    # Nothing calls order inside the cluster: payment reports refunds as events on SQS (issue 9).
    assert allowed(objects, "order", "Ingress") == {prometheus, *from_gateway}
    # /payments/{id} is a public route of the gateway, so payment takes the gateway path too.
    assert allowed(objects, "payment", "Ingress") == {
        prometheus,
        *from_gateway,
        ("cloudshop/app.kubernetes.io/name=order", "TCP/8080"),
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_egress_only_to_dns_aws_the_pod_identity_agent_each_other_and_msk_for_order(overlay: str) -> None:
    objects = render(overlay)
    _, vpc = _gateway_and_vpc(objects)
    common = {
        ("kube-system/k8s-app=kube-dns", "UDP/53"),
        ("kube-system/k8s-app=kube-dns", "TCP/53"),
        ("cidr:0.0.0.0/0 except 169.254.169.254/32", "TCP/443"),
        ("cidr:169.254.170.23/32", "TCP/80"),
        # Spans to the CloudWatch agent of the amazon-cloudwatch-observability add-on (OTLP/HTTP).
        ("amazon-cloudwatch/app.kubernetes.io/name=cloudwatch-agent", "TCP/4316"),
    }

    # Payment calls nobody: DynamoDB and SQS are AWS APIs (443).
    assert allowed(objects, "payment", "Egress") == common
    # Only the order service's outbox relay publishes to Kafka: MSK's IAM port, inside the VPC.
    assert allowed(objects, "order", "Egress") == common | {
        ("cloudshop/app.kubernetes.io/name=payment", "TCP/8080"),
        (f"cidr:{vpc}", "TCP/9098"),
    }


# --- monitoring ----------------------------------------------------------------------------------


def _service_metric_names() -> set[str]:
    metrics = Metrics("probe")
    metrics.requests.labels("probe", "GET", "/x", "200").inc()
    metrics.latency.labels("probe", "GET", "/x").observe(0.1)
    return {sample.name for family in metrics.registry.collect() for sample in family.samples}


def _metric_names_in(expr: str) -> set[str]:
    # Recording-rule names (`cloudshop:http_requests:rate5m`) are not metric names.
    return set(re.findall(r"(?<![:\w])((?:http|kube|container)_[a-z_]+)(?![:\w])", expr))


def test_dashboard_and_rules_query_the_metrics_the_services_export() -> None:
    objects = kustomize_build("eks_services/k8s/monitoring")
    dashboard_map = one(objects, "ConfigMap", "cloudshop-dashboard")
    dashboard = json.loads(dashboard_map["data"]["cloudshop-services.json"])
    rules = one(objects, "PrometheusRule", "cloudshop")["spec"]["groups"]
    # Rows carry no targets and CloudWatch targets no PromQL.
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", []) if "expr" in t]
    exprs += [r["expr"] for g in rules for r in g["rules"]]
    exported = _service_metric_names()

    assert dashboard_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard_map["metadata"]["namespace"] == "monitoring"
    used = set().union(*(_metric_names_in(e) for e in exprs))
    assert {m for m in used if m.startswith("http_")} <= exported
    assert {"http_requests_total", "http_request_duration_seconds_bucket"} <= used
    assert any("kube_horizontalpodautoscaler_status_current_replicas" in e for e in exprs)


def test_alerts_cover_errors_latency_and_restarts() -> None:
    rules = one(kustomize_build("eks_services/k8s/monitoring"), "PrometheusRule", "cloudshop")
    alerts = {r["alert"]: r for g in rules["spec"]["groups"] for r in g["rules"] if "alert" in r}

    assert {"CloudshopHigh5xxRate", "CloudshopHighP95Latency", "CloudshopPodRestarting"} <= set(alerts)
    for alert in alerts.values():
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["for"]


# --- ArgoCD ----------------------------------------------------------------------------------------


def argocd_env(env: str) -> list[dict[str, Any]]:
    return kustomize_build(f"eks_services/argocd/envs/{env}")


def bootstrap(env: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((ARGOCD / "bootstrap" / f"{env}.yaml").read_text()) if d]


def _semver(version: str) -> bool:
    return re.fullmatch(r"\d+\.\d+\.\d+", version) is not None


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_root_application_syncs_its_environment_and_may_only_create_applications(env: str) -> None:
    project, root = bootstrap(env)
    source = root["spec"]["source"]

    assert (project["kind"], root["kind"]) == ("AppProject", "Application")
    assert root["spec"]["project"] == project["metadata"]["name"]
    assert source["path"] == f"eks_services/argocd/envs/{env}"
    assert source["repoURL"] in project["spec"]["sourceRepos"]
    assert root["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert project["spec"]["clusterResourceWhitelist"] == []
    assert {r["kind"] for r in project["spec"]["namespaceResourceWhitelist"]} == {"Application", "AppProject"}
    assert {obj["kind"] for obj in argocd_env(env)} == {"Application", "AppProject"}


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_child_applications_sync_automatically_within_their_project(env: str) -> None:
    objects = argocd_env(env)
    projects = {p["metadata"]["name"]: p["spec"] for p in find(objects, "AppProject")}
    applications = find(objects, "Application")

    assert {a["metadata"]["name"] for a in applications} == {
        "cloudshop-services",
        "cloudshop-monitoring",
        "kube-prometheus-stack",
        "loki",
        "alloy",
    }
    for app in applications:
        spec = app["spec"]
        project = projects[spec["project"]]
        assert app["metadata"]["namespace"] == "argocd"
        assert spec["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
        assert spec["source"]["repoURL"] in project["sourceRepos"]
        assert {"server": spec["destination"]["server"], "namespace": spec["destination"]["namespace"]} in (
            project["destinations"]
        )
        if "chart" in spec["source"]:
            assert _semver(spec["source"]["targetRevision"]), f"{app['metadata']['name']}: pin the chart"
        else:
            assert (REPO / spec["source"]["path"] / "kustomization.yaml").exists()
    services = one(objects, "Application", "cloudshop-services")["spec"]
    assert services["source"]["path"] == f"eks_services/k8s/overlays/{env}"
    assert services["destination"]["namespace"] == NAMESPACE
    assert projects[services["project"]]["destinations"] == [
        {"server": "https://kubernetes.default.svc", "namespace": NAMESPACE}
    ]


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_no_two_applications_own_the_same_object(env: str) -> None:
    objects = argocd_env(env)
    owned: dict[tuple[str, str, str], str] = {}

    def claim(app: str, items: list[dict[str, Any]], namespace: str) -> None:
        for obj in items:
            key = (obj["kind"], obj["metadata"].get("namespace", namespace), obj["metadata"]["name"])
            assert key not in owned, f"{key} is owned by both {owned[key]} and {app}"
            owned[key] = app

    claim("cloudshop-root", objects, "argocd")
    releases: set[str] = set()
    for app in find(objects, "Application"):
        source, namespace = app["spec"]["source"], app["spec"]["destination"]["namespace"]
        if "chart" in source:
            release = source["helm"]["releaseName"]
            assert release not in releases
            releases.add(release)
        else:
            claim(app["metadata"]["name"], kustomize_build(source["path"]), namespace)


def test_the_monitoring_stack_picks_up_cloudshops_dashboards_rules_and_service_annotations() -> None:
    stack = one(argocd_env("prod"), "Application", "kube-prometheus-stack")["spec"]["source"]["helm"]
    values = stack["valuesObject"]
    prometheus = values["prometheus"]["prometheusSpec"]
    sidecar = values["grafana"]["sidecar"]["dashboards"]
    scrape = prometheus["additionalScrapeConfigs"][0]

    assert prometheus["ruleSelectorNilUsesHelmValues"] is False
    assert (sidecar["label"], sidecar["labelValue"]) == ("grafana_dashboard", "1")
    assert scrape["kubernetes_sd_configs"][0]["namespaces"]["names"] == [NAMESPACE]
    assert scrape["relabel_configs"][0]["source_labels"] == [
        "__meta_kubernetes_service_annotation_prometheus_io_scrape"
    ]
    assert "existingSecret" in values["grafana"]["admin"]


def test_every_kustomization_in_the_tree_builds() -> None:
    roots = sorted(p.parent for p in (K8S.parent).rglob("kustomization.yaml"))
    components = [r for r in roots if "kind: Component" in (r / "kustomization.yaml").read_text()]

    for root in roots:
        if root in components:
            continue
        assert kustomize_build(root.relative_to(REPO)) is not None
