"""Checkout benchmark: full checkouts per second through the gateway, 25 buyers in a closed loop.

`python -m cloudshop.bench --out bench-results/checkout.json [--profiles embedded full] [--seconds 30]`

Each profile gets a fresh platform (the same `Platform` code as `cloudshop up`). Every buyer has its
own cart and loops: put one item in the cart, check out with a new Idempotency-Key. Reported per
profile: checkouts/s, p50/p95/p99 of POST /orders and of the whole loop, errors, peak RSS of the
platform's processes, and (with --profile-cpu) where the order service spends its CPU (py-spy).
Nothing here is asserted; the numbers go to the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from cloudshop.local.runner import DEFAULT_ADMIN_EMAIL, DEFAULT_ADMIN_PASSWORD, Platform, free_port_range, say

ADDRESS = {
    "name": "Bench",
    "line1": "1 Loop Road",
    "city": "Pune",
    "state": "MH",
    "postal_code": "411001",
    "country": "IN",
}


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids += [int(c) for c in children]
        except (OSError, ValueError):
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    while pids:
        current = pids.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            pids += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue
    return total


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def run_profile(profile: str, *, buyers: int, seconds: float, profile_cpu: bool, out_dir: Path) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix=f"cloudshop-bench-{profile}-"))
    platform = Platform(profile=profile, state_dir=state, base_port=free_port_range())
    try:
        env = platform.settings_env(platform.start_servers())
        env["LOG_LEVEL"] = "WARNING"
        platform.prepare_data(env)
        platform.start_services(env)
        gateway = f"http://127.0.0.1:{platform.base_port}"
        limits = httpx.Limits(max_connections=buyers * 2, max_keepalive_connections=buyers * 2)
        with httpx.Client(base_url=f"{gateway}/api/v1", timeout=30, limits=limits) as http:
            admin = http.post(
                "/auth/login", json={"email": DEFAULT_ADMIN_EMAIL, "password": DEFAULT_ADMIN_PASSWORD}
            ).json()
            product = http.post(
                "/products",
                headers={"Authorization": f"Bearer {admin['access_token']}"},
                json={
                    "name": "Bench widget",
                    "description": "",
                    "category": "bench",
                    "price": {"amount": 1000, "currency": "INR"},
                    "stock": 1_000_000,
                },
            ).json()["id"]
            tokens = []
            for n in range(buyers):
                email = f"bench-{n}-{uuid.uuid4().hex[:6]}@example.com"
                http.post("/auth/register", json={"email": email, "password": "bench-pass-1", "name": "B"})
                login = http.post("/auth/login", json={"email": email, "password": "bench-pass-1"}).json()
                tokens.append({"Authorization": f"Bearer {login['access_token']}"})
            say(f"{profile}: {buyers} buyers ready; running for {seconds:.0f}s ...")

            order_latency: list[float] = []
            loop_latency: list[float] = []
            errors: Counter[str] = Counter()
            lock = threading.Lock()
            stop_at = time.monotonic() + seconds
            peak = {"rss": 0}

            def buyer(headers: dict[str, str]) -> None:
                while time.monotonic() < stop_at:
                    started = time.perf_counter()
                    try:
                        put = http.put(f"/cart/items/{product}", json={"quantity": 1}, headers=headers)
                        ordered_at = time.perf_counter()
                        order = http.post(
                            "/orders",
                            json={"shipping_address": ADDRESS, "payment_method": "pm_card_ok"},
                            headers=headers | {"Idempotency-Key": uuid.uuid4().hex},
                        )
                        done = time.perf_counter()
                        ok = put.status_code == 200 and order.status_code == 201 and order.json()["status"] == "PAID"
                    except httpx.HTTPError as exc:
                        with lock:
                            errors[type(exc).__name__] += 1
                        continue
                    with lock:
                        if ok:
                            order_latency.append(done - ordered_at)
                            loop_latency.append(done - started)
                        else:
                            errors[f"{put.status_code}/{order.status_code}"] += 1

            def sample_memory() -> None:
                while time.monotonic() < stop_at:
                    total = sum(rss_bytes(p.pid) for p in platform.processes + platform.servers if p.pid)
                    peak["rss"] = max(peak["rss"], total)
                    time.sleep(0.5)

            threads = [threading.Thread(target=buyer, args=(t,)) for t in tokens]
            threads.append(threading.Thread(target=sample_memory))
            spies = start_profilers(platform, seconds=seconds, out_dir=out_dir, profile=profile) if profile_cpu else {}
            processes = {getattr(p, "service", p.name): p.pid for p in platform.processes if p.pid}
            processes |= {f"{s.name}-{n}": s.pid for n, s in enumerate(platform.servers) if s.pid}
            cpu_before = {name: cpu_seconds(pid) for name, pid in processes.items()}
            began = time.monotonic()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.monotonic() - began
            done = max(len(order_latency), 1)
            cpu_per_checkout_ms = {
                name: round((cpu_seconds(pid) - cpu_before[name]) / done * 1000, 1) for name, pid in processes.items()
            }
            result: dict[str, Any] = {
                "profile": profile,
                "buyers": buyers,
                "seconds": round(elapsed, 1),
                "checkouts": len(order_latency),
                "checkouts_per_second": round(len(order_latency) / elapsed, 1),
                "post_orders_ms": {
                    q: round(percentile(order_latency, v) * 1000, 1)
                    for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
                },
                "cart_plus_order_ms": {
                    q: round(percentile(loop_latency, v) * 1000, 1)
                    for q, v in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
                },
                "mean_post_orders_ms": round(statistics.fmean(order_latency) * 1000, 1) if order_latency else None,
                "errors": dict(errors),
                "peak_platform_rss_mib": round(peak["rss"] / 2**20, 1),
                # Where the two cores go: CPU milliseconds each process spends per checkout.
                "cpu_ms_per_checkout": dict(sorted(cpu_per_checkout_ms.items(), key=lambda kv: -kv[1])),
                "cpu_count": os.cpu_count(),
            }
            cpu: dict[str, Any] = {}
            for name, (spy, raw) in spies.items():
                spy.wait(timeout=60)
                cpu[name] = top_frames(raw)
            if cpu:
                result["cpu_top_frames_by_process"] = cpu
            return result
    finally:
        platform.stop()
        shutil.rmtree(state, ignore_errors=True)


def start_profilers(
    platform: Platform, *, seconds: float, out_dir: Path, profile: str
) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """py-spy on each busy process (services, gateway, moto) for the length of the run."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not py_spy:
        say("py-spy not found: no CPU profile")
        return {}
    targets = {getattr(p, "service", p.name): p.pid for p in platform.processes if p.pid}
    targets |= {f"moto-{n}": s.pid for n, s in enumerate(platform.servers) if s.name == "moto" and s.pid}
    spies = {}
    for name, pid in targets.items():
        raw = out_dir / f"py-spy-{profile}-{name}.txt"
        command = [
            py_spy,
            "record",
            "-p",
            str(pid),
            "-d",
            str(int(seconds)),
            "-r",
            "50",
            "-f",
            "raw",
            "-o",
            str(raw),
            "--nonblocking",
        ]
        spies[name] = (subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw)  # noqa: S603
    return spies


def top_frames(raw: Path, limit: int = 12) -> list[dict[str, Any]]:
    """Self-time share per leaf frame from py-spy's collapsed-stack output."""
    if not raw.exists():
        return []
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        leaf = stack.split(";")[-1]
        leaves[leaf] += int(count)
        total += int(count)
    return [{"frame": frame, "share": round(n / total, 3)} for frame, n in leaves.most_common(limit)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-results/checkout.json"))
    parser.add_argument("--profiles", nargs="+", choices=["embedded", "full"], default=["full", "embedded"])
    parser.add_argument("--buyers", type=int, default=25)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--profile-cpu", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for profile in args.profiles:
        result = run_profile(
            profile, buyers=args.buyers, seconds=args.seconds, profile_cpu=args.profile_cpu, out_dir=args.out.parent
        )
        say(
            f"{profile}: {result['checkouts_per_second']} checkouts/s, POST /orders p95 "
            f"{result['post_orders_ms']['p95']} ms, errors {result['errors']}, "
            f"peak RSS {result['peak_platform_rss_mib']} MiB"
        )
        results.append(result)
    args.out.write_text(json.dumps({"benchmark": "checkout", "results": results}, indent=2) + "\n")
    say(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
