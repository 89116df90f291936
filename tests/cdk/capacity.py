"""A model of what the Kubernetes scheduler can place on an EKS managed node group.

Pure functions, no Kubernetes and no AWS: a node's allocatable CPU, memory and pod slots as EKS's
AL2023 AMI (nodeadm) computes them, pod requests read from pod specs and Helm-style `resources`,
and a best-fit-decreasing packing in which a pod never spans nodes and a zone-spread group keeps
its `maxSkew`. `tests/cdk/test_eks_capacity.py` feeds it every pod an environment's cluster runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

MIB = 1024 * 1024
_CPU = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>m?)$")
_MEMORY = re.compile(r"^(?P<number>\d+(?:\.\d+)?)(?P<unit>Ki|Mi|Gi|Ti|k|K|M|G|T)?$")
_MEMORY_UNITS = {
    None: 1,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
}


def millicores(quantity: str | int | float) -> int:
    """`500m` -> 500, `2` -> 2000, `0.25` -> 250."""
    match = _CPU.match(str(quantity))
    if match is None:
        raise ValueError(f"not a CPU quantity: {quantity!r}")
    number = float(match["number"])
    return math.ceil(number if match["unit"] else number * 1000)


def bytes_of(quantity: str | int | float) -> int:
    """`512Mi` -> 536870912, `1G` -> 10**9."""
    match = _MEMORY.match(str(quantity))
    if match is None:
        raise ValueError(f"not a memory quantity: {quantity!r}")
    return math.ceil(float(match["number"]) * _MEMORY_UNITS[match["unit"]])


@dataclass(frozen=True)
class Resources:
    """CPU in millicores, memory in bytes, pod slots."""

    cpu: int = 0
    memory: int = 0
    pods: int = 0

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.cpu + other.cpu, self.memory + other.memory, self.pods + other.pods)

    def __sub__(self, other: Resources) -> Resources:
        return Resources(self.cpu - other.cpu, self.memory - other.memory, self.pods - other.pods)

    def fits_in(self, free: Resources) -> bool:
        return self.cpu <= free.cpu and self.memory <= free.memory and self.pods <= free.pods

    def __str__(self) -> str:
        return f"{self.cpu}m CPU, {self.memory / MIB:.0f}Mi"


def requests(resources: Mapping[str, Any] | None) -> Resources:
    """One container's requests from its `resources` block (a pod spec's or a Helm value's); what it
    leaves out the scheduler counts as zero."""
    declared = (resources or {}).get("requests") or {}
    return Resources(
        cpu=millicores(declared["cpu"]) if "cpu" in declared else 0,
        memory=bytes_of(declared["memory"]) if "memory" in declared else 0,
    )


def pod_requests(spec: Mapping[str, Any]) -> Resources:
    """What the scheduler reserves for a pod: the sum of its containers, or its largest init container
    if that is more (init containers run one at a time, before the others), plus one pod slot."""
    running = sum((requests(c.get("resources")) for c in spec.get("containers", [])), Resources())
    init = [requests(c.get("resources")) for c in spec.get("initContainers", [])]
    return Resources(
        cpu=max([running.cpu, *(i.cpu for i in init)]),
        memory=max([running.memory, *(i.memory for i in init)]),
        pods=1,
    )


@dataclass(frozen=True)
class Instance:
    """An EC2 instance type as nodeadm sees it: vCPUs, memory, and the VPC CNI's pod limit."""

    vcpus: int
    memory_mib: int
    # eni-max-pods.txt in awslabs/amazon-eks-ami: ENIs x (IPv4 addresses per ENI - 1) + 2.
    max_pods: int


INSTANCES = {
    "m6i.large": Instance(vcpus=2, memory_mib=8 * 1024, max_pods=29),
    "m6i.xlarge": Instance(vcpus=4, memory_mib=16 * 1024, max_pods=58),
    "m7i.large": Instance(vcpus=2, memory_mib=8 * 1024, max_pods=29),
    "m7i.xlarge": Instance(vcpus=4, memory_mib=16 * 1024, max_pods=58),
}
# The kernel and firmware keep part of the nominal memory: a node reports less than the instance's
# GiB. Karpenter assumes 7.5% (its `vmMemoryOverheadPercent` default, chosen to err low).
VM_MEMORY_OVERHEAD = 0.075
EVICTION_HARD_MEMORY = 100 * MIB


def kube_reserved_cpu(vcpus: int) -> int:
    """nodeadm's `kubeReserved.cpu`: 6% of the first core, 1% of the second, 0.5% of the third and
    fourth, 0.25% of the rest (awslabs/amazon-eks-ami, nodeadm/internal/kubelet/config.go)."""
    total = vcpus * 1000
    reserved = 0.0
    for start, end, share in ((0, 1000, 0.06), (1000, 2000, 0.01), (2000, 4000, 0.005), (4000, math.inf, 0.0025)):
        reserved += max(0.0, min(total, end) - start) * share
    return math.floor(reserved)


def kube_reserved_memory(max_pods: int) -> int:
    """nodeadm's `kubeReserved.memory`: 11 MiB per pod the node may run, plus 255 MiB."""
    return (11 * max_pods + 255) * MIB


def allocatable(instance: Instance) -> Resources:
    """What the kubelet of an EKS AL2023 node offers pods: capacity minus `kubeReserved` minus the
    `evictionHard` memory threshold (nodeadm sets no `systemReserved` amounts, only its cgroup)."""
    capacity_memory = math.floor(instance.memory_mib * (1 - VM_MEMORY_OVERHEAD)) * MIB
    return Resources(
        cpu=instance.vcpus * 1000 - kube_reserved_cpu(instance.vcpus),
        memory=capacity_memory - kube_reserved_memory(instance.max_pods) - EVICTION_HARD_MEMORY,
        pods=instance.max_pods,
    )


@dataclass(frozen=True)
class Pod:
    """One pod to place. `spread` names a group whose pods spread over zones with
    `whenUnsatisfiable: DoNotSchedule` and `max_skew`; `None` = anywhere."""

    name: str
    needs: Resources
    spread: str | None = None
    max_skew: int = 1


@dataclass
class Node:
    zone: int
    free: Resources
    pods: list[Pod] = field(default_factory=list)


def spread_zones(nodes: int, zones: int) -> list[int]:
    """The zone of each node: an Auto Scaling group over one subnet per zone keeps the zones within
    one node of each other."""
    return [index % zones for index in range(nodes)]


def pack(
    pods: Sequence[Pod], *, daemons: Iterable[Resources], nodes: int, zones: int, node: Resources
) -> tuple[list[Node], list[Pod]]:
    """Place `pods` on `nodes` identical nodes of `node` allocatable, each already running one pod of
    every DaemonSet in `daemons`: best fit, largest pods first. A pod goes on one node or nowhere; a
    pod of a spread group only into a zone where the group has its fewest pods, or up to `max_skew`
    more. Returns the nodes and the pods that found no room (empty = everything runs)."""
    per_node = sum(daemons, Resources())
    layout = [Node(zone=zone, free=node - per_node) for zone in spread_zones(nodes, zones)]
    if any(n.free.cpu < 0 or n.free.memory < 0 or n.free.pods < 0 for n in layout):
        return layout, list(pods)
    # Topology spread counts only the zones that have a node.
    domains = sorted({n.zone for n in layout})
    counts: dict[str, dict[int, int]] = {}
    unplaced: list[Pod] = []

    def weight(pod: Pod) -> float:
        return max(pod.needs.cpu / node.cpu, pod.needs.memory / node.memory)

    for pod in sorted(pods, key=weight, reverse=True):
        allowed = domains
        if pod.spread is not None:
            per_zone = counts.setdefault(pod.spread, dict.fromkeys(domains, 0))
            fewest = min(per_zone.values())
            allowed = [z for z in domains if per_zone[z] + 1 - fewest <= pod.max_skew]
        candidates = [n for n in layout if n.zone in allowed and pod.needs.fits_in(n.free)]
        if not candidates:
            unplaced.append(pod)
            continue
        best = min(candidates, key=lambda n: weight(Pod("", n.free - pod.needs)))
        best.free = best.free - pod.needs
        best.pods.append(pod)
        if pod.spread is not None:
            counts[pod.spread][best.zone] += 1
    return layout, unplaced


def nodes_needed(
    pods: Sequence[Pod], *, daemons: Sequence[Resources], zones: int, node: Resources, limit: int = 100
) -> int | None:
    """The fewest nodes `pack` places every pod on (None beyond `limit`)."""
    for count in range(1, limit + 1):
        if not pack(pods, daemons=daemons, nodes=count, zones=zones, node=node)[1]:
            return count
    return None
