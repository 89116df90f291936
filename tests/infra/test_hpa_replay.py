"""`make loadtest`: the replay reads the HPAs and Deployments kustomize renders, and writes its plot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cloudshop import hpa_replay
from tests.infra import K8S, REPO

pytestmark = pytest.mark.infra

BENCH = {"results": {"full": {"a": {"cpu_ms_per_checkout": {"by_process_ms": {"order": 25.0, "payment": 4.0}}}}}}


@pytest.fixture
def bench_result(tmp_path: Path) -> Path:
    path = tmp_path / "checkout.json"
    path.write_text(json.dumps(BENCH))
    return path


def overlay_with_order_target(tmp_path: Path, target: int) -> Path:
    directory = tmp_path / f"target-{target}"
    directory.mkdir()
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {os.path.relpath(K8S / 'base', directory)}\n"
        "patches:\n  - target:\n      kind: HorizontalPodAutoscaler\n      name: order\n"
        "    patch: |-\n      - op: replace\n        path: /spec/metrics/0/resource/target/averageUtilization\n"
        f"        value: {target}\n"
    )
    return directory


def test_the_replay_reads_targets_and_requests_from_the_rendered_overlays():
    base = hpa_replay.render(K8S / "base")
    demo = hpa_replay.render(K8S / "overlays" / "demo")
    assert base["order"].hpa.cpu_target_percent == 70
    assert demo["order"].hpa.cpu_target_percent == 15
    assert (base["order"].hpa.min_replicas, base["order"].hpa.max_replicas) == (2, 10)
    assert (base["payment"].hpa.min_replicas, base["payment"].hpa.max_replicas) == (2, 8)
    assert base["order"].hpa.scale_down.stabilization_window_seconds == 300
    assert base["order"].cpu_request_cores > 0


def test_a_lower_target_in_the_manifest_gives_more_replicas(tmp_path: Path, bench_result: Path):
    def peak_order_replicas(target: int) -> int:
        result = hpa_replay.run_replay(
            overlays={"x": overlay_with_order_target(tmp_path, target)},
            bench_result=bench_result,
            stages_file=REPO / "tests" / "load" / "stages.json",
            assumptions=hpa_replay.Assumptions(),
        )
        return max(result["runs"]["x"]["order"]["series"]["replicas"])

    assert peak_order_replicas(70) < peak_order_replicas(20) < peak_order_replicas(5)


def test_make_loadtest_writes_the_plot_and_the_series(tmp_path: Path, bench_result: Path):
    out = tmp_path / "hpa-replay.json"
    assert hpa_replay.main(["--from", str(bench_result), "--out", str(out)]) == 0
    png = out.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads(out.read_text())
    assert set(result["runs"]) == {"base", "demo"}
    assert result["capacity"]["order"]["checkouts_per_second_per_process"] == 40.0


def test_the_committed_plot_is_small():
    assert (K8S / "docs" / "hpa-replay.png").stat().st_size <= 150_000
