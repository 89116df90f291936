"""The HPA controller's algorithm in cloudshop.hpa_replay against Kubernetes' documented behaviour.

Each case is a rule of pkg/controller/podautoscaler (horizontal.go, replica_calculator.go) as the
autoscaling/v2 documentation states it: the 10% tolerance, ceil(pods x utilisation / target), the
stabilization windows, the `behavior` policies over their periods, and the min/max clamps.
"""

from __future__ import annotations

from cloudshop.hpa_replay import (
    DEFAULT_SCALE_DOWN,
    DEFAULT_SCALE_UP,
    HorizontalPodAutoscaler,
    HpaSpec,
    Policy,
    ScalingRules,
    cpu_cores,
    duration_seconds,
    vu_curve,
    vus_at,
)
from tests.infra import REPO

NO_LIMITS_UP = ScalingRules(0, "Max", (Policy("Percent", 1000, 15),))
NO_LIMITS_DOWN = ScalingRules(0, "Max", (Policy("Percent", 100, 15),))


def autoscaler(*, min_replicas=2, max_replicas=10, target=70, up=NO_LIMITS_UP, down=NO_LIMITS_DOWN):
    return HorizontalPodAutoscaler(HpaSpec("order", min_replicas, max_replicas, target, up, down))


def test_utilisation_within_the_ten_percent_tolerance_keeps_the_replicas():
    hpa = autoscaler(target=50)
    assert hpa.step(now=0, current=4, ready=4, utilization_percent=54.9) == 4
    assert hpa.step(now=15, current=4, ready=4, utilization_percent=45.1) == 4


def test_desired_replicas_is_the_ceiling_of_pods_times_utilisation_over_target():
    hpa = autoscaler(target=50)
    # 3 pods at 90% of a 50% target: ceil(3 x 1.8) = 6
    assert hpa.step(now=0, current=3, ready=3, utilization_percent=90) == 6


def test_scale_up_is_limited_by_the_larger_of_100_percent_and_4_pods_per_period():
    up = ScalingRules.from_spec(
        {
            "stabilizationWindowSeconds": 0,
            "selectPolicy": "Max",
            "policies": [
                {"type": "Percent", "value": 100, "periodSeconds": 30},
                {"type": "Pods", "value": 4, "periodSeconds": 30},
            ],
        },
        DEFAULT_SCALE_UP,
    )
    hpa = autoscaler(max_replicas=50, target=10, up=up)
    # 2 pods want 20: +4 pods beats doubling.
    assert hpa.step(now=0, current=2, ready=2, utilization_percent=100) == 6
    # Within the same 30 s period the budget is spent: it counts from the period's start (2 pods).
    assert hpa.step(now=15, current=6, ready=6, utilization_percent=100) == 6
    # A new period: doubling 6 beats +4.
    assert hpa.step(now=45, current=6, ready=6, utilization_percent=100) == 12


def test_select_policy_min_takes_the_smaller_scale_up():
    up = ScalingRules(0, "Min", (Policy("Percent", 100, 15), Policy("Pods", 1, 15)))
    hpa = autoscaler(max_replicas=50, target=10, up=up)
    assert hpa.step(now=0, current=4, ready=4, utilization_percent=100) == 5


def test_scale_down_waits_for_the_stabilization_window():
    down = ScalingRules.from_spec(None, DEFAULT_SCALE_DOWN)  # 300 s window, 100% per 15 s
    hpa = autoscaler(target=50, down=down)
    assert hpa.step(now=0, current=8, ready=8, utilization_percent=50) == 8
    for now in range(15, 300, 15):
        assert hpa.step(now=now, current=8, ready=8, utilization_percent=10) == 8, now
    # The recommendation of 8 at t=0 leaves the window after 300 s.
    assert hpa.step(now=300, current=8, ready=8, utilization_percent=10) == 2


def test_scale_down_is_limited_to_half_per_minute():
    down = ScalingRules(0, "Min", (Policy("Percent", 50, 60),))
    hpa = autoscaler(min_replicas=1, target=50, down=down)
    assert hpa.step(now=0, current=10, ready=10, utilization_percent=5) == 5
    assert hpa.step(now=15, current=5, ready=5, utilization_percent=5) == 5
    assert hpa.step(now=61, current=5, ready=5, utilization_percent=5) == 2


def test_replicas_stay_within_min_and_max():
    hpa = autoscaler(min_replicas=2, max_replicas=10, target=10)
    assert hpa.step(now=0, current=4, ready=4, utilization_percent=1000) == 10
    assert hpa.step(now=15, current=10, ready=10, utilization_percent=0) == 2
    assert autoscaler(max_replicas=10).step(now=0, current=12, ready=12, utilization_percent=0) == 10
    assert autoscaler(min_replicas=2).step(now=0, current=1, ready=1, utilization_percent=0) == 2


def test_pods_not_yet_ready_count_as_idle_when_scaling_up():
    hpa = autoscaler(max_replicas=50, target=50)
    # 2 ready pods at 75% and 2 starting: (2 x 75 / 4) / 50 = 0.75 < 1, so no further scale-up.
    assert hpa.step(now=0, current=4, ready=2, utilization_percent=75) == 4
    # 2 ready at 200%: ratio over all four is 2.0, so ceil(2.0 x 4) = 8.
    assert hpa.step(now=15, current=4, ready=2, utilization_percent=200) == 8


def test_kubernetes_quantities_and_k6_durations():
    assert cpu_cores("250m") == 0.25
    assert cpu_cores("1") == 1.0
    assert duration_seconds("1m30s") == 90
    assert duration_seconds("2m") == 120


def test_the_load_curve_is_the_one_checkout_js_runs():
    curve = vu_curve(REPO / "tests" / "load" / "stages.json", peak_vus=50)
    assert curve[0] == (0.0, 1.0)
    assert curve[-1] == (600.0, 0.0)
    assert max(v for _, v in curve) == 50
    assert vus_at(curve, 30) == 1 + (10 - 1) / 2
    assert "stages.json" in (REPO / "tests" / "load" / "checkout.js").read_text()
