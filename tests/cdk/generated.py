"""Loaders of the generated output, for tests that check what ships rather than the source that makes it.

Views, each read from what a deployment consumes:

- `Templates` (`synthesize(environment)`, or `Templates.from_synthesis(synth)` over the session fixture
  of `tests/cdk/conftest.py`): the CloudFormation templates of one CDK environment, keyed by the stacks'
  short names. `resolve(stack, value)` follows `Ref`, `Fn::GetAtt`, `Fn::ImportValue` (across stacks,
  through the exporting stack's output), `Fn::Join` and `Fn::Sub` to the logical resources that declare
  a value (`Resolved`: literal text and `Declared` parts). `applied_objects()`/`manifests()` and
  `helm_charts()` are the Kubernetes objects and Helm releases CDK applies, their deploy-time values kept
  as `${cfn:N}` placeholders that `resolve_text` resolves.
- `gitops(environment)` -> `GitOps`: what the cluster of a CDK environment runs, followed as ArgoCD
  follows it: the preset's committed root (`eks_services/argocd/bootstrap/<root>.yaml`) -> every
  Application it reaches; git-sourced ones rendered with kustomize (`rendered`), chart ones with their
  Helm values (`Application.helm_values`: `valuesObject` over `values`).
- `Cluster(templates, gitops)`: both together, as objects placed in namespaces (`find`), the workloads
  and their pod specs, and `container_environment`: the variables a container gets, in Kubernetes'
  order, with CDK's values resolved.
- `workflows()` -> `Workflows`: `.github/workflows/*.yml` parsed; `steps()` carry their merged `env`,
  the CDK environment their job targets, and `expand` fills in `${{ matrix.* }}`/`${{ env.* }}` where
  the workflow itself says the values.

Nothing here asserts; the tests do. Several test modules share this API: extend it, do not change it.
"""

from __future__ import annotations

import atexit
import functools
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml

from cdk.config import DeploymentConfig, EnvironmentName, preset
from cdk.eks import argocd_bootstrap
from tests.infra import REPO, kustomize_build

ENVIRONMENTS: tuple[EnvironmentName, ...] = get_args(EnvironmentName)
WORKFLOWS_DIR = REPO / ".github" / "workflows"

KUBERNETES_RESOURCE = "Custom::AWSCDK-EKS-KubernetesResource"
HELM_CHART = "Custom::AWSCDK-EKS-HelmChart"
# `Ref` of these resources returns another resource's identifier: the resolver follows the property.
REF_PASS_THROUGH = {"AWS::SecretsManager::SecretTargetAttachment": "SecretId"}
PLACEHOLDER = re.compile(r"\$\{cfn:(\d+)\}")


class UnresolvedReference(LookupError):
    """A `Ref`/`GetAtt`/`ImportValue` whose target no template declares (CloudFormation would refuse it)."""


# --------------------------------------------------------------------------------------------------
# CloudFormation
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    """The logical resource (or parameter) a value comes from, and which of its attributes (None: `Ref`)."""

    stack: str
    logical_id: str
    type: str
    attribute: str | None
    properties: Mapping[str, Any] = field(compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        attribute = f".{self.attribute}" if self.attribute else ""
        return f"<{self.stack}/{self.logical_id}{attribute} ({self.type})>"


@dataclass(frozen=True)
class Computed:
    """An intrinsic whose result is derived from its inputs (`Fn::Select`, `Fn::If`, ...), not equal to them."""

    function: str
    inputs: tuple[str | Declared | Computed, ...]

    def __str__(self) -> str:
        return f"<{self.function}({', '.join(str(i) for i in self.inputs)})>"


Part = str | Declared | Computed


@dataclass(frozen=True)
class Resolved:
    """A value as a sequence of literal text and the resources that fill in the rest at deploy time."""

    parts: tuple[Part, ...]

    @staticmethod
    def of(parts: list[Part]) -> Resolved:
        merged: list[Part] = []
        for part in parts:
            if isinstance(part, str) and merged and isinstance(merged[-1], str):
                merged[-1] += part
            elif part != "":
                merged.append(part)
        return Resolved(tuple(merged))

    @property
    def literal(self) -> str | None:
        """The value when it is known at synth time (no deploy-time part), else None."""
        return "".join(self.parts) if all(isinstance(p, str) for p in self.parts) else None  # type: ignore[arg-type]

    @property
    def only(self) -> Declared | None:
        """The declaring resource when the whole value is one `Ref`/`GetAtt` (no text around it), else None."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Declared):
            return self.parts[0]
        return None

    @property
    def refs(self) -> tuple[Declared, ...]:
        """Every resource the value depends on, including those inside computed parts."""

        def walk(part: Part) -> Iterator[Declared]:
            if isinstance(part, Declared):
                yield part
            elif isinstance(part, Computed):
                for inner in part.inputs:
                    yield from walk(inner)

        return tuple(d for p in self.parts for d in walk(p))

    def __str__(self) -> str:
        return "".join(str(p) for p in self.parts)


@dataclass(frozen=True)
class Output:
    stack: str
    key: str
    value: Any
    description: str
    export: str | None


@dataclass(frozen=True)
class AppliedObject:
    """A Kubernetes object CDK applies, with the resource that applies it."""

    stack: str
    logical_id: str
    object: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.object.get("kind"))

    @property
    def name(self) -> str:
        return str(self.object.get("metadata", {}).get("name"))

    @property
    def namespace(self) -> str | None:
        return self.object.get("metadata", {}).get("namespace")


@dataclass(frozen=True)
class HelmChart:
    """A Helm release CDK installs (`Custom::AWSCDK-EKS-HelmChart`)."""

    stack: str
    logical_id: str
    release: str
    chart: str
    namespace: str
    repository: str | None
    version: str | None
    values: dict[str, Any]


class Templates:
    """The templates of one CDK environment, keyed by the stacks' short names (`Network`, `Data`, ...)."""

    def __init__(self, templates: Mapping[str, dict[str, Any]], *, config: DeploymentConfig) -> None:
        self.config = config
        self.environment: EnvironmentName = config.environment
        self.templates = dict(templates)
        self._exports: dict[str, tuple[str, Any]] = {}
        for stack, template in self.templates.items():
            for output in template.get("Outputs", {}).values():
                name = output.get("Export", {}).get("Name")
                if isinstance(name, str):
                    self._exports[name] = (stack, output["Value"])
        self._tokens: list[tuple[str, Any]] = []
        self._applied: list[AppliedObject] | None = None
        self._charts: list[HelmChart] | None = None

    @classmethod
    def from_synthesis(cls, synth: Any) -> Templates:
        """From the `synth` session fixture (`tests/cdk/conftest.py`)."""
        return cls(synth.templates, config=synth.config)

    @property
    def stacks(self) -> tuple[str, ...]:
        return tuple(self.templates)

    def stack_name(self, stack: str) -> str:
        return f"{self.config.stack_prefix}-{stack}"

    # --- resources and outputs ---------------------------------------------------------------------
    def resources(self, resource_type: str | None = None) -> dict[tuple[str, str], dict[str, Any]]:
        """`{(stack, logical id): resource}` of one type (every resource without a type)."""
        return {
            (stack, logical_id): resource
            for stack, template in self.templates.items()
            for logical_id, resource in template.get("Resources", {}).items()
            if resource_type is None or resource["Type"] == resource_type
        }

    def declared(self, resource_type: str) -> list[Declared]:
        return [
            Declared(stack, logical_id, resource["Type"], None, resource.get("Properties", {}))
            for (stack, logical_id), resource in self.resources(resource_type).items()
        ]

    def outputs(self) -> list[Output]:
        return [
            Output(
                stack=stack,
                key=key,
                value=output["Value"],
                description=str(output.get("Description", "")),
                export=output.get("Export", {}).get("Name"),
            )
            for stack, template in self.templates.items()
            for key, output in template.get("Outputs", {}).items()
        ]

    def property_values(self, resource_type: str, name: str) -> dict[str, Declared]:
        """`{literal value of property name: resource}` over the resources of a type (e.g. TableName)."""
        found: dict[str, Declared] = {}
        for declared in self.declared(resource_type):
            value = declared.properties.get(name)
            if value is None:
                continue
            literal = self.resolve(declared.stack, value).literal
            if literal is not None:
                found[literal] = declared
        return found

    # --- the resolver ------------------------------------------------------------------------------
    def resolve(self, stack: str, value: Any) -> Resolved:
        """What `value` (an expression of `stack`'s template) is made of: literal text and declaring resources.

        Raises `UnresolvedReference` on a reference no template declares.
        """
        return Resolved.of(self._parts(stack, value))

    def _declared(self, stack: str, logical_id: str, attribute: str | None) -> list[Part]:
        template = self.templates[stack]
        if logical_id.startswith("AWS::"):
            if logical_id == "AWS::Region":
                return [self.config.region]
            if logical_id == "AWS::NoValue":
                return []
            return [f"<{logical_id}>"]
        if logical_id in template.get("Parameters", {}):
            return [Declared(stack, logical_id, "Parameter", None, template["Parameters"][logical_id])]
        resource = template.get("Resources", {}).get(logical_id)
        if resource is None:
            raise UnresolvedReference(f"{self.stack_name(stack)} refers to {logical_id}, which it does not declare")
        properties = resource.get("Properties", {})
        through = REF_PASS_THROUGH.get(resource["Type"])
        if attribute is None and through is not None and through in properties:
            return self._parts(stack, properties[through])
        return [Declared(stack, logical_id, resource["Type"], attribute, properties)]

    def _parts(self, stack: str, value: Any) -> list[Part]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, bool | int | float):
            return [json.dumps(value)]
        if isinstance(value, list):
            return [Computed("List", tuple(p for v in value for p in self._parts(stack, v)))]
        if not isinstance(value, dict):
            return [Computed("Null", ())]
        key = next(iter(value), "")
        intrinsic = len(value) == 1 and (key in ("Ref", "Condition") or key.startswith("Fn::"))
        if not intrinsic:
            return [Computed("Object", tuple(p for v in value.values() for p in self._parts(stack, v)))]
        (function, argument), *_ = value.items()
        if function == "Ref":
            return self._declared(stack, argument, None)
        if function == "Fn::GetAtt":
            logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
            return self._declared(stack, logical_id, attribute)
        if function == "Fn::ImportValue":
            name = Resolved.of(self._parts(stack, argument)).literal
            if name is None or name not in self._exports:
                raise UnresolvedReference(f"{self.stack_name(stack)} imports {name!r}, which no stack exports")
            exporter, exported = self._exports[name]
            return self._parts(exporter, exported)
        if function == "Fn::Join":
            separator, items = argument
            parts: list[Part] = []
            for index, item in enumerate(items if isinstance(items, list) else [items]):
                if index:
                    parts.append(separator)
                parts += self._parts(stack, item)
            return parts
        if function == "Fn::Sub":
            text, variables = (argument, {}) if isinstance(argument, str) else argument
            parts = []
            for index, piece in enumerate(re.split(r"\$\{([^}!][^}]*)\}", text)):
                if index % 2 == 0:
                    parts.append(piece)
                elif piece in variables:
                    parts += self._parts(stack, variables[piece])
                else:
                    logical_id, _, attribute = piece.partition(".")
                    parts += self._declared(stack, logical_id, attribute or None)
            return parts
        inputs = argument if isinstance(argument, list) else [argument]
        return [Computed(function, tuple(p for i in inputs for p in self._parts(stack, i)))]

    # --- what CDK applies to the cluster ---------------------------------------------------------------
    def _render_json(self, stack: str, value: Any) -> Any:
        """A JSON document built with `Fn::Join` (manifests, Helm values): every deploy-time part becomes
        a `${cfn:N}` placeholder that `resolve_text` turns back into what declares it."""
        if isinstance(value, str):
            return json.loads(value)
        if isinstance(value, dict) and "Fn::Join" in value:
            separator, items = value["Fn::Join"]
            text: list[str] = []
            for index, item in enumerate(items):
                if index:
                    text.append(separator)
                if isinstance(item, str):
                    text.append(item)
                else:
                    self._tokens.append((stack, item))
                    text.append(f"${{cfn:{len(self._tokens) - 1}}}")
            return json.loads("".join(text))
        raise ValueError(f"{stack}: cannot render {value!r} as JSON")

    def resolve_text(self, text: str) -> Resolved:
        """A string from an applied manifest or Helm values, with its placeholders resolved."""
        parts: list[Part] = []
        for index, piece in enumerate(PLACEHOLDER.split(text)):
            if index % 2 == 0:
                parts.append(piece)
            else:
                stack, expression = self._tokens[int(piece)]
                parts += self._parts(stack, expression)
        return Resolved.of(parts)

    def applied_objects(self) -> list[AppliedObject]:
        """Every Kubernetes object CDK applies (`Custom::AWSCDK-EKS-KubernetesResource` manifests)."""
        if self._applied is None:
            self._applied = [
                AppliedObject(stack, logical_id, document)
                for (stack, logical_id), resource in self.resources(KUBERNETES_RESOURCE).items()
                for document in self._render_json(stack, resource["Properties"]["Manifest"])
            ]
        return self._applied

    def manifests(self) -> list[dict[str, Any]]:
        return [applied.object for applied in self.applied_objects()]

    def helm_charts(self) -> list[HelmChart]:
        if self._charts is None:
            self._charts = []
            for (stack, logical_id), resource in self.resources(HELM_CHART).items():
                properties = resource["Properties"]
                values = properties.get("Values")
                self._charts.append(
                    HelmChart(
                        stack=stack,
                        logical_id=logical_id,
                        release=str(properties.get("Release", logical_id)),
                        chart=str(properties.get("Chart")),
                        namespace=str(properties.get("Namespace", "default")),
                        repository=properties.get("Repository"),
                        version=properties.get("Version"),
                        values=self._render_json(stack, values) if values is not None else {},
                    )
                )
        return self._charts

    def addons(self) -> list[Declared]:
        return self.declared("AWS::EKS::Addon")

    def lambda_environments(self) -> dict[Declared, dict[str, Any]]:
        """`{function: Environment.Variables}` of every Lambda function (values are template expressions)."""
        return {
            function: dict(function.properties.get("Environment", {}).get("Variables", {}))
            for function in self.declared("AWS::Lambda::Function")
        }


@functools.cache
def synthesize(environment: EnvironmentName) -> Templates:
    """The templates of a CDK environment's preset, synthesised as `app.py` does (placeholder Lambda
    dependency layer, cdk.json's context, no cdk-nag: it changes no resource). Cached per process."""
    import os

    os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    from aws_cdk import App

    from cdk.deployment import build_deployment
    from cloudshop.build import prepare, prepare_storefront

    work = Path(tempfile.mkdtemp(prefix=f"cloudshop-{environment}-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    build = prepare(work / "lambda-build", allow_placeholder=True)
    storefront = prepare_storefront(work / "storefront-build", allow_placeholder=True)
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    app = App(outdir=str(work / "cdk.out"), context=context)
    config = preset(environment)
    deployment = build_deployment(app, config=config, build=build, storefront=storefront)
    assembly = app.synth()
    templates = {}
    for stack in deployment.stacks:
        short = stack.stack_name.removeprefix(f"{config.stack_prefix}-")
        templates[short] = assembly.get_stack_by_name(stack.stack_name).template
    return Templates(templates, config=config)


# --------------------------------------------------------------------------------------------------
# GitOps: ArgoCD roots, Applications, rendered overlays, Helm values
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Application:
    """An ArgoCD Application: its sources, destination and (for charts) Helm values."""

    document: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.document["metadata"]["name"])

    @property
    def namespace(self) -> str:
        """The destination namespace (where its namespaced objects land unless they say otherwise)."""
        return str(self.document["spec"].get("destination", {}).get("namespace", "default"))

    @property
    def sources(self) -> list[dict[str, Any]]:
        spec = self.document["spec"]
        return list(spec.get("sources") or [spec["source"]])

    @property
    def paths(self) -> list[str]:
        return [s["path"] for s in self.sources if "path" in s]

    @property
    def charts(self) -> list[dict[str, Any]]:
        return [s for s in self.sources if "chart" in s]

    @property
    def helm_values(self) -> dict[str, Any]:
        """The values the chart gets: `helm.values` (YAML text) with `helm.valuesObject` over it."""
        merged: dict[str, Any] = {}
        for source in self.charts:
            helm = source.get("helm", {})
            if isinstance(helm.get("values"), str):
                merged.update(yaml.safe_load(helm["values"]) or {})
            merged.update(helm.get("valuesObject") or {})
        return merged


@dataclass(frozen=True)
class GitOps:
    """What the cluster of one CDK environment runs, as ArgoCD reaches it from the root CDK applies."""

    environment: EnvironmentName
    config: DeploymentConfig
    root: list[dict[str, Any]]
    applications: dict[str, Application]
    rendered: dict[str, list[dict[str, Any]]]

    @property
    def services(self) -> Application:
        return self.applications["cloudshop-services"]

    @property
    def overlay(self) -> str:
        """The kustomize overlay the services run (`eks_services/k8s/overlays/<x>`)."""
        (path,) = self.services.paths
        return path

    @property
    def objects(self) -> list[dict[str, Any]]:
        """The rendered objects of the services' overlay."""
        return self.rendered["cloudshop-services"]

    def placed_objects(self) -> Iterator[tuple[Application, str, dict[str, Any]]]:
        """Every rendered object of every git-sourced Application, with the namespace it lands in."""
        for name, objects in self.rendered.items():
            application = self.applications[name]
            for obj in objects:
                yield application, obj.get("metadata", {}).get("namespace") or application.namespace, obj

    def helm_applications(self) -> list[Application]:
        return [a for a in self.applications.values() if a.charts]


@functools.cache
def gitops(environment: EnvironmentName) -> GitOps:
    """Follow the root of a CDK environment (its preset's `argocd_bootstrap`) through every Application."""
    config = preset(environment)
    root = argocd_bootstrap(config.argocd_bootstrap)
    applications: dict[str, Application] = {}
    rendered: dict[str, list[dict[str, Any]]] = {}
    pending = [Application(d) for d in root if d.get("kind") == "Application"]
    while pending:
        application = pending.pop(0)
        if application.name in applications:
            continue
        applications[application.name] = application
        if application.paths:
            objects = [o for path in application.paths for o in kustomize_build(path)]
            rendered[application.name] = objects
            pending += [Application(o) for o in objects if o.get("kind") == "Application"]
    return GitOps(environment=environment, config=config, root=root, applications=applications, rendered=rendered)


POD_TEMPLATE_PATHS = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}


def pod_spec(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pod spec of a workload object (None for kinds that run no pods)."""
    path = POD_TEMPLATE_PATHS.get(str(obj.get("kind")))
    if path is None:
        return None
    spec: Any = obj
    for key in path:
        spec = spec.get(key, {}) if isinstance(spec, dict) else {}
    return spec if isinstance(spec, dict) else None


def containers(spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Containers and init containers of a pod spec."""
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def describe(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata", {})
    namespace = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
    return f"{obj.get('kind')} {namespace}{metadata.get('name')}"


# --------------------------------------------------------------------------------------------------
# GitHub workflows
# --------------------------------------------------------------------------------------------------

EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


@dataclass(frozen=True)
class Step:
    workflow: str
    job_id: str
    index: int
    step: dict[str, Any]
    job: dict[str, Any] = field(repr=False)
    env: dict[str, str] = field(repr=False)

    @property
    def uses(self) -> str:
        """The action without its ref (`aws-actions/configure-aws-credentials`), or ''."""
        return str(self.step.get("uses", "")).split("@", 1)[0]

    @property
    def inputs(self) -> dict[str, Any]:
        return dict(self.step.get("with", {}))

    @property
    def target(self) -> str | None:
        """The CDK environment the job works on: its `CLOUDSHOP_ENV`, else its GitHub `environment` when
        that is a CDK environment's name; None for a job of the repository's variables alone."""
        named = self.env.get("CLOUDSHOP_ENV")
        if named and not EXPRESSION.search(named):
            return named
        environment = self.job.get("environment")
        name = environment.get("name") if isinstance(environment, dict) else environment
        return str(name) if name in ENVIRONMENTS else None

    def where(self) -> str:
        label = self.step.get("name") or self.step.get("id") or self.step.get("uses") or "run"
        return f"{self.workflow} jobs.{self.job_id}.steps[{self.index}] ({label})"


class Workflows:
    """Every workflow under `.github/workflows`, parsed (`on` stays `on`, not YAML 1.1's True)."""

    def __init__(self, directory: Path = WORKFLOWS_DIR) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        for path in sorted([*directory.glob("*.yml"), *directory.glob("*.yaml")]):
            document = yaml.safe_load(path.read_text()) or {}
            if True in document:
                document["on"] = document.pop(True)
            self.documents[str(path.relative_to(REPO))] = document

    def steps(self) -> list[Step]:
        found = []
        for workflow, document in self.documents.items():
            for job_id, job in (document.get("jobs") or {}).items():
                for index, step in enumerate(job.get("steps") or []):
                    env = {**(document.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}
                    found.append(Step(workflow, job_id, index, step, job, {k: str(v) for k, v in env.items()}))
        return found

    def matrix(self, workflow: str, job_id: str) -> dict[str, list[str] | None]:
        """The values of each matrix key of a job: a literal list; or, when the matrix is
        `fromJSON(needs.<job>.outputs.<x>)`, the filters of the `dorny/paths-filter` step behind it (its
        `changes` output) or the words of the env variable its script loops over; None when the workflow
        does not say."""
        document = self.documents[workflow]
        matrix = ((document["jobs"][job_id].get("strategy") or {}).get("matrix")) or {}
        values: dict[str, list[str] | None] = {}
        for key, value in matrix.items():
            if key in ("include", "exclude"):
                continue
            if isinstance(value, list):
                values[key] = [str(v) for v in value]
                continue
            values[key] = None
            match = re.fullmatch(r"\$\{\{\s*fromJSON\(\s*needs\.([\w-]+)\.outputs\.([\w-]+)\s*\)\s*\}\}", str(value))
            if not match:
                continue
            producer = document["jobs"].get(match[1], {})
            output = str((producer.get("outputs") or {}).get(match[2], ""))
            source = re.fullmatch(r"\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}", output)
            if not source:
                continue
            for step in producer.get("steps") or []:
                if step.get("id") != source[1]:
                    continue
                if str(step.get("uses", "")).startswith("dorny/paths-filter@") and source[2] == "changes":
                    values[key] = list(yaml.safe_load(step.get("with", {}).get("filters", "")) or {})
                elif "run" in step:
                    values[key] = self._loop_values(document, producer, step)
        for include in matrix.get("include") or []:
            for key, value in include.items():
                current = values.get(key) or []
                values[key] = [*current, str(value)] if str(value) not in current else current
        return values

    @staticmethod
    def _loop_values(document: dict[str, Any], job: dict[str, Any], step: dict[str, Any]) -> list[str] | None:
        """The candidates of a script that picks its output from one `for x in $VAR` loop over an `env`
        variable of the workflow, job or step (the output is a subset of the words of VAR)."""
        env = {**(document.get("env") or {}), **(job.get("env") or {}), **(step.get("env") or {})}
        loops = re.findall(r"\bfor\s+\w+\s+in\s+\"?\$\{?(\w+)\}?\"?\s*;?\s*(?:do\b|$)", str(step["run"]), re.M)
        known = [str(env[name]).split() for name in dict.fromkeys(loops) if name in env]
        return known[0] if len(known) == 1 else None

    def expand(self, step: Step, text: str) -> list[str]:
        """`text` once per combination of the `matrix.*` values it names, with `env.*` substituted; other
        expressions (registry outputs, `github.sha`, `vars.*`) are kept as written."""
        matrix = self.matrix(step.workflow, step.job_id)
        variants = [text]
        for expression in dict.fromkeys(EXPRESSION.findall(text)):
            reference = re.fullmatch(r"(matrix|env)\.([\w-]+)", expression)
            if reference is None:
                continue
            kind, key = reference[1], reference[2]
            if kind == "env":
                if key not in step.env:
                    raise LookupError(f"{step.where()}: ${{{{ env.{key} }}}} is not set")
                choices = [step.env[key]]
            else:
                found = matrix.get(key)
                if not found:
                    raise LookupError(f"{step.where()}: the values of matrix.{key} are not in the workflow")
                choices = found
            pattern = re.compile(r"\$\{\{\s*" + re.escape(expression) + r"\s*\}\}")
            variants = [pattern.sub(lambda _m, c=c: c, v) for v in variants for c in choices]
        return variants


@functools.cache
def workflows() -> Workflows:
    return Workflows()


def variable(expression: str) -> tuple[str, str] | None:
    """(`vars`|`secrets`|`env`, name) when `expression` is exactly `${{ <context>.<name> }}`."""
    match = re.fullmatch(r"\s*\$\{\{\s*(vars|secrets|env)\.([\w-]+)\s*\}\}\s*", expression)
    return (match[1], match[2]) if match else None


def image_repository(reference: str) -> tuple[str, str] | None:
    """(registry, repository) of an image reference `registry/repo[:tag][@digest]`; None without a registry."""
    without_digest = reference.split("@", 1)[0]
    registry, _, rest = without_digest.partition("/")
    if not rest or not ("." in registry or ":" in registry or registry.startswith("${{") or registry == "localhost"):
        return None
    repository = re.sub(r":[^/:]*$", "", rest)
    return registry, repository


# --------------------------------------------------------------------------------------------------
# One cluster: what CDK applies and what ArgoCD renders, together
# --------------------------------------------------------------------------------------------------

CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "StorageClass",
        "CSIDriver",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
        "PersistentVolume",
    }
)


@dataclass(frozen=True)
class Placed:
    """A Kubernetes object as it lands in the cluster: its namespace (None if cluster-scoped) and origin."""

    object: dict[str, Any]
    namespace: str | None
    origin: str
    applied_by_cdk: bool

    @property
    def kind(self) -> str:
        return str(self.object.get("kind"))

    @property
    def name(self) -> str:
        return str(self.object.get("metadata", {}).get("name"))

    def __str__(self) -> str:
        namespace = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {namespace}{self.name} ({self.origin})"


@dataclass(frozen=True)
class EnvValue:
    """One environment variable of a container: where it comes from and, if known, its value."""

    name: str
    value: Resolved | None
    origin: str


class Cluster:
    """The objects of one CDK environment's cluster: CDK's manifests plus every git-sourced Application."""

    def __init__(self, templates: Templates, view: GitOps) -> None:
        self.templates = templates
        self.gitops = view
        self.objects: list[Placed] = []
        for applied in templates.applied_objects():
            scoped = applied.kind in CLUSTER_SCOPED
            self.objects.append(
                Placed(
                    applied.object,
                    None if scoped else (applied.namespace or "default"),
                    f"CDK {templates.stack_name(applied.stack)}/{applied.logical_id}",
                    True,
                )
            )
        for application, namespace, obj in view.placed_objects():
            scoped = obj.get("kind") in CLUSTER_SCOPED
            self.objects.append(Placed(obj, None if scoped else namespace, f"Application {application.name}", False))

    def find(self, kind: str, *, namespace: str | None = None, name: str | None = None) -> list[Placed]:
        return [
            p
            for p in self.objects
            if p.kind == kind and (namespace is None or p.namespace == namespace) and (name is None or p.name == name)
        ]

    def value(self, placed: Placed, text: Any) -> Resolved:
        """A string of an object, resolved: CDK's manifests carry deploy-time placeholders."""
        text = str(text)
        return self.templates.resolve_text(text) if placed.applied_by_cdk else Resolved.of([text])

    def workloads(self) -> list[tuple[Placed, dict[str, Any]]]:
        """Every object that runs pods, with its pod spec."""
        found = []
        for placed in self.objects:
            spec = pod_spec(placed.object)
            if spec is not None:
                found.append((placed, spec))
        return found

    def container_environment(self, workload: Placed, container: Mapping[str, Any]) -> dict[str, EnvValue]:
        """The variables a container gets, in Kubernetes' order (envFrom in order, then env): sources that
        do not exist (optional ones) add nothing; values from Secrets are unknown (None)."""
        environment: dict[str, EnvValue] = {}
        namespace = workload.namespace
        for source in container.get("envFrom") or []:
            prefix = source.get("prefix", "")
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key not in source:
                    continue
                for found in self.find(kind, namespace=namespace, name=source[key]["name"]):
                    data = {**found.object.get("data", {}), **found.object.get("stringData", {})}
                    for name, text in data.items():
                        value = self.value(found, text) if kind == "ConfigMap" else None
                        environment[prefix + name] = EnvValue(prefix + name, value, str(found))
        for entry in container.get("env") or []:
            if "value" in entry:
                environment[entry["name"]] = EnvValue(entry["name"], Resolved.of([str(entry["value"])]), str(workload))
                continue
            reference = entry.get("valueFrom", {})
            kind, key = (
                ("ConfigMap", "configMapKeyRef") if "configMapKeyRef" in reference else ("Secret", "secretKeyRef")
            )
            if key not in reference:
                environment[entry["name"]] = EnvValue(entry["name"], None, f"{workload} (fieldRef)")
                continue
            ref = reference[key]
            for found in self.find(kind, namespace=namespace, name=ref["name"]):
                data = {**found.object.get("data", {}), **found.object.get("stringData", {})}
                if ref["key"] in data:
                    value = self.value(found, data[ref["key"]]) if kind == "ConfigMap" else None
                    environment[entry["name"]] = EnvValue(entry["name"], value, f"{found} key {ref['key']}")
        return environment


def walk(value: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(dotted path, key, value) of every mapping entry under `value`, depth first."""
    if isinstance(value, dict):
        for key, inner in value.items():
            here = f"{path}.{key}" if path else str(key)
            yield here, key, inner
            yield from walk(inner, here)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield from walk(inner, f"{path}[{index}]")
