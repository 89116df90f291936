"""`cloudshop up`: the whole platform on one machine, from the same estate declarations as the cloud.

Profiles change endpoints and which servers start, never service code:
- embedded (default): moto for every AWS API, SQLite under the state dir, the file event log;
- full: PostgreSQL, Apache Kafka (KRaft), DynamoDB (dynalite) and SQS (ElasticMQ), all started here;
  moto keeps S3/SES.

Every service runs as its own uvicorn process, with the environment CDK would give it in the cloud.

Nothing outlives the runner: Ctrl-C, SIGTERM and a hang-up stop everything in order, and if the runner
is killed outright its watchdog does it (`cloudshop.local.watchdog`). If the watchdog was killed too,
the next `cloudshop up` on the same state dir stops what is left, from the ledger of what was started
(`cloudshop.local.ledger`), and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from cloudshop.auth import generate_key_pair
from cloudshop.local.servers import (
    HOST,
    DynaliteServer,
    ElasticMqServer,
    KafkaServer,
    ManagedServer,
    MotoServer,
    PostgresServer,
    ProcessObserver,
    PrometheusServer,
    _port_open,
)
from cloudshop.local.watchdog import RunnerGuard
from cloudshop.settings import Settings, resource_settings
from cloudshop.storefront import DIST as STOREFRONT_DIST

DEFAULT_ADMIN_EMAIL = "admin@cloudshop.local"
DEFAULT_ADMIN_PASSWORD = "cloudshop-admin-1"  # noqa: S105 - the documented local default, never used in the cloud

# name → (offset from the base port, ASGI target, is it a factory?)
SERVICES: dict[str, tuple[int, str, bool]] = {
    "user": (1, "functions.user.app:app", False),
    "product": (2, "functions.product.app:app", False),
    "order": (3, "eks_services.order.app:app", False),
    "payment": (4, "eks_services.payment.app:app", False),
    "notification": (5, "functions.notification.app:app", False),
    "gateway": (0, "cloudshop.gateway:build_gateway_from_settings", True),
}
TRACE_FILE = "traces/spans.jsonl"  # under the state dir
MOTO_OFFSET, DYNAMODB_OFFSET, POSTGRES_OFFSET, KAFKA_OFFSET, KAFKA_CONTROLLER_OFFSET = 6, 7, 8, 9, 10
# `--observability`: Prometheus, one past the first servers.
PROMETHEUS_OFFSET = 11
# SQS (ElasticMQ, full profile) came after Prometheus, whose documented port stays where it was.
ELASTICMQ_OFFSET = 12
# Each server's liveness port (`cloudshop.liveness`, HEALTH_PORT): its own port + 20 (8020-8025 for
# the default base), clear of the stores' offsets.
HEALTH_PORT_OFFSET = 20
PORT_SPAN = HEALTH_PORT_OFFSET + max(offset for offset, _, _ in SERVICES.values()) + 1


def free_port_range(span: int = PORT_SPAN) -> int:
    """A base port whose next `span` ports are all free (tests and benchmarks run beside `make run`)."""
    import random

    for _ in range(200):
        # Below Linux's ephemeral range (32768+), so clients' own source ports never land in it.
        base = random.randint(20000, 32000)  # noqa: S311 - a port, not a secret
        if not any(_port_open(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range found")


def settings_from_env(env: dict[str, str]) -> Settings:
    """The Settings a child process with this environment would build for itself."""
    return Settings.model_validate({k.lower(): v for k, v in env.items() if k.lower() in Settings.model_fields})


def say(message: str) -> None:
    # After a hang-up the terminal is gone and writes fail (EIO); the shutdown must go on regardless.
    with contextlib.suppress(OSError):
        print(f"[cloudshop] {message}", file=sys.stderr, flush=True)


class ServiceProcess(ManagedServer):
    """One cloudshop service under uvicorn, ready when its /healthz answers."""

    startup_timeout: ClassVar[float] = 60.0
    stop_timeout: ClassVar[float] = 10.0
    stop_wave: ClassVar[int] = 0

    def __init__(self, name: str, *, target: str, factory: bool, port: int, env: dict[str, str], logs: Path) -> None:
        super().__init__(logs, port=port)
        self.service = name
        self.target = target
        self.factory = factory
        self.env = env

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.service}.log"

    @property
    def label(self) -> str:
        return self.service

    def _command(self) -> list[str]:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            self.target,
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
            # Longer than any client's idle keep-alive (httpx: 5 s), as behind the ALB (idle 60 s): a
            # server that closes an idle connection first races the client's next request on it,
            # which then fails with a reset connection instead of an answer.
            "--timeout-keep-alive",
            "75",
            "--timeout-graceful-shutdown",
            "5",
        ]
        return command + (["--factory"] if self.factory else [])

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.env, "SERVICE_NAME": self.service, "PYTHONUNBUFFERED": "1"}

    def _is_ready(self) -> bool:
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)


class PollerProcess(ManagedServer):
    """The local stand-in for the Lambda SQS event source: hands queue batches to the handler."""

    startup_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 10.0
    stop_wave: ClassVar[int] = 0
    name: ClassVar[str] = "notification-poller"

    def __init__(self, *, env: dict[str, str], logs: Path) -> None:
        super().__init__(logs)  # its port: the backend calls it made, on /metrics (for make bench)
        self.env = env

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "functions.notification.poller", "--metrics-port", str(self.port)]

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.env, "SERVICE_NAME": "notification-poller", "PYTHONUNBUFFERED": "1"}

    def _is_ready(self) -> bool:
        with urllib.request.urlopen(f"http://{HOST}:{self.port}/metrics", timeout=2) as answer:
            return bool(answer.status == 200)


class WindowsConsumerProcess(ManagedServer):
    """The local stand-in for the windows consumer Lambda and its MSK event source (full profile):
    `analytics-results` -> the windows objects in S3 (`analytics.results_consumer`, the same code)."""

    startup_timeout: ClassVar[float] = 30.0
    stop_timeout: ClassVar[float] = 10.0
    stop_wave: ClassVar[int] = 0
    name: ClassVar[str] = "windows-consumer"

    def __init__(self, *, env: dict[str, str], logs: Path) -> None:
        super().__init__(logs, port=0)
        self.env = env

    def _command(self) -> list[str]:
        return [sys.executable, "-m", "analytics.results_consumer"]

    def _environment(self) -> dict[str, str]:
        return {**os.environ, **self.env, "SERVICE_NAME": "windows-consumer", "PYTHONUNBUFFERED": "1"}

    def _is_ready(self) -> bool:
        return True


@dataclass
class Platform:
    profile: str
    state_dir: Path
    base_port: int
    resource_prefix: str = "cloudshop-"
    servers: list[ManagedServer] = field(default_factory=list)
    processes: list[ManagedServer] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    # Told of every process started, so that they can be stopped should this process be killed.
    ledger: ProcessObserver | None = None
    # `--observability`: a real Prometheus scraping every service with the cluster's rules.
    observability: bool = False
    prometheus: PrometheusServer | None = None

    def port(self, offset: int) -> int:
        return self.base_port + offset

    def check_ports(self) -> None:
        wanted = {name: self.port(offset) for name, (offset, _, _) in SERVICES.items()}
        wanted |= {
            f"{name} liveness": self.port(offset + HEALTH_PORT_OFFSET) for name, (offset, _, _) in SERVICES.items()
        }
        wanted["moto"] = self.port(MOTO_OFFSET)
        if self.profile == "full":
            wanted |= {
                "dynamodb": self.port(DYNAMODB_OFFSET),
                "postgres": self.port(POSTGRES_OFFSET),
                "kafka": self.port(KAFKA_OFFSET),
                "kafka-controller": self.port(KAFKA_CONTROLLER_OFFSET),
                "sqs": self.port(ELASTICMQ_OFFSET),
            }
        if self.observability:
            wanted["prometheus"] = self.port(PROMETHEUS_OFFSET)
        taken = [f"{port} ({name})" for name, port in wanted.items() if _port_open(port)]
        if taken:
            raise SystemExit(
                "[cloudshop] port already in use: "
                + ", ".join(taken)
                + f"\n[cloudshop] stop whatever holds it, or pick other ports with --base-port (now {self.base_port})."
            )

    def keys(self) -> tuple[str, str]:
        directory = self.state_dir / "keys"
        private, public = directory / "jwt-private.pem", directory / "jwt-public.pem"
        if not private.exists():
            directory.mkdir(parents=True, exist_ok=True)
            new_private, new_public = generate_key_pair()
            private.write_text(new_private)
            private.chmod(0o600)
            public.write_text(new_public)
        return private.read_text(), public.read_text()

    def internal_token_secrets(self) -> str:
        """One service-token secret per calling pair (`ESTATE.token_pairs`) as JSON, kept 0600 like the
        private key: it is created unreadable to others before anything is written to it."""
        from cloudshop.estate import ESTATE

        path = self.state_dir / "keys" / "internal-token-secrets.json"
        known = json.loads(path.read_text()) if path.exists() else {}
        wanted = {pair: known.get(pair) or os.urandom(32).hex() for pair in ESTATE.token_pairs}
        if wanted != known or path.stat().st_mode & 0o077:
            path.parent.mkdir(parents=True, exist_ok=True)
            with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as file:
                file.write(json.dumps(wanted))
            path.chmod(0o600)
        # The one secret every service shared before, world-readable: no longer used.
        (path.parent / "internal-token-secret").unlink(missing_ok=True)
        return json.dumps(wanted)

    def start_servers(self) -> dict[str, str]:
        env: dict[str, str] = {}
        moto = MotoServer(self.port(MOTO_OFFSET), data_dir=self.state_dir / "moto")
        self._start(moto, "moto (S3, SQS, SES, DynamoDB)" if self.profile == "embedded" else "moto (S3, SES)")
        env["AWS_ENDPOINT_URL"] = moto.endpoint_url
        if self.profile == "embedded":
            env["DATABASE_URL"] = os.environ.get("DATABASE_URL") or f"sqlite:///{self.state_dir / 'cloudshop.db'}"
            env["EVENT_LOG_DIR"] = str(self.state_dir / "events")
            return env
        dynamodb = DynaliteServer(self.state_dir / "dynamodb", port=self.port(DYNAMODB_OFFSET))
        self._start(dynamodb, "DynamoDB (dynalite)")
        # SQS on a server of its own: moto's SQS slows down with every message a queue holds.
        sqs = ElasticMqServer(
            self.state_dir / "elasticmq",
            port=self.port(ELASTICMQ_OFFSET),
            region=os.environ.get("AWS_REGION", "eu-west-1"),
        )
        self._start(sqs, "SQS (ElasticMQ)")
        postgres = PostgresServer(self.state_dir / "postgres", port=self.port(POSTGRES_OFFSET))
        self._start(postgres, "PostgreSQL")
        say("Apache Kafka: fetching jars on first run (cached afterwards) ...")
        kafka = KafkaServer(
            self.state_dir / "kafka", port=self.port(KAFKA_OFFSET), controller_port=self.port(KAFKA_CONTROLLER_OFFSET)
        )
        self._start(kafka, "Apache Kafka (KRaft)")
        from cloudshop.estate import ESTATE

        for topic in ESTATE.topics:
            kafka.create_topics([topic.name], partitions=topic.partitions)
        env |= {
            "DYNAMODB_ENDPOINT_URL": dynamodb.endpoint_url,
            "SQS_ENDPOINT_URL": sqs.endpoint_url,
            "DATABASE_URL": postgres.url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        }
        return env

    def _start(self, server: ManagedServer, label: str) -> None:
        started = time.monotonic()
        server.observer = self.ledger
        server.start()
        self.servers.append(server)
        say(f"{label} ready on {HOST}:{server.port} ({time.monotonic() - started:.1f}s)")

    def settings_env(self, server_env: dict[str, str]) -> dict[str, str]:
        private, public = self.keys()
        env = {
            "ENVIRONMENT": "local",
            "AWS_REGION": os.environ.get("AWS_REGION", "eu-west-1"),
            "AWS_DEFAULT_REGION": os.environ.get("AWS_REGION", "eu-west-1"),
            "AWS_ACCESS_KEY_ID": os.environ.get("AWS_ACCESS_KEY_ID", "local"),
            "AWS_SECRET_ACCESS_KEY": os.environ.get("AWS_SECRET_ACCESS_KEY", "local"),
            "JWT_PRIVATE_KEY": private,
            "JWT_PUBLIC_KEY": public,
            "INTERNAL_TOKEN_SECRETS": self.internal_token_secrets(),
            # Every process appends its spans here; `cloudshop trace <order-id>` reads them.
            "TRACING_ENABLED": "true",
            "TRACE_FILE": str(self.state_dir / TRACE_FILE),
            **resource_settings(self.resource_prefix),
            **server_env,
        }
        for name, (offset, _, _) in SERVICES.items():
            if name != "gateway":
                env[f"{name.upper()}_SERVICE_URL"] = f"http://{HOST}:{self.port(offset)}"
        return env

    def prepare_data(self, env: dict[str, str]) -> None:
        from cloudshop.provision import provision

        # moto accepts any credentials, but boto3 in this process insists on having some.
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"):
            os.environ.setdefault(name, env[name])
        settings = settings_from_env(env)
        urls = provision(settings)
        env["ORDER_EVENTS_QUEUE_URL"] = urls["order-events"]
        settings.order_events_queue_url = urls["order-events"]
        env["PAYMENT_EVENTS_QUEUE_URL"] = urls["payment-events"]
        settings.payment_events_queue_url = urls["payment-events"]
        from cloudshop.provision import provision_mail

        provision_mail(settings)
        from cloudshop.operations import create_admin, load_demo_catalog
        from cloudshop.schema import apply_schema
        from cloudshop.sql import engine_for

        # The same step the deploy runs (its custom resource), minus the roles: locally every
        # service connects as the one local user.
        engine = engine_for(settings)
        try:
            result = apply_schema(engine)
            say("schema: " + ", ".join(f"{service} at {revision}" for service, revision in result.revisions.items()))
            seeded = load_demo_catalog(settings, engine)
            say(f"catalog: {seeded} demo products seeded" if seeded else "catalog: already seeded")
            admin = create_admin(
                settings,
                engine,
                email=os.environ.get("CLOUDSHOP_ADMIN_EMAIL", DEFAULT_ADMIN_EMAIL),
                password=os.environ.get("CLOUDSHOP_ADMIN_PASSWORD", DEFAULT_ADMIN_PASSWORD),
                name="Administrator",
            )
            if admin.status == "invalid":
                raise SystemExit(f"[cloudshop] CLOUDSHOP_ADMIN_EMAIL/CLOUDSHOP_ADMIN_PASSWORD: {admin.detail}")
            if admin.status == "exists" and admin.role != "admin":
                say(f"admin: {admin.email} is registered as a {admin.role}; it was left as it is")
        finally:
            engine.dispose()

    def start_services(self, env: dict[str, str]) -> None:
        logs = self.state_dir / "logs"
        processes: list[ManagedServer] = [
            ServiceProcess(
                name,
                target=target,
                factory=factory,
                port=self.port(offset),
                env=env | {"HEALTH_PORT": str(self.port(offset + HEALTH_PORT_OFFSET))},
                logs=logs,
            )
            for name, (offset, target, factory) in SERVICES.items()
        ]
        processes.append(PollerProcess(env=env, logs=logs))
        if self.profile == "full":
            processes.append(WindowsConsumerProcess(env=env, logs=logs))
        for process in processes:
            process.observer = self.ledger
        # Python start-up dominates; starting the processes side by side halves the wait.
        with ThreadPoolExecutor(max_workers=len(processes)) as pool:
            futures = [pool.submit(p.start) for p in processes]
            self.processes.extend(processes)
            for future in futures:
                future.result()

    def start_prometheus(self) -> None:
        """Prometheus on the services' own ports (SERVICES), after them so the first scrape finds them."""
        targets = {name: self.port(offset) for name, (offset, _, _) in SERVICES.items()}
        self.prometheus = PrometheusServer(
            self.state_dir / "prometheus", port=self.port(PROMETHEUS_OFFSET), targets=targets
        )
        self._start(self.prometheus, "prometheus")

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        for server in reversed(self.servers):
            server.stop()

    def watch(self, stop: threading.Event) -> str | None:
        """Block until Ctrl-C (or SIGTERM); return the name of a child that died, if one did."""
        while not stop.wait(1.0):
            for process in self.processes:
                if not process.running:
                    return process.label
        return None


RUNTIME_ENV = "runtime-env.json"


def write_runtime_env(state_dir: Path, env: dict[str, str]) -> None:
    """What the running platform's services were given, for tools started beside it
    (`cloudshop analytics`). Local state only: it holds the local signing key, so owner-only."""
    path = state_dir / RUNTIME_ENV
    path.write_text(json.dumps(env, indent=2, sort_keys=True))
    path.chmod(0o600)


def read_runtime_env(state_dir: Path) -> dict[str, str]:
    path = state_dir / RUNTIME_ENV
    if not path.exists():
        raise SystemExit(f"[cloudshop] no running platform found in {state_dir}: start it first with `make run`.")
    return dict(json.loads(path.read_text()))


def banner(platform: Platform, env: dict[str, str]) -> str:
    gateway = f"http://{HOST}:{platform.base_port}"
    # First, for people: the shop and its admin console, served by the gateway from web/dist.
    built = (STOREFRONT_DIST / "index.html").is_file()
    storefront = "(admin console at /admin)" if built else "(not built yet: run `make web`, then reload)"
    docs = "\n".join(
        f"  {name:<13} http://{HOST}:{platform.port(offset)}/docs"
        for name, (offset, _, _) in SERVICES.items()
        if name != "gateway"
    )
    return (
        f"\ncloudshop is up ({platform.profile} profile)\n"
        f"  storefront    {gateway}/   {storefront}\n"
        f"  gateway       {gateway}/api/v1   (try: curl {gateway}/api/v1/products)\n"
        f"  health        {gateway}/healthz   metrics: <service>/metrics\n"
        f"API docs (OpenAPI) per service:\n{docs}\n"
        f"  admin         {os.environ.get('CLOUDSHOP_ADMIN_EMAIL', DEFAULT_ADMIN_EMAIL)}"
        f" / {'(CLOUDSHOP_ADMIN_PASSWORD)' if 'CLOUDSHOP_ADMIN_PASSWORD' in os.environ else DEFAULT_ADMIN_PASSWORD}\n"
        f"  logs          {platform.state_dir / 'logs'}\n"
        f"  events        {env.get('KAFKA_BOOTSTRAP_SERVERS') or env.get('EVENT_LOG_DIR')}\n"
        + (
            f"  prometheus    {platform.prometheus.url}   (targets: /targets, alerts: /alerts)\n"
            if platform.prometheus
            else ""
        )
        + "Press Ctrl-C to stop.\n"
    )


def up(*, profile: str, state_dir: Path, base_port: int, observability: bool = False) -> int:
    platform = Platform(
        profile=profile, state_dir=state_dir.resolve(), base_port=base_port, observability=observability
    )
    guard = RunnerGuard(platform.state_dir, report=say)
    # Before the port check: a killed run's leftovers on these ports are reclaimed rather than refused.
    platform.ledger = guard.claim()
    try:
        platform.check_ports()
        guard.start_watchdog()
        return _run(platform)
    finally:
        guard.release()


def _run(platform: Platform) -> int:
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    # A closed terminal sends SIGHUP: stop in order, as for Ctrl-C, rather than die on the spot.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    started = time.monotonic()
    try:
        env = platform.settings_env(platform.start_servers())
        platform.prepare_data(env)
        write_runtime_env(platform.state_dir, env)
        consumers = ", notification-poller" + (", windows-consumer" if platform.profile == "full" else "")
        say("starting services: " + ", ".join(SERVICES) + consumers + " ...")
        platform.start_services(env)
        if platform.observability:
            platform.start_prometheus()
        with contextlib.suppress(OSError):
            print(banner(platform, env), flush=True)
        say(f"ready in {time.monotonic() - started:.1f}s")
        died = platform.watch(stop)
        if died:
            say(f"{died} stopped unexpectedly; see {platform.state_dir / 'logs'}. Shutting down.")
            return 1
        return 0
    finally:
        say("stopping ...")
        platform.stop()
        say("stopped.")
