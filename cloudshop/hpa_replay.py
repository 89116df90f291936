"""HPA evidence without a cluster: `python -m cloudshop.hpa_replay` (= `make loadtest`).

Three inputs, each read from where it is declared, and one algorithm:

- **Capacity of one replica**: CPU milliseconds per checkout of the order and payment processes, as
  `cloudshop.bench` measures them with k6 on the local full profile (`bench-results/checkout.json`;
  `--measure` runs the bench first). One Python process is one core at most, so the requests/s one
  process sustains is 1000 / (CPU ms per checkout).
- **The load**: `tests/load/stages.json`, the VU curve `tests/load/checkout.js` runs in k6. A VU's
  iteration lasts its think time plus its requests' latency, and `CHECKOUT_SHARE` of iterations buy, so
  checkouts/s = VUs x share / (think + latency).
- **The autoscalers**: the HorizontalPodAutoscaler and Deployment objects `kustomize build` renders
  for the base and for an overlay (demo by default); nothing reads the YAML sources by hand.

`HorizontalPodAutoscaler.step` is the controller's algorithm (pkg/controller/podautoscaler in
kubernetes/kubernetes): desired = ceil(ready x utilisation / target) outside a 10% tolerance, pods not
yet ready counted at 0% when scaling up and left out when scaling down, the stabilization windows, the
`behavior` policies over their periods with `selectPolicy`, and the min/max clamps; one step per 15 s
sync period. Per-pod CPU utilisation = checkouts/s x CPU s per checkout / ready pods / the pod's CPU
request, capped at its CPU limit. A new pod serves (and is "ready") `--pod-ready-seconds` after the
decision that created it.

Outputs: `bench-results/hpa-replay.json` (every series) and `bench-results/hpa-replay.png`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "eks_services" / "k8s"
STAGES_FILE = ROOT / "tests" / "load" / "stages.json"
BENCH_RESULT = ROOT / "bench-results" / "checkout.json"
SERVICES = ("order", "payment")

SYNC_PERIOD_SECONDS = 15
TOLERANCE = 0.1
# Kubernetes' defaults when an HPA declares no `behavior` (autoscaling/v2 API reference).
DEFAULT_SCALE_UP = {
    "stabilizationWindowSeconds": 0,
    "selectPolicy": "Max",
    "policies": [
        {"type": "Pods", "value": 4, "periodSeconds": 15},
        {"type": "Percent", "value": 100, "periodSeconds": 15},
    ],
}
DEFAULT_SCALE_DOWN = {
    "stabilizationWindowSeconds": 300,
    "selectPolicy": "Max",
    "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
}


class ReplayError(RuntimeError):
    """An input of the replay is missing or is not what the replay understands."""


# --- the HPA controller ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    kind: str  # "Pods" or "Percent"
    value: int
    period_seconds: int


@dataclass(frozen=True)
class ScalingRules:
    stabilization_window_seconds: int
    select_policy: str  # "Max", "Min" or "Disabled"
    policies: tuple[Policy, ...]

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None, default: dict[str, Any]) -> ScalingRules:
        """Rules from an HPA's `behavior.scaleUp`/`scaleDown`; absent fields take Kubernetes' defaults."""
        merged = {**default, **(spec or {})}
        return cls(
            stabilization_window_seconds=int(merged["stabilizationWindowSeconds"]),
            select_policy=str(merged.get("selectPolicy", "Max")),
            policies=tuple(Policy(p["type"], int(p["value"]), int(p["periodSeconds"])) for p in merged["policies"]),
        )


@dataclass(frozen=True)
class HpaSpec:
    name: str
    min_replicas: int
    max_replicas: int
    cpu_target_percent: int
    scale_up: ScalingRules
    scale_down: ScalingRules

    @classmethod
    def from_manifest(cls, hpa: dict[str, Any]) -> HpaSpec:
        """The CPU target, bounds and behaviour of a rendered autoscaling/v2 HorizontalPodAutoscaler."""
        spec = hpa["spec"]
        cpu = [
            m["resource"]["target"]["averageUtilization"]
            for m in spec.get("metrics", [])
            if m.get("type") == "Resource" and m["resource"]["name"] == "cpu"
        ]
        if len(cpu) != 1:
            raise ReplayError(f"HPA {hpa['metadata']['name']}: expected one CPU utilisation target, found {cpu}")
        behavior = spec.get("behavior") or {}
        return cls(
            name=hpa["metadata"]["name"],
            min_replicas=int(spec.get("minReplicas", 1)),
            max_replicas=int(spec["maxReplicas"]),
            cpu_target_percent=int(cpu[0]),
            scale_up=ScalingRules.from_spec(behavior.get("scaleUp"), DEFAULT_SCALE_UP),
            scale_down=ScalingRules.from_spec(behavior.get("scaleDown"), DEFAULT_SCALE_DOWN),
        )


@dataclass
class HorizontalPodAutoscaler:
    """One HPA's controller state: past recommendations and scale events, as the controller keeps them."""

    spec: HpaSpec
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    events: list[tuple[float, int]] = field(default_factory=list)  # (time, replica change)

    def step(self, *, now: float, current: int, ready: int, utilization_percent: float) -> int:
        """The replica count the controller sets at `now`, given the ready pods' average CPU utilisation."""
        spec = self.spec
        if current > spec.max_replicas:
            desired = spec.max_replicas
        elif current < spec.min_replicas:
            desired = spec.min_replicas
        else:
            desired = self._stabilized(now, current, self.metric_recommendation(current, ready, utilization_percent))
            desired = self._rate_limited(now, current, desired)
        if desired != current:
            self.events.append((now, desired - current))
        return desired

    def metric_recommendation(self, current: int, ready: int, utilization_percent: float) -> int:
        """desired = ceil(pods x utilisation / target), or `current` within the tolerance."""
        if ready == 0:
            return current
        ratio = utilization_percent / self.spec.cpu_target_percent
        if abs(ratio - 1.0) <= TOLERANCE:
            return current
        unready = current - ready
        if ratio > 1.0 and unready > 0:
            # Pods not yet ready count as using nothing when scaling up; the scale-up is dropped if that
            # brings the ratio back within the tolerance or below 1.
            ratio = utilization_percent * ready / current / self.spec.cpu_target_percent
            if abs(ratio - 1.0) <= TOLERANCE or ratio < 1.0:
                return current
            return math.ceil(ratio * current)
        # Unready pods are left out when scaling down.
        return math.ceil(ratio * ready)

    def _stabilized(self, now: float, current: int, recommendation: int) -> int:
        self.recommendations.append((now, recommendation))
        up_cutoff = now - self.spec.scale_up.stabilization_window_seconds
        down_cutoff = now - self.spec.scale_down.stabilization_window_seconds
        keep_after = min(up_cutoff, down_cutoff)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > keep_after or t == now]
        up = min([r for t, r in self.recommendations if t > up_cutoff or t == now])
        down = max([r for t, r in self.recommendations if t > down_cutoff or t == now])
        result = current
        if result < up:
            result = up
        if result > down:
            result = down
        return result

    def _rate_limited(self, now: float, current: int, desired: int) -> int:
        spec = self.spec
        if desired > current:
            limit = max(self._scale_up_limit(now, current), current)
            return min(desired, spec.max_replicas, limit)
        if desired < current:
            limit = min(self._scale_down_limit(now, current), current)
            return max(desired, spec.min_replicas, limit)
        return desired

    def _changed_within(self, now: float, period: int, *, up: bool) -> int:
        return sum(abs(change) for t, change in self.events if t > now - period and (change > 0) == up and change != 0)

    def _scale_up_limit(self, now: float, current: int) -> int:
        rules = self.spec.scale_up
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            start = current - self._changed_within(now, policy.period_seconds, up=True)
            if policy.kind == "Pods":
                proposals.append(start + policy.value)
            else:
                proposals.append(math.ceil(start * (1 + policy.value / 100)))
        return min(proposals) if rules.select_policy == "Min" else max(proposals)

    def _scale_down_limit(self, now: float, current: int) -> int:
        rules = self.spec.scale_down
        if rules.select_policy == "Disabled":
            return current
        proposals = []
        for policy in rules.policies:
            start = current + self._changed_within(now, policy.period_seconds, up=False)
            if policy.kind == "Pods":
                proposals.append(start - policy.value)
            else:
                proposals.append(int(start * (1 - policy.value / 100)))
        # "Min" selects the smallest change, which for a scale-down is the largest replica count.
        return max(proposals) if rules.select_policy == "Min" else min(proposals)


# --- inputs ---------------------------------------------------------------------------------------


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    """The objects `kustomize build` renders for a directory (kustomize from PATH or .cache/bin)."""
    import yaml  # dev dependency; the module is developer tooling

    binary = shutil.which("kustomize") or str(ROOT / ".cache" / "bin" / "kustomize")
    if not Path(binary).exists():
        raise ReplayError("kustomize not found: `make tools` installs it into .cache/bin")
    result = subprocess.run([binary, "build", str(directory)], capture_output=True, text=True, check=False)  # noqa: S603
    if result.returncode != 0:
        raise ReplayError(f"kustomize build {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


_CPU = re.compile(r"^(\d+(?:\.\d+)?)(m?)$")


def cpu_cores(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("250m", "1", 0.5) in cores."""
    match = _CPU.match(str(quantity))
    if not match:
        raise ReplayError(f"unsupported CPU quantity {quantity!r}")
    value = float(match.group(1))
    return value / 1000 if match.group(2) else value


@dataclass(frozen=True)
class Workload:
    """What the replay needs of one service in one rendering: its HPA and its pods' CPU request and limit."""

    hpa: HpaSpec
    cpu_request_cores: float
    cpu_limit_cores: float


def workloads(objects: Iterable[dict[str, Any]], services: Sequence[str] = SERVICES) -> dict[str, Workload]:
    """Each service's HPA and the CPU its Deployment's pod requests (sum over containers, as the HPA does)."""
    objects = list(objects)
    found: dict[str, Workload] = {}
    for service in services:
        hpas = [o for o in objects if o.get("kind") == "HorizontalPodAutoscaler" and o["metadata"]["name"] == service]
        if len(hpas) != 1:
            raise ReplayError(f"expected one HorizontalPodAutoscaler named {service}, found {len(hpas)}")
        target = hpas[0]["spec"]["scaleTargetRef"]["name"]
        deployments = [o for o in objects if o.get("kind") == "Deployment" and o["metadata"]["name"] == target]
        if len(deployments) != 1:
            raise ReplayError(f"HPA {service} targets Deployment {target}, which the rendering lacks")
        containers = deployments[0]["spec"]["template"]["spec"]["containers"]
        request = sum(cpu_cores(c.get("resources", {}).get("requests", {}).get("cpu", 0)) for c in containers)
        limit = sum(cpu_cores(c.get("resources", {}).get("limits", {}).get("cpu", 0)) for c in containers)
        if request <= 0:
            raise ReplayError(f"Deployment {target} requests no CPU: the HPA's utilisation is undefined")
        found[service] = Workload(HpaSpec.from_manifest(hpas[0]), request, limit or math.inf)
    return found


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(text: str) -> float:
    """A k6 duration ("1m", "30s", "1m30s") in seconds."""
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ReplayError(f"unsupported k6 duration {text!r}")
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


def vu_curve(stages_file: Path, *, peak_vus: int) -> list[tuple[float, float]]:
    """The (time, VUs) breakpoints k6's ramping-vus executor interpolates between, from stages.json."""
    curve = json.loads(stages_file.read_text())
    points = [(0.0, float(curve["start_vus"]))]
    for stage in curve["stages"]:
        points.append(
            (points[-1][0] + duration_seconds(stage["duration"]), float(math.ceil(peak_vus * stage["peak_share"])))
        )
    return points


def vus_at(points: Sequence[tuple[float, float]], t: float) -> float:
    for (t0, v0), (t1, v1) in itertools.pairwise(points):
        if t0 <= t <= t1:
            return v0 if t1 == t0 else v0 + (v1 - v0) * (t - t0) / (t1 - t0)
    return 0.0


@dataclass(frozen=True)
class Capacity:
    """CPU seconds per checkout of one service's process, and what one process (one core) sustains."""

    service: str
    cpu_seconds_per_checkout: float

    @property
    def checkouts_per_second_per_core(self) -> float:
        return 1.0 / self.cpu_seconds_per_checkout


def capacities(bench_result: Path, services: Sequence[str] = SERVICES) -> dict[str, Capacity]:
    """Per-service CPU per checkout from `cloudshop.bench`'s JSON (the full profile's run A)."""
    data = json.loads(bench_result.read_text())
    try:
        by_process = data["results"]["full"]["a"]["cpu_ms_per_checkout"]["by_process_ms"]
    except KeyError as exc:
        raise ReplayError(f"{bench_result}: no full-profile CPU per checkout (run `make bench`)") from exc
    return {s: Capacity(s, by_process[s] / 1000.0) for s in services}


# --- the replay -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assumptions:
    peak_vus: int = 50
    checkout_share: float = 0.3
    think_seconds: float = 1.0  # mean of checkout.js's THINK_SECONDS x (0.5 + random())
    latency_seconds: float = 0.25  # a VU's requests per iteration, on a cluster that keeps up
    pod_ready_seconds: float = 30.0  # scheduling, image on the node, start-up and the readiness probe
    tail_seconds: float = 420.0  # after k6 ends, long enough for the 5-minute scale-down window


def replay(
    workload: Workload,
    capacity: Capacity,
    curve: Sequence[tuple[float, float]],
    assumptions: Assumptions,
) -> dict[str, list[float]]:
    """Runs one HPA over the load curve; series sampled at every sync period."""
    hpa = HorizontalPodAutoscaler(workload.hpa)
    replicas = workload.hpa.min_replicas
    pods_ready_at: list[float] = [-math.inf] * replicas
    iteration_seconds = assumptions.think_seconds + assumptions.latency_seconds
    end = curve[-1][0] + assumptions.tail_seconds
    series: dict[str, list[float]] = {k: [] for k in ("t", "vus", "rps", "utilization", "replicas", "ready")}
    t = 0.0
    while t <= end:
        vus = vus_at(curve, t)
        rps = vus * assumptions.checkout_share / iteration_seconds
        ready = sum(1 for r in pods_ready_at if r <= t)
        demand_cores = rps * capacity.cpu_seconds_per_checkout
        per_pod = min(demand_cores / max(ready, 1), workload.cpu_limit_cores)
        utilization = 100.0 * per_pod / workload.cpu_request_cores
        desired = hpa.step(now=t, current=replicas, ready=ready, utilization_percent=utilization)
        if desired > replicas:
            pods_ready_at += [t + assumptions.pod_ready_seconds] * (desired - replicas)
        elif desired < replicas:
            # The ReplicaSet deletes not-ready pods first, then the youngest.
            pods_ready_at = sorted(pods_ready_at)[:desired]
        for key, value in (("t", t), ("vus", vus), ("rps", rps), ("utilization", utilization), ("ready", ready)):
            series[key].append(round(value, 3))
        series["replicas"].append(desired)
        replicas = desired
        t += SYNC_PERIOD_SECONDS
    return series


def render(directory: Path) -> dict[str, Workload]:
    return workloads(kustomize_build(directory))


def run_replay(
    *,
    overlays: dict[str, Path],
    bench_result: Path,
    stages_file: Path,
    assumptions: Assumptions,
) -> dict[str, Any]:
    """The replay of every service under every rendering, with its inputs, as one JSON-ready dict."""
    caps = capacities(bench_result)
    curve = vu_curve(stages_file, peak_vus=assumptions.peak_vus)
    runs: dict[str, Any] = {}
    for label, directory in overlays.items():
        rendered = render(directory)
        runs[label] = {
            service: {
                "hpa": asdict(rendered[service].hpa),
                "cpu_request_cores": rendered[service].cpu_request_cores,
                "cpu_limit_cores": rendered[service].cpu_limit_cores,
                "series": replay(rendered[service], caps[service], curve, assumptions),
            }
            for service in SERVICES
        }
    return {
        "inputs": {
            "bench_result": _display(bench_result),
            "stages_file": _display(stages_file),
            "overlays": {label: _display(d) for label, d in overlays.items()},
            "assumptions": asdict(assumptions),
            "sync_period_seconds": SYNC_PERIOD_SECONDS,
            "tolerance": TOLERANCE,
        },
        "capacity": {
            s: {
                "cpu_ms_per_checkout": round(c.cpu_seconds_per_checkout * 1000, 2),
                "checkouts_per_second_per_process": round(c.checkouts_per_second_per_core, 1),
            }
            for s, c in caps.items()
        },
        "runs": runs,
    }


def _display(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def plot(result: dict[str, Any], out: Path) -> None:
    """requests/s and replicas over time: one row per service, one column per rendering."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(result["runs"])
    fig, axes = plt.subplots(
        len(SERVICES), len(labels), figsize=(5.2 * len(labels), 3.4 * len(SERVICES)), squeeze=False
    )
    for col, label in enumerate(labels):
        for row, service in enumerate(SERVICES):
            run = result["runs"][label][service]
            series, hpa = run["series"], run["hpa"]
            minutes = [t / 60 for t in series["t"]]
            ax = axes[row][col]
            ax.plot(minutes, series["rps"], color="tab:blue", label="checkouts/s")
            ax.set_ylabel("checkouts/s", color="tab:blue")
            ax.set_xlabel("minutes")
            ax.set_title(f"{service} - {label}: CPU target {hpa['cpu_target_percent']}%", fontsize=10)
            right = ax.twinx()
            right.step(minutes, series["replicas"], where="post", color="tab:red", label="replicas")
            right.step(minutes, series["ready"], where="post", color="tab:red", linestyle=":", label="ready")
            right.set_ylim(0, hpa["max_replicas"] + 1)
            right.set_ylabel("replicas", color="tab:red")
            if row == 0 and col == 0:
                handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
                ax.legend(handles=handles, loc="upper left", fontsize=8)
    fig.suptitle("HPA replay of tests/load/checkout.js (cloudshop.hpa_replay)", fontsize=11)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=72)
    plt.close(fig)


def _progress(message: str) -> None:
    print(f"[loadtest] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cloudshop.hpa_replay", description=__doc__.split("\n")[0])
    parser.add_argument("--from", dest="bench_result", type=Path, default=BENCH_RESULT, help="cloudshop.bench JSON")
    parser.add_argument("--measure", action="store_true", help="run `python -m cloudshop.bench` first (minutes)")
    parser.add_argument("--overlay", default="demo", help="the overlay compared with the base")
    parser.add_argument("--stages", type=Path, default=STAGES_FILE)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "hpa-replay.json")
    parser.add_argument("--png", type=Path, default=None, help="default: --out with .png")
    parser.add_argument("--peak-vus", type=int, default=int(os.environ.get("PEAK_VUS", "50")))
    parser.add_argument("--checkout-share", type=float, default=float(os.environ.get("CHECKOUT_SHARE", "0.3")))
    parser.add_argument("--latency-seconds", type=float, default=Assumptions.latency_seconds)
    parser.add_argument("--pod-ready-seconds", type=float, default=Assumptions.pod_ready_seconds)
    args = parser.parse_args(argv)

    if args.measure or not args.bench_result.exists():
        _progress(f"measuring one replica's CPU per checkout: python -m cloudshop.bench --out {args.bench_result}")
        subprocess.run([sys.executable, "-m", "cloudshop.bench", "--out", str(args.bench_result)], check=True)  # noqa: S603
    else:
        _progress(f"CPU per checkout from {args.bench_result} (--measure runs the bench again)")
    assumptions = Assumptions(
        peak_vus=args.peak_vus,
        checkout_share=args.checkout_share,
        latency_seconds=args.latency_seconds,
        pod_ready_seconds=args.pod_ready_seconds,
    )
    _progress(f"rendering eks_services/k8s/base and overlays/{args.overlay} with kustomize ...")
    try:
        result = run_replay(
            overlays={"base": K8S / "base", args.overlay: K8S / "overlays" / args.overlay},
            bench_result=args.bench_result,
            stages_file=args.stages,
            assumptions=assumptions,
        )
    except ReplayError as exc:
        print(f"[loadtest] {exc}", file=sys.stderr)
        return 1
    for service, cap in result["capacity"].items():
        _progress(
            f"{service}: {cap['cpu_ms_per_checkout']} CPU ms per checkout, "
            f"{cap['checkouts_per_second_per_process']} checkouts/s per process (one core)"
        )
    for label, run in result["runs"].items():
        for service, data in run.items():
            series = data["series"]
            _progress(
                f"{label:>5} {service:<8} target {data['hpa']['cpu_target_percent']}%: peak "
                f"{max(series['utilization']):.0f}% CPU, replicas {min(series['replicas'])}..{max(series['replicas'])}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    png = args.png or args.out.with_suffix(".png")
    plot(result, png)
    _progress(f"wrote {_display(args.out)} and {_display(png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
