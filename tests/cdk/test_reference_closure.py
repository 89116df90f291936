"""Reference closure: every name one part of the generated output refers to, another part declares.

The parts are what a deployment consumes, never the source that makes them: the synthesised templates of
each CDK environment, the cluster ArgoCD builds from that environment's root (the rendered overlays, the
Applications and their Helm values), and the GitHub workflows (`tests/cdk/generated.py` loads them).
Each test follows one kind of name and lists, on failure, every name that resolves to nothing with the
place that refers to it. A reference that is `optional: true` does not fail, but is still listed.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from cdk.access import SERVICE_ACCESS
from cdk.config import EnvironmentName
from cloudshop.estate import ESTATE, LAMBDA_SERVICES, WORKLOADS
from cloudshop.settings import Settings
from tests.cdk.generated import (
    ENVIRONMENTS,
    Cluster,
    Declared,
    EnvValue,
    Placed,
    Resolved,
    Templates,
    UnresolvedReference,
    containers,
    gitops,
    image_repository,
    synthesize,
    variable,
    walk,
    workflows,
)
from tests.cdk.test_access import TOPIC_FIELDS, package, touched
from tests.infra import REPO

pytestmark = pytest.mark.infra

# What an EKS add-on installs as its own ServiceAccounts (the add-ons' documented service accounts).
ADDON_SERVICE_ACCOUNTS: dict[str, tuple[tuple[str, str], ...]] = {
    "aws-ebs-csi-driver": (("kube-system", "ebs-csi-controller-sa"), ("kube-system", "ebs-csi-node-sa")),
    "aws-efs-csi-driver": (("kube-system", "efs-csi-controller-sa"), ("kube-system", "efs-csi-node-sa")),
    "aws-mountpoint-s3-csi-driver": (("kube-system", "s3-csi-driver-sa"),),
    "vpc-cni": (("kube-system", "aws-node"),),
    "coredns": (("kube-system", "coredns"),),
    "kube-proxy": (("kube-system", "kube-proxy"),),
    "metrics-server": (("kube-system", "metrics-server"),),
    "snapshot-controller": (("kube-system", "snapshot-controller"),),
    "amazon-cloudwatch-observability": (("amazon-cloudwatch", "cloudwatch-agent"),),
    "eks-pod-identity-agent": (),
}
# CSI provisioners and the add-on (or chart) that runs each; in-tree `kubernetes.io/aws-ebs` is
# migrated to the EBS CSI driver, so it needs the driver too.
PROVISIONER_DRIVERS = {
    "ebs.csi.aws.com": "aws-ebs-csi-driver",
    "kubernetes.io/aws-ebs": "aws-ebs-csi-driver",
    "efs.csi.aws.com": "aws-efs-csi-driver",
    "s3.csi.aws.com": "aws-mountpoint-s3-csi-driver",
}
DRIVER_CONTROLLER_ACCOUNTS = {
    "aws-ebs-csi-driver": ("kube-system", "ebs-csi-controller-sa"),
    "aws-efs-csi-driver": ("kube-system", "efs-csi-controller-sa"),
    "aws-mountpoint-s3-csi-driver": ("kube-system", "s3-csi-driver-sa"),
}
DRIVER_NODE_POLICIES = {
    "aws-ebs-csi-driver": "AmazonEBSCSIDriverPolicy",
    "aws-efs-csi-driver": "AmazonEFSCSIDriverPolicy",
}
# Variables the runtimes set or read themselves (AWS SDKs, the Lambda and EKS Pod Identity runtimes).
AWS_RUNTIME_VARIABLES = frozenset(
    {
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_STS_REGIONAL_ENDPOINTS",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
        "AWS_LAMBDA_EXEC_WRAPPER",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    }
)
# Where a deployment's variables (the values an operator sets on GitHub) are documented.
DOCUMENTS = ("cdk/README.md", "eks_services/k8s/README.md", "README.md")
OUT_OF_BAND_DOCUMENT = "eks_services/k8s/README.md"
ECR_IMAGE = re.compile(r"(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?")
IN_CLUSTER_URL = re.compile(
    r"https?://(?P<service>[a-z0-9-]+)\.(?P<namespace>[a-z0-9-]+)\.svc(\.cluster\.local)?(:\d+)?/?"
)


# --------------------------------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cloud(synth) -> Callable[[EnvironmentName], Templates]:
    """The templates of a CDK environment: the session synthesis for its own preset, others synthesised once."""
    own = Templates.from_synthesis(synth)

    def templates(environment: EnvironmentName) -> Templates:
        return own if environment == own.environment else synthesize(environment)

    return templates


@pytest.fixture(scope="session")
def cluster(cloud) -> Callable[[EnvironmentName], Cluster]:
    cache: dict[str, Cluster] = {}

    def build(environment: EnvironmentName) -> Cluster:
        if environment not in cache:
            cache[environment] = Cluster(cloud(environment), gitops(environment))
        return cache[environment]

    return build


def report(title: str, unresolved: Iterable[str], optional: Iterable[str] = ()) -> str:
    lines = [f"{title}:", *(f"  - {u}" for u in unresolved)]
    optional = list(optional)
    if optional:
        lines += ["optional (absent, allowed):", *(f"  - {o}" for o in optional)]
    return "\n".join(lines)


def note_optional(title: str, optional: list[str]) -> None:
    """Optional references that resolve to nothing pass, but the run still says which."""
    if optional:
        warnings.warn("\n".join([f"{title}:", *(f"  - {o}" for o in optional)]), stacklevel=2)


def settings_variables() -> frozenset[str]:
    """The environment variable names `Settings` reads (upper-case field names, or the alias)."""
    return frozenset((info.alias or name).upper() for name, info in Settings.model_fields.items())


def is_our_code(function: Declared) -> bool:
    """A Lambda whose handler is in this repository's packages (not a provider aws-cdk-lib ships)."""
    handler = str(function.properties.get("Handler", ""))
    top = handler.split(".", 1)[0]
    return bool(top) and (REPO / top / "__init__.py").is_file()


def service_functions(templates: Templates) -> dict[str, tuple[Declared, dict[str, Any]]]:
    """`{service: (function, variables)}` of the Lambdas, found by their SERVICE_NAME."""
    found = {}
    for function, variables in templates.lambda_environments().items():
        name = templates.resolve(function.stack, variables.get("SERVICE_NAME", "")).literal
        if name:
            found[name] = (function, variables)
    return found


def service_pods(cluster: Cluster) -> dict[str, tuple[Placed, dict[str, Any]]]:
    """`{service: (workload, container)}` of the pods, found by the SERVICE_NAME their container gets."""
    found = {}
    for workload, spec in cluster.workloads():
        for container in containers(spec):
            value = cluster.container_environment(workload, container).get("SERVICE_NAME")
            if value is not None and value.value is not None and value.value.literal:
                found[value.value.literal] = (workload, container)
    return found


def declared_accounts(cluster: Cluster) -> dict[tuple[str, str], str]:
    """`{(namespace, name): declared by}` of the ServiceAccounts the cluster will have."""
    accounts: dict[tuple[str, str], str] = {}
    for placed in cluster.find("ServiceAccount"):
        accounts[(str(placed.namespace), placed.name)] = str(placed)
    for addon in cluster.templates.addons():
        name = str(addon.properties.get("AddonName"))
        for account in ADDON_SERVICE_ACCOUNTS.get(name, ()):
            accounts[account] = f"add-on {name}"
    for namespace, values, origin in helm_releases(cluster):
        # The release's own account, and those of its components (an umbrella chart such as
        # kube-prometheus-stack: `alertmanager.serviceAccount`, `grafana.serviceAccount`).
        components = [("", values)] + [(f"{key}.", sub) for key, sub in values.items() if isinstance(sub, dict)]
        for prefix, component in components:
            account = component.get("serviceAccount")
            if isinstance(account, dict) and account.get("create", True) and account.get("name"):
                accounts[(namespace, str(account["name"]))] = f"{origin} ({prefix}serviceAccount.create)"
    return accounts


def helm_releases(cluster: Cluster) -> list[tuple[str, dict[str, Any], str]]:
    """(namespace, values, origin) of every Helm release: CDK's charts and ArgoCD's chart Applications."""
    releases = [
        (chart.namespace, chart.values, f"CDK Helm chart {chart.release}") for chart in cluster.templates.helm_charts()
    ]
    releases += [
        (app.namespace, app.helm_values, f"Application {app.name} valuesObject")
        for app in cluster.gitops.helm_applications()
    ]
    return releases


def resolve_or_report(resolve: Callable[[], Resolved], where: str, unresolved: list[str]) -> Resolved | None:
    try:
        return resolve()
    except UnresolvedReference as exc:
        unresolved.append(f"{exc} <- {where}")
        return None


# --------------------------------------------------------------------------------------------------
# StorageClass
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_storage_class_referred_to_is_declared_and_its_driver_installed(cluster, environment) -> None:
    view = cluster(environment)
    templates = view.templates
    classes = {p.name: p for p in view.find("StorageClass")}
    defaults = [
        p
        for p in classes.values()
        if p.object.get("metadata", {}).get("annotations", {}).get("storageclass.kubernetes.io/is-default-class")
        == "true"
    ]
    references: list[tuple[str, str]] = []
    for namespace, values, origin in helm_releases(view):
        for path, key, value in walk(values):
            if key in ("storageClassName", "storageClass") and isinstance(value, str) and value not in ("", "-"):
                references.append((value, f"{origin} ({namespace}) .{path}"))
    for placed in view.objects:
        if placed.kind in ("StorageClass", "Application"):  # Applications: their Helm values, above
            continue
        for path, key, value in walk(placed.object):
            if key == "storageClassName" and isinstance(value, str) and value:
                references.append((value, f"{placed} .{path}"))
        if placed.kind == "PersistentVolumeClaim" and not placed.object["spec"].get("storageClassName"):
            references.append(("<the default StorageClass>", str(placed)))

    unresolved = [
        f"StorageClass {name!r} <- {where}"
        for name, where in references
        if not (name in classes or (name == "<the default StorageClass>" and defaults))
    ]
    addons = {str(a.properties.get("AddonName")): a for a in templates.addons()}
    charts = {chart.chart for chart in templates.helm_charts()}
    associations = {
        (str(a.properties.get("Namespace")), str(a.properties.get("ServiceAccount")))
        for a in templates.declared("AWS::EKS::PodIdentityAssociation")
    }
    node_policies = " ".join(
        str(templates.resolve(role.stack, role.properties.get("ManagedPolicyArns", [])))
        for group in templates.declared("AWS::EKS::Nodegroup")
        for role in templates.resolve(group.stack, group.properties.get("NodeRole")).refs
        if role.type == "AWS::IAM::Role"
    )
    for name in sorted({name for name, _ in references if name in classes}):
        placed = classes[name]
        provisioner = str(placed.object.get("provisioner"))
        driver = PROVISIONER_DRIVERS.get(provisioner)
        if driver is None:
            unresolved.append(f"provisioner {provisioner!r} (no known CSI driver) <- {placed}")
            continue
        addon = addons.get(driver)
        if addon is None and driver not in charts:
            unresolved.append(f"CSI driver {driver} (AWS::EKS::Addon or Helm chart) <- {placed} provisioner")
            continue
        identity = (
            (addon is not None and bool(addon.properties.get("ServiceAccountRoleArn")))
            or (addon is not None and bool(addon.properties.get("PodIdentityAssociations")))
            or DRIVER_CONTROLLER_ACCOUNTS.get(driver) in associations
            or DRIVER_NODE_POLICIES.get(driver, "<none>") in node_policies
        )
        if not identity:
            unresolved.append(
                f"an IAM identity for {driver} (ServiceAccountRoleArn, PodIdentityAssociations, an association of "
                f"{DRIVER_CONTROLLER_ACCOUNTS.get(driver)} or the node role's {DRIVER_NODE_POLICIES.get(driver)}) "
                f"<- {placed}"
            )

    assert not unresolved, report(f"{environment}: storage references that resolve to nothing", unresolved)


# --------------------------------------------------------------------------------------------------
# ServiceAccount
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_service_account_referred_to_is_declared(cluster, environment) -> None:
    view = cluster(environment)
    accounts = declared_accounts(view)
    unresolved = []
    for workload, spec in view.workloads():
        name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        if name != "default" and (str(workload.namespace), name) not in accounts:
            unresolved.append(f"ServiceAccount {workload.namespace}/{name} <- {workload} serviceAccountName")
    for association in view.templates.declared("AWS::EKS::PodIdentityAssociation"):
        key = (str(association.properties.get("Namespace")), str(association.properties.get("ServiceAccount")))
        if key not in accounts:
            unresolved.append(f"ServiceAccount {key[0]}/{key[1]} <- {association} (Pod Identity association)")
    for addon in view.templates.addons():
        name = str(addon.properties.get("AddonName"))
        own = {account for _, account in ADDON_SERVICE_ACCOUNTS.get(name, ())}
        for entry in addon.properties.get("PodIdentityAssociations") or []:
            if entry.get("ServiceAccount") not in own:
                unresolved.append(f"ServiceAccount {entry.get('ServiceAccount')} of add-on {name} <- {addon}")
    for namespace, values, origin in helm_releases(view):
        account = values.get("serviceAccount")
        if isinstance(account, dict) and account.get("create") is False and account.get("name"):
            if (namespace, str(account["name"])) not in accounts:
                unresolved.append(f"ServiceAccount {namespace}/{account['name']} <- {origin} serviceAccount.name")

    assert not unresolved, report(f"{environment}: ServiceAccounts that nothing declares", unresolved)


# --------------------------------------------------------------------------------------------------
# ConfigMaps and Secrets
# --------------------------------------------------------------------------------------------------


def config_references(spec: dict[str, Any]) -> Iterable[tuple[str, str, str | None, bool, str]]:
    """(kind, name, key or None, optional, where in the pod spec) of every ConfigMap/Secret a pod names."""
    for container in containers(spec):
        where = f"container {container.get('name')}"
        for index, source in enumerate(container.get("envFrom") or []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    ref = source[key]
                    yield kind, ref["name"], None, bool(ref.get("optional")), f"{where} envFrom[{index}]"
        for entry in container.get("env") or []:
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                ref = (entry.get("valueFrom") or {}).get(key)
                if ref:
                    yield kind, ref["name"], ref["key"], bool(ref.get("optional")), f"{where} env {entry['name']}"
    for volume in spec.get("volumes") or []:
        where = f"volume {volume.get('name')}"
        sources = [volume] + [s for s in (volume.get("projected") or {}).get("sources") or []]
        for source in sources:
            for kind, key, name_key in (("ConfigMap", "configMap", "name"), ("Secret", "secret", "secretName")):
                ref = source.get(key)
                if not ref:
                    continue
                name = ref.get(name_key) or ref.get("name")
                optional = bool(ref.get("optional"))
                yield kind, name, None, optional, where
                for item in ref.get("items") or []:
                    yield kind, name, item["key"], optional, f"{where} items"
    for secret in spec.get("imagePullSecrets") or []:
        yield "Secret", secret["name"], None, False, "imagePullSecrets"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_config_map_and_secret_a_pod_or_chart_names_is_declared_with_its_keys(cluster, environment) -> None:
    view = cluster(environment)
    unresolved: list[str] = []
    optional: list[str] = []
    for workload, spec in view.workloads():
        for kind, name, key, is_optional, where in config_references(spec):
            found = view.find(kind, namespace=workload.namespace, name=name)
            data: set[str] = set()
            for placed in found:
                data |= set(placed.object.get("data") or {}) | set(placed.object.get("binaryData") or {})
                data |= set(placed.object.get("stringData") or {})
            if found and (key is None or key in data):
                continue
            missing = f"{kind} {workload.namespace}/{name}" + (f" key {key!r}" if key else "")
            if found:
                missing += f" (declared by {found[0].origin} without that key)"
            (optional if is_optional else unresolved).append(f"{missing} <- {workload} {where}")

    document = (REPO / OUT_OF_BAND_DOCUMENT).read_text()
    for namespace, values, origin in helm_releases(view):
        for path, key, value in walk(values):
            if key not in ("existingSecret", "existingSecretName", "existingConfigMap") or not isinstance(value, str):
                continue
            kind = "ConfigMap" if key == "existingConfigMap" else "Secret"
            parent: Any = values
            for part in path.split(".")[:-1]:
                parent = parent[part] if isinstance(parent, dict) else {}
            keys = sorted(
                str(v)
                for k, v in (parent or {}).items()
                if isinstance(v, str) and k.endswith("Key") and k not in ("existingSecretKey",)
            )
            declared = view.find(kind, namespace=namespace, name=value)
            data = set()
            for placed in declared:
                data |= set(placed.object.get("data") or {}) | set(placed.object.get("stringData") or {})
            if declared and set(keys) <= data:
                continue
            documented = f"`{namespace}/{value}`" in document and all(f"`{k}`" in document for k in keys)
            if not documented:
                unresolved.append(
                    f"{kind} {namespace}/{value} keys {keys} (neither declared nor documented as created out of "
                    f"band in {OUT_OF_BAND_DOCUMENT}) <- {origin} .{path}"
                )

    note_optional(f"{environment}: optional ConfigMaps/Secrets that nothing declares", optional)
    assert not unresolved, report(
        f"{environment}: ConfigMaps/Secrets (or keys) that nothing declares", unresolved, optional
    )


# --------------------------------------------------------------------------------------------------
# IAM roles
# --------------------------------------------------------------------------------------------------


def documented_outputs(templates: Templates, name: str) -> list[str]:
    """Outputs named next to a workflow variable: in the output's description, or on one line of the
    deployment documents (a table row `| AWS_X_ROLE_ARN | ... | output XRoleArn of the Eks stack |`),
    of the stack that line names, if it names one."""
    lines = [line for doc in DOCUMENTS if (REPO / doc).is_file() for line in (REPO / doc).read_text().splitlines()]
    lines = [line for line in lines if re.search(rf"\b{re.escape(name)}\b", line)]
    found = []
    for output in templates.outputs():
        if output.export and output.key.startswith("ExportsOutput"):
            continue
        for line in [output.description, *lines]:
            stacks = [s for s in templates.stacks if f"`{s}`" in line or f"-{s}`" in line]
            if re.search(rf"\b{re.escape(output.key)}\b", line) and (not stacks or output.stack in stacks):
                if line == output.description and name not in line:
                    continue
                found.append(output.key)
                break
    return found


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_role_a_workflow_assumes_is_a_documented_output_of_an_iam_role(cloud, environment) -> None:
    templates = cloud(environment)
    outputs = {o.key: o for o in templates.outputs()}
    roles = templates.property_values("AWS::IAM::Role", "RoleName")
    unresolved = []
    for step in workflows().steps():
        expression = step.inputs.get("role-to-assume")
        if expression is None or step.target not in (None, environment):
            continue  # a job of another environment assumes that environment's role
        expression = str(expression)
        where = step.where()
        context = variable(expression)
        if context is None:
            arn = re.fullmatch(r"arn:aws[a-z-]*:iam::\d{12}:role/(?:.*/)?(?P<name>[\w+=,.@-]+)", expression)
            if not arn or arn["name"] not in roles:
                unresolved.append(f"role {expression!r} (no AWS::IAM::Role of that name) <- {where}")
            continue
        keys = documented_outputs(templates, context[1])
        if not keys:
            unresolved.append(
                f"{context[0]}.{context[1]}: no CfnOutput is documented as its source (an output whose description "
                f"names it, or a line of {', '.join(DOCUMENTS)} naming both) <- {where}"
            )
            continue
        for key in keys:
            output = outputs[key]
            resolved = resolve_or_report(lambda o=output: templates.resolve(o.stack, o.value), where, unresolved)
            role = resolved.only if resolved else None
            if role is None or role.type != "AWS::IAM::Role" or role.attribute != "Arn":
                unresolved.append(
                    f"{context[0]}.{context[1]}: output {output.stack}/{key} = {resolved} is not an IAM role's Arn "
                    f"<- {where}"
                )

    assert not unresolved, report(f"{environment}: roles the workflows assume that CDK does not declare", unresolved)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_pod_identity_role_is_an_iam_role_of_the_templates(cloud, environment) -> None:
    templates = cloud(environment)
    bindings: list[tuple[str, Any, str]] = []
    for association in templates.declared("AWS::EKS::PodIdentityAssociation"):
        bindings.append((association.stack, association.properties.get("RoleArn"), str(association)))
    for addon in templates.addons():
        if "ServiceAccountRoleArn" in addon.properties:
            bindings.append((addon.stack, addon.properties["ServiceAccountRoleArn"], f"{addon} ServiceAccountRoleArn"))
        for entry in addon.properties.get("PodIdentityAssociations") or []:
            bindings.append((addon.stack, entry.get("RoleArn"), f"{addon} PodIdentityAssociations"))
    unresolved: list[str] = []
    for stack, value, where in bindings:
        resolved = resolve_or_report(lambda s=stack, v=value: templates.resolve(s, v), where, unresolved)
        role = resolved.only if resolved else None
        if resolved is not None and (role is None or role.type != "AWS::IAM::Role" or role.attribute != "Arn"):
            unresolved.append(f"role {resolved} (not an AWS::IAM::Role Arn) <- {where}")

    assert bindings
    assert not unresolved, report(f"{environment}: Pod Identity roles CDK does not declare", unresolved)


# --------------------------------------------------------------------------------------------------
# ECR repositories and images
# --------------------------------------------------------------------------------------------------


def pushed_images() -> list[tuple[str, str]]:
    """(image reference, where) of every image a workflow pushes, with matrix and env values expanded."""
    found: list[tuple[str, str]] = []
    catalogue = workflows()
    for step in catalogue.steps():
        texts: list[str] = []
        if step.uses == "docker/build-push-action" and str(step.inputs.get("push", "false")).lower() == "true":
            texts += [t.strip() for t in re.split(r"[\n,]", str(step.inputs.get("tags", ""))) if t.strip()]
        run = str(step.step.get("run", ""))
        texts += re.findall(r"\bdocker\s+(?:image\s+)?push\s+(?:--\S+\s+)*(\S+)", run)
        if re.search(r"\bdocker\s+buildx\s+build\b[^\n]*--push", run):
            texts += re.findall(r"(?:-t|--tag)[ =](\S+)", run)
        for text in texts:
            try:
                found += [(image, step.where()) for image in catalogue.expand(step, text)]
            except LookupError as exc:
                found.append((f"<{exc}>", step.where()))
    return found


def is_ecr_registry(registry: str, step_where: str) -> bool:
    if ECR_IMAGE.fullmatch(registry):
        return True
    login = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.registry\s*\}\}", registry)
    if not login:
        return False
    workflow, job = step_where.split(" jobs.", 1)[0], step_where.split(" jobs.", 1)[1].split(".steps", 1)[0]
    steps = workflows().documents[workflow]["jobs"][job].get("steps") or []
    return any(
        s.get("id") == login[1] and str(s.get("uses", "")).startswith("aws-actions/amazon-ecr-login@") for s in steps
    )


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_image_run_or_pushed_is_an_ecr_repository_cdk_creates(cluster, environment) -> None:
    view = cluster(environment)
    repositories = view.templates.property_values("AWS::ECR::Repository", "RepositoryName")
    unresolved = []
    for workload, spec in view.workloads():
        if workload.applied_by_cdk:
            continue
        for container in containers(spec):
            image = str(container.get("image"))
            parsed = image_repository(image)
            registry = ECR_IMAGE.fullmatch(parsed[0]) if parsed else None
            where = f"{workload} container {container.get('name')}"
            if parsed is None or registry is None:
                unresolved.append(f"image {image!r} (not in an ECR registry) <- {where}")
            elif parsed[1] not in repositories:
                unresolved.append(f"ECR repository {parsed[1]!r} (image {image}) <- {where}")
            elif registry["region"] != view.templates.config.region:
                unresolved.append(
                    f"image {image} in {registry['region']}, the repository in {view.templates.config.region} "
                    f"<- {where}"
                )
    pushes = pushed_images()
    for image, where in pushes:
        parsed = image_repository(image)
        if parsed is None or not is_ecr_registry(parsed[0], where):
            unresolved.append(f"pushed image {image!r} (not to an ECR registry) <- {where}")
        elif parsed[1] not in repositories:
            unresolved.append(f"ECR repository {parsed[1]!r} (pushed {image}) <- {where}")

    assert pushes, "no workflow pushes an image"
    assert not unresolved, report(f"{environment}: images whose ECR repository CDK does not create", unresolved)


# --------------------------------------------------------------------------------------------------
# Environment variables
# --------------------------------------------------------------------------------------------------


def pod_environment(view: Cluster, service: str) -> dict[str, EnvValue]:
    workload, container = service_pods(view)[service]
    return view.container_environment(workload, container)


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_variable_a_function_or_pod_gets_is_a_setting(cluster, environment) -> None:
    view = cluster(environment)
    allowed = settings_variables() | AWS_RUNTIME_VARIABLES
    unresolved = []
    for function, variables in view.templates.lambda_environments().items():
        if not is_our_code(function):
            continue
        for name in variables:
            if name not in allowed and not name.startswith(("POWERTOOLS_", "PYDANTIC_")):
                unresolved.append(f"{name} <- {function} Environment.Variables")
    for workload, spec in view.workloads():
        if workload.applied_by_cdk:
            continue
        for container in containers(spec):
            for name, value in view.container_environment(workload, container).items():
                if name not in allowed:
                    unresolved.append(f"{name} <- {workload} container {container.get('name')} from {value.origin}")

    assert not unresolved, report(
        f"{environment}: variables that are no Settings field (nor Powertools/AWS runtime)", unresolved
    )


def fields_read(service: str) -> set[str]:
    """The Settings fields the service's package reads (`settings.<field>`, as tests/cdk/test_access.py reads)."""
    source = "\n".join(p.read_text() for p in sorted(package(service).rglob("*.py")))  # type: ignore[arg-type]
    return set(re.findall(r"\bsettings\.(\w+)", source)) & set(Settings.model_fields)


def cloud_requirements(service: str) -> dict[str, str]:
    """`{variable: why}`: what the service's code reads and no default can give in the cloud (resource
    names, URLs, secret ARNs, Kafka), as the variable that provides it there."""
    uses = touched(service)  # type: ignore[arg-type]
    fields = fields_read(service)
    needed = {ESTATE.table(t).settings_field.upper(): f"table {t}" for t in uses.tables}
    needed |= {ESTATE.bucket(b).settings_field.upper(): f"bucket {b}" for b in uses.buckets}
    needed |= {ESTATE.queue(q).settings_field.upper(): f"queue {q}" for q in uses.queues}
    if uses.database or SERVICE_ACCESS[service].database:  # type: ignore[index]
        needed |= {"DATABASE_URL": "the database", "DATABASE_SECRET_ARN": "the database credentials"}
    if uses.signing_key:
        needed["JWT_PRIVATE_KEY_SECRET_ARN"] = "settings.jwt_private_key"
    if uses.internal_token:
        needed["INTERNAL_TOKEN_SECRET_ARNS"] = "internal_tokens_for(settings)"
    if uses.send_email:
        needed["SES_SENDER"] = "settings.ses_sender"
    if uses.topics:
        needed |= {
            name: f"Kafka topics {sorted(uses.topics)}"
            for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM")
        }
    for name in sorted(fields):
        if name.endswith("_service_url") or name == "jwt_public_key":
            needed[name.upper()] = f"settings.{name}"
    return needed


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_service_gets_each_setting_its_code_reads_that_has_no_cloud_default(cluster, environment) -> None:
    view = cluster(environment)
    functions = service_functions(view.templates)
    pods = service_pods(view)
    unresolved = []
    for service in [*LAMBDA_SERVICES, *(w.name for w in WORKLOADS)]:
        if service in functions:
            function, variables = functions[service]
            provided, where = set(variables), str(function)
        elif service in pods:
            workload, container = pods[service]
            provided = set(view.container_environment(workload, container))
            where = f"{workload} container {container.get('name')}"
        else:
            unresolved.append(f"service {service}: no Lambda nor pod with SERVICE_NAME={service}")
            continue
        for name, why in sorted(cloud_requirements(service).items()):
            if name not in provided:
                unresolved.append(f"{name} ({why}) <- read by {service}'s code, not given to {where}")

    assert not unresolved, report(f"{environment}: settings the code reads that the cloud does not give", unresolved)


# --------------------------------------------------------------------------------------------------
# Resource names: tables, buckets, queues, secrets, database, Kafka, service URLs
# --------------------------------------------------------------------------------------------------

TABLE_VARIABLES = {t.settings_field.upper(): t.name for t in ESTATE.tables}
BUCKET_VARIABLES = {b.settings_field.upper(): b.name for b in ESTATE.buckets}
QUEUE_VARIABLES = {q.settings_field.upper(): q.name for q in ESTATE.queues}
TOPIC_VARIABLES = {field.upper(): field for field in Settings.model_fields if field.endswith("_topic")}


def settings_sources(view: Cluster) -> list[tuple[str, str, Resolved | None, str]]:
    """(service or consumer, variable, value, where) of every setting a Lambda or pod gets, resolved."""
    sources: list[tuple[str, str, Resolved | None, str]] = []
    templates = view.templates
    unresolved: list[str] = []
    for function, variables in templates.lambda_environments().items():
        if not is_our_code(function):
            continue
        for name, value in variables.items():
            where = f"{function} Environment.Variables.{name}"
            resolved = resolve_or_report(lambda f=function, v=value: templates.resolve(f.stack, v), where, unresolved)
            sources.append((str(function), name, resolved, where))
    for workload, spec in view.workloads():
        if workload.applied_by_cdk:
            continue
        for container in containers(spec):
            for name, value in view.container_environment(workload, container).items():
                sources.append((str(workload), name, value.value, f"{workload} {name} from {value.origin}"))
    for failure in unresolved:
        sources.append(("", "", None, failure))
    return sources


def matches(
    resolved: Resolved, resource_type: str, literal_names: dict[str, Declared], attributes: set[str | None]
) -> bool:
    if resolved.only is not None:
        return resolved.only.type == resource_type and resolved.only.attribute in attributes
    return resolved.literal is not None and resolved.literal in literal_names


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_resource_name_a_service_gets_resolves_to_the_resource_that_declares_it(cluster, environment) -> None:
    view = cluster(environment)
    templates = view.templates
    tables = templates.property_values("AWS::DynamoDB::Table", "TableName")
    buckets = templates.property_values("AWS::S3::Bucket", "BucketName")
    queues = templates.property_values("AWS::SQS::Queue", "QueueName")
    secrets = templates.property_values("AWS::SecretsManager::Secret", "Name")
    topics = templates.property_values("AWS::MSK::Topic", "TopicName")
    services = {(s.namespace, s.name): s for s in view.find("Service")}
    unresolved = []
    for consumer, name, value, where in settings_sources(view):
        if not name:
            unresolved.append(where)
            continue
        if value is None:
            continue
        if name in TABLE_VARIABLES and not matches(value, "AWS::DynamoDB::Table", tables, {None}):
            unresolved.append(f"table {value} (no AWS::DynamoDB::Table) <- {where}")
        elif name in BUCKET_VARIABLES and not matches(value, "AWS::S3::Bucket", buckets, {None}):
            unresolved.append(f"bucket {value} (no AWS::S3::Bucket) <- {where}")
        elif name in QUEUE_VARIABLES:
            queue_name = (value.literal or "").rstrip("/").rsplit("/", 1)[-1]
            if not matches(value, "AWS::SQS::Queue", {}, {None, "QueueUrl"}) and queue_name not in queues:
                unresolved.append(f"queue URL {value} (no AWS::SQS::Queue) <- {where}")
        elif name.endswith("_SECRET_ARN"):
            secret_name = re.sub(r"-[A-Za-z0-9]{6}$", "", (value.literal or "").rsplit(":secret:", 1)[-1])
            if not matches(value, "AWS::SecretsManager::Secret", {}, {None, "Id"}) and secret_name not in secrets:
                unresolved.append(f"secret {value} (no AWS::SecretsManager::Secret) <- {where}")
        elif name == "DATABASE_URL":
            hosts = {"AWS::RDS::DBProxy", "AWS::RDS::DBInstance", "AWS::RDS::DBCluster", "AWS::RDS::DBProxyEndpoint"}
            if not any(ref.type in hosts for ref in value.refs):
                unresolved.append(f"database {value} (no RDS proxy, instance or cluster) <- {where}")
        elif name == "KAFKA_BOOTSTRAP_SERVERS":
            clusters = kafka_clusters(templates, value)
            if not clusters:
                unresolved.append(f"Kafka brokers {value} (no AWS::MSK::Cluster behind them) <- {where}")
        elif name in TOPIC_VARIABLES and value.literal not in topics:
            unresolved.append(f"Kafka topic {value} (no AWS::MSK::Topic) <- {where}")
        elif name.endswith("_SERVICE_URL"):
            url = value.literal
            local = IN_CLUSTER_URL.fullmatch(url or "")
            if url is None:
                if not any(
                    ref.type == "AWS::ApiGatewayV2::Api" and ref.attribute == "ApiEndpoint" for ref in value.refs
                ):
                    unresolved.append(f"service URL {value} (not an HTTP API endpoint) <- {where}")
            elif local is None or (local["namespace"], local["service"]) not in services:
                unresolved.append(f"service URL {url} (no Service of the cluster) <- {where}")

    for field_name in TOPIC_VARIABLES.values():
        default = str(Settings.model_fields[field_name].default)
        if default not in topics:
            unresolved.append(f"Kafka topic {default!r} (no AWS::MSK::Topic) <- Settings.{field_name} default")
    unresolved += topics_on_the_services_cluster(view, topics)

    assert not unresolved, report(f"{environment}: resource names that resolve to nothing", unresolved)


def kafka_clusters(templates: Templates, value: Resolved) -> set[tuple[str, str]]:
    """The MSK clusters behind a bootstrap value: referenced directly, or by the resource that looks them up."""
    found = set()
    for ref in value.refs:
        inner = templates.resolve(ref.stack, dict(ref.properties)).refs if ref.properties else ()
        for candidate in (ref, *inner):
            if candidate.type == "AWS::MSK::Cluster":
                found.add((candidate.stack, candidate.logical_id))
    return found


def topics_on_the_services_cluster(view: Cluster, topics: dict[str, Declared]) -> list[str]:
    """Each topic a service's code uses (Settings default, or the variable it gets) is a topic of the MSK
    cluster its KAFKA_BOOTSTRAP_SERVERS names."""
    templates = view.templates
    unresolved = []
    functions = service_functions(templates)
    pods = service_pods(view)
    for service in [*LAMBDA_SERVICES, *(w.name for w in WORKLOADS)]:
        fields = fields_read(service) & set(TOPIC_FIELDS)
        if not fields:
            continue
        if service in functions:
            function, variables = functions[service]
            values = {k: templates.resolve(function.stack, v) for k, v in variables.items()}
        elif service in pods:
            values = {k: v.value for k, v in pod_environment(view, service).items() if v.value is not None}
        else:
            continue
        bootstrap = values.get("KAFKA_BOOTSTRAP_SERVERS")
        clusters = kafka_clusters(templates, bootstrap) if bootstrap is not None else set()
        for field_name in sorted(fields):
            given = values.get(field_name.upper())
            topic = given.literal if given is not None else str(Settings.model_fields[field_name].default)
            declared = topics.get(str(topic))
            where = f"{service}'s settings.{field_name} ({'variable' if given is not None else 'default'})"
            if declared is None:
                unresolved.append(f"Kafka topic {topic!r} (no AWS::MSK::Topic) <- {where}")
                continue
            cluster_ref = templates.resolve(declared.stack, declared.properties["ClusterArn"]).only
            if cluster_ref is None or (cluster_ref.stack, cluster_ref.logical_id) not in clusters:
                unresolved.append(
                    f"Kafka topic {topic!r} is on {cluster_ref}, not on the cluster of {service}'s "
                    f"KAFKA_BOOTSTRAP_SERVERS ({bootstrap}) <- {where}"
                )
    return unresolved
