"""`python -m cloudshop.bench` end to end, in seconds instead of minutes: it starts its own full-profile
platform (PostgreSQL, dynalite, Kafka, ElasticMQ, moto, every service), drives both scenarios with k6, waits for
the sweeper, and writes the JSON and the Markdown with every section. The numbers are not checked:
a benchmark reports them, and this run is far too short to mean anything."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from cloudshop.bench import markdown, rows_for

SERVICES = {"gateway", "user", "product", "order", "payment", "notification"}


@pytest.mark.slow
def test_a_short_bench_run_writes_every_section_beside_the_previous_run(tmp_path: Path) -> None:
    out = tmp_path / "checkout.json"
    out.write_text(
        json.dumps(
            {
                "started_at": "2026-01-01T00:00:00+00:00",
                "rows": {"full": [{"key": "a.checkouts_per_second", "value": 12.5}]},
            }
        )
    )
    (tmp_path / "lambda-imports.json").write_text(
        json.dumps({"handlers": {"functions.user.handler": {"wall_ms": 700.0, "importtime_ms": 650.0}}})
    )

    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "cloudshop.bench",
            "--out",
            str(out),
            "--seconds",
            "3",
            "--overload-seconds",
            "3",
            "--buyers",
            "3",
            "--overload-buyers",
            "6",
            "--warmup-seconds",
            "0",
            "--abandoned-seconds",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert finished.returncode == 0, finished.stderr[-4000:]
    report = json.loads(out.read_text())
    a, b = report["results"]["full"]["a"], report["results"]["full"]["b"]
    assert a["checkouts"] > 0 and a["post_orders_ms"]["p95"] is not None
    assert {"gateway", "order", "product", "payment"} <= set(a["cpu_ms_per_checkout"]["by_process_ms"])
    assert a["cpu_ms_per_checkout"]["checkout_path_ms"] > 0
    assert {"dynamodb", "sql", "http", "s3", "sqs", "kafka"} <= set(a["backend_calls_per_checkout"]["by_kind"])
    # the notification function's batches too, served by its local poller
    assert {"order", "product", "payment", "gateway", "notification-poller"} <= set(
        a["backend_calls_per_checkout"]["by_service"]
    )
    assert a["outbox"]["lag_samples"] > 0 and a["outbox"]["lag_at_end_seconds"] is not None
    assert a["outbox"]["relay_ceiling_events_per_second"] is not None
    # Each service probed on its liveness port (the target) and on its own port (shown), and its
    # readiness on the liveness port (every service but the gateway, which has no readiness).
    liveness = {f"{name} (liveness port)" for name in SERVICES}
    assert set(a["healthz"]) == set(b["healthz"]) == SERVICES | liveness
    assert set(a["readyz"]) == set(b["readyz"]) == SERVICES - {"gateway"}
    for scenario in (a, b):
        assert all(not scenario["healthz"][name]["failed"] for name in liveness), scenario["healthz"]
        assert all(not probe["failed"] for probe in scenario["readyz"].values()), scenario["readyz"]
    # Every service's event loop was timed (cloudshop.liveness.LoopLag) and reported.
    assert SERVICES <= set(a["event_loop_lag"]) and SERVICES <= set(b["event_loop_lag"])
    assert {"postgres", "dynalite", "kafka", "elasticmq", "moto"} | SERVICES <= set(a["peak_rss_mib"])
    for field in ("slow_requests", "overload_503", "other_failures", "failures", "refused_by_service"):
        assert field in b
    sweep = report["results"]["full"]["after_sweeper"]
    assert {"pending_payment_left", "reservations_held_left", "stock_matches", "orders_by_status"} <= set(sweep)

    table = out.with_suffix(".md").read_text()
    for section in (
        "### A: 3 buyers",
        "### A: CPU ms per checkout, by process",
        "### A: backend calls per checkout",
        "### A: peak RSS",
        "### A: /healthz",
        "### B: 6 buyers",
        "### B: after the sweeper",
        "### Lambda import times",
    ):
        assert section in table
    checkouts_row = next(line for line in table.splitlines() if line.startswith("| checkouts/s | ≥ 80 |"))
    assert checkouts_row.split(" | ")[3] == "12.5"  # the previous run's value, beside this one's
    assert "| user: import, -X importtime (ms) | ≤ 250 | 650 |" in table


def test_the_table_without_the_overload_scenario_keeps_the_sweeper_check() -> None:
    """`--overload-buyers 0` skips B: the table has no B section, and the sweeper's check, run on what
    A left, is still there."""
    a = {
        "buyers": 25,
        "seconds": 60.0,
        "checkouts_per_second": 30.0,
        "checkouts": 1800,
        "post_orders_ms": {"p50": 100.0, "p95": 200.0, "p99": 300.0, "max": 400.0},
        "checkout_loop_ms": {"p95": 250.0},
        "errors": 0,
        "cpu_ms_per_checkout": {"checkout_path_ms": 30.0, "by_process_ms": {"order": 20.0}},
        "outbox": {
            "lag_at_end_seconds": 0.0,
            "lag_max_seconds": 1.0,
            "events_published": 3600,
            "relay_ceiling_events_per_second": 50.0,
        },
        "backend_calls_per_checkout": {"by_kind": {"dynamodb": 10.0}, "by_service": {"order": {"dynamodb": 7.0}}},
        "peak_rss_mib": {"order": 120.0},
        "healthz": {"order": {"max_ms": 20.0}},
        "readyz": {"order": {"max_ms": 10.0}},
    }
    sweep = {
        "waited_seconds": 1.0,
        "pending_payment_left": 0,
        "reservations_held_left": 0,
        "stock": 100,
        "sold": 1800,
        "stock_matches": True,
    }
    rows = rows_for({"profile": "full", "a": a, "b": None, "after_sweeper": sweep}, None)

    sections = {row.section for row in rows}
    assert not any(section.startswith("B:") for section in sections)
    assert "A: after the sweeper (waited 1 s)" in sections
    assert next(row for row in rows if row.key == "b.pending_payment_left").met is True
    report = {
        "started_at": "2026-01-01T00:00:00+00:00",
        "machine": {"cpu_count": 2, "k6": "k6 v1", "load_average_before": [0.5]},
        "trace_sample_ratio": 0.05,
        "rows": {"full": [asdict(row) for row in rows]},
        "results": {"full": {"a": a}},
    }
    table = markdown(report, None)
    assert "### A: after the sweeper" in table
    assert "5% of checkouts traced" in table


def test_a_trace_share_outside_0_to_1_is_refused_before_anything_starts() -> None:
    refused = subprocess.run(
        [sys.executable, "-m", "cloudshop.bench", "--trace-sample-ratio", "1.5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 2
    assert "--trace-sample-ratio 1.5: a share, from 0 to 1" in refused.stderr
