"""The EKS cluster's workloads: the Deployments of the overlay ArgoCD syncs, run as local processes.

The cluster's objects are the rendered overlay plus the manifests CDK applies (the `cloudshop-aws`
ConfigMap, the TargetGroupBindings). Each Deployment runs one pod (the HPA's replicas add nothing to
a rehearsal) whose container gets what Kubernetes would give it:

- the command: the Deployment's `command`/`args`, else its image's ENTRYPOINT/CMD, read from the
  Dockerfile the deliver workflow builds the image from (`eks_services/<name>/Dockerfile` for
  repository `cloudshop/<name>`), with only what the image copies importable;
- the environment: the image's ENV, then `envFrom` sources in order, then `env` (with `$(VAR)`
  expansion), optional sources that do not exist left out, a missing required one an error;
- the network: each container port is a loopback port, and each Service name
  (`<name>.<namespace>.svc.cluster.local`) leads to the pod its selector picks.
Readiness is the container's own `readinessProbe`.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import sys
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cdk.rehearsal.network import Destination, NetworkMap, local_kafka_client
from tests.cdk.rehearsal.processes import HOST, Child, RehearsalError, free_port
from tests.infra import REPO

ENTRY_SCRIPT = Path(__file__).with_name("container_entry.py")
READY_TIMEOUT = 90.0
_VARIABLE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


@dataclass(frozen=True)
class Image:
    """What a Dockerfile's final stage runs: ENTRYPOINT, CMD, ENV, and the project paths it ships."""

    dockerfile: Path
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: dict[str, str]
    shipped: tuple[str, ...]

    @staticmethod
    def from_dockerfile(path: Path) -> Image:
        instructions: list[tuple[str, str]] = []
        pending = ""
        for line in path.read_text().splitlines():
            if not pending and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            text = (pending + line).strip()
            pending = ""
            keyword, _, rest = text.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
        final = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
        entrypoint: tuple[str, ...] = ()
        cmd: tuple[str, ...] = ()
        env: dict[str, str] = {}
        shipped: list[str] = []
        for index, (keyword, rest) in enumerate(instructions):
            words = shlex.split(rest) if keyword == "COPY" else []
            if words and not any(w.startswith("--from") for w in words):
                # Build-context paths: what `pip install .` then installs into the image.
                shipped += [w for w in words if not w.startswith("--")][:-1]
            if index < final:
                continue
            if keyword == "ENV":
                words = shlex.split(rest)
                if words and "=" not in words[0]:
                    env[words[0]] = " ".join(words[1:])
                else:
                    for word in words:
                        name, _, value = word.partition("=")
                        env[name] = value
            elif keyword in ("ENTRYPOINT", "CMD"):
                words_ = tuple(json.loads(rest)) if rest.startswith("[") else ("/bin/sh", "-c", rest)
                if keyword == "ENTRYPOINT":
                    entrypoint = words_
                else:
                    cmd = words_
        return Image(path, entrypoint, cmd, env, tuple(shipped))


def dockerfile_for(image: str) -> Path:
    """The deliver workflow builds `eks_services/<name>/Dockerfile` into the repository `cloudshop/<name>`."""
    repository = image.split("@", 1)[0].rsplit(":", 1)[0]
    name = repository.rsplit("/", 1)[-1]
    path = REPO / "eks_services" / name / "Dockerfile"
    if not path.exists():
        raise RehearsalError(f"image {image}: no Dockerfile at {path}")
    return path


@dataclass
class Pod:
    namespace: str
    name: str
    labels: dict[str, str]
    container: dict[str, Any]
    ports: dict[str, int]  # container port (number as text, and its name) -> loopback port
    child: Child | None = None
    env: dict[str, str] = field(default_factory=dict)

    def local_port(self, port: int | str) -> int:
        key = str(port)
        if key not in self.ports:
            raise RehearsalError(f"pod {self.namespace}/{self.name} has no container port {port}")
        return self.ports[key]


class Cluster:
    def __init__(
        self,
        objects: list[dict[str, Any]],
        *,
        network: NetworkMap,
        local_env: Mapping[str, str],
        work: Path,
    ) -> None:
        self.objects = objects
        self.network = network
        self.local_env = dict(local_env)
        self.work = work
        self.pods = [self._pod(d) for d in self.find("Deployment")]
        for service in self.find("Service"):
            self._route_service(service)

    # --- objects ---------------------------------------------------------------------------------------
    def find(self, kind: str, namespace: str | None = None, name: str | None = None) -> list[dict[str, Any]]:
        return [
            o
            for o in self.objects
            if o.get("kind") == kind
            and (namespace is None or o["metadata"].get("namespace", "default") == namespace)
            and (name is None or o["metadata"]["name"] == name)
        ]

    def _data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        found = self.find(kind, namespace, name)
        if not found:
            return None
        document = found[-1]
        if kind == "Secret":
            data = {k: base64.b64decode(v).decode() for k, v in (document.get("data") or {}).items()}
            return {**data, **(document.get("stringData") or {})}
        return {k: str(v) for k, v in (document.get("data") or {}).items()}

    # --- pods and services --------------------------------------------------------------------------------
    def _pod(self, deployment: dict[str, Any]) -> Pod:
        template = deployment["spec"]["template"]
        containers = template["spec"]["containers"]
        if len(containers) != 1 or template["spec"].get("initContainers"):
            raise RehearsalError(
                f"Deployment {deployment['metadata']['name']}: only one container per pod is rehearsed"
            )
        container = containers[0]
        ports: dict[str, int] = {}
        for port in container.get("ports") or []:
            local = free_port()
            ports[str(port["containerPort"])] = local
            if "name" in port:
                ports[port["name"]] = local
        return Pod(
            namespace=deployment["metadata"].get("namespace", "default"),
            name=deployment["metadata"]["name"],
            labels=dict(template["metadata"].get("labels") or {}),
            container=container,
            ports=ports,
        )

    def _route_service(self, service: dict[str, Any]) -> None:
        namespace = service["metadata"].get("namespace", "default")
        name = service["metadata"]["name"]
        selector = service["spec"].get("selector") or {}
        pods = [p for p in self.pods if p.namespace == namespace and selector.items() <= p.labels.items()]
        if not pods:
            return
        for port in service["spec"].get("ports") or []:
            target = port.get("targetPort", port["port"])
            for host in (f"{name}.{namespace}.svc.cluster.local", f"{name}.{namespace}.svc"):
                self.network.add(host, int(port["port"]), Destination(HOST, pods[0].local_port(target)))

    def service_url(self, namespace: str, name: str, port: int) -> str:
        destination = self.network.lookup(f"{name}.{namespace}.svc.cluster.local", port)
        if destination is None:
            raise RehearsalError(f"Service {namespace}/{name}:{port} leads to no pod")
        return f"http://{destination.host}:{destination.port}"

    def target_group_url(self, target_group_arn: str) -> str:
        """The AWS Load Balancer Controller's TargetGroupBinding: target group -> Service -> its pods."""
        for binding in self.find("TargetGroupBinding"):
            spec = binding["spec"]
            if spec.get("targetGroupARN") == target_group_arn:
                namespace = binding["metadata"].get("namespace", "default")
                return self.service_url(namespace, spec["serviceRef"]["name"], int(spec["serviceRef"]["port"]))
        raise RehearsalError(f"no TargetGroupBinding binds {target_group_arn}")

    # --- the container's environment and command ------------------------------------------------------------
    def container_env(self, pod: Pod, image: Image) -> dict[str, str]:
        """The environment Kubernetes gives the container (image ENV, `envFrom`, `env`), cloud values."""
        env = {k: v for k, v in image.env.items() if k != "PATH"}
        env["HOSTNAME"] = f"{pod.name}-rehearsal"
        where = f"pod {pod.namespace}/{pod.name}"
        for source in pod.container.get("envFrom") or []:
            kind, reference = (
                ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else ("Secret", source["secretRef"])
            )
            data = self._data(kind, pod.namespace, reference["name"])
            if data is None:
                if reference.get("optional"):
                    continue
                raise RehearsalError(f"{where}: {kind} {reference['name']} does not exist (CreateContainerConfigError)")
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in data.items() if _ENV_NAME.match(prefix + k)})
        for variable in pod.container.get("env") or []:
            name = variable["name"]
            if "value" in variable:
                env[name] = self._on_loopback(pod, _expand(str(variable["value"]), env))
                continue
            source = variable.get("valueFrom") or {}
            if "configMapKeyRef" in source or "secretKeyRef" in source:
                kind = "ConfigMap" if "configMapKeyRef" in source else "Secret"
                reference = source.get("configMapKeyRef") or source["secretKeyRef"]
                data = self._data(kind, pod.namespace, reference["name"])
                if data is None or reference["key"] not in data:
                    if reference.get("optional"):
                        continue
                    raise RehearsalError(f"{where}: {name} from missing {kind} {reference['name']}/{reference['key']}")
                env[name] = data[reference["key"]]
            elif "fieldRef" in source:
                fields = {"metadata.name": env["HOSTNAME"], "metadata.namespace": pod.namespace, "status.podIP": HOST}
                env[name] = fields[source["fieldRef"]["fieldPath"]]
            else:
                raise RehearsalError(f"{where}: {name} has a valueFrom the rehearsal does not know: {source}")
        return env

    @staticmethod
    def _on_loopback(pod: Pod, value: str) -> str:
        """A literal the pod listens by, as `command` rewrites `--host` and `--port`: every address
        (0.0.0.0) is loopback, and the number of one of its container ports is the port standing in
        for it (HEALTH_PORT, the liveness port)."""
        if value == "0.0.0.0":
            return HOST
        if value.isdigit() and any(
            str(port.get("containerPort")) == value for port in pod.container.get("ports") or []
        ):
            return str(pod.local_port(value))
        return value

    def command(self, pod: Pod, image: Image) -> list[str]:
        entrypoint = list(pod.container.get("command") or image.entrypoint)
        args = list(pod.container.get("args") or ([] if pod.container.get("command") else image.cmd))
        argv = entrypoint + args
        # The pod's address: listen on loopback, on the port that stands in for the container port.
        for option, replace in (("--host", lambda _v: HOST), ("--port", lambda v: str(pod.local_port(v)))):
            if option in argv and argv.index(option) + 1 < len(argv):
                position = argv.index(option) + 1
                argv[position] = replace(argv[position])
        return argv

    def _image_root(self, pod: Pod, image: Image) -> Path:
        root = self.work / "images" / pod.name
        for path in image.shipped:
            source = REPO / path
            if source.suffix == ".py" or source.is_dir():
                target = root / path
                target.parent.mkdir(parents=True, exist_ok=True)
                if source.is_dir():
                    shutil.copytree(source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy2(source, target)
        return root

    # --- lifecycle ----------------------------------------------------------------------------------------
    def start(self) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(self.pods))) as pool:
            for future in [pool.submit(self._start, pod) for pod in self.pods]:
                future.result()

    def _start(self, pod: Pod) -> None:
        image = Image.from_dockerfile(dockerfile_for(pod.container["image"]))
        pod.env = self.container_env(pod, image)
        env = {
            **local_kafka_client(self.network.rewrite_environment(pod.env)),
            **self.local_env,
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        }
        # The container's writable /tmp (an emptyDir) and its working directory (WORKDIR /tmp).
        scratch = self.work / "pods" / pod.name / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(scratch)
        argv = [sys.executable, "-I", "-u", str(ENTRY_SCRIPT), f"--root={self._image_root(pod, image)}", "--"]
        pod.child = Child(
            f"pod {pod.namespace}/{pod.name}",
            argv + self.command(pod, image),
            env=env,
            cwd=scratch,
            log=self.work / "pods" / f"{pod.name}.log",
        ).start()
        # As the kubelet does: the start-up probe first, then readiness (required: it is what the
        # rehearsal waits for), then liveness, each on the port the manifest names.
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = (pod.container.get(kind) or {}).get("httpGet")
            if probe is None:
                if kind == "readinessProbe":
                    raise RehearsalError(f"pod {pod.namespace}/{pod.name} has no HTTP readinessProbe to wait for")
                continue
            pod.child.wait_http(
                f"http://{HOST}:{pod.local_port(probe['port'])}{probe.get('path', '/')}", timeout=READY_TIMEOUT
            )

    def evidence(self) -> str:
        return "\n".join(pod.child.evidence() for pod in self.pods if pod.child is not None)

    def stop(self) -> None:
        for pod in self.pods:
            if pod.child is not None:
                pod.child.stop()


def _expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion: defined variables are substituted, `$$` is a literal `$`."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match[1], match[0])

    return _VARIABLE.sub(replace, value)
