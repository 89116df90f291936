"""Real local servers for the `full` profile (`cloudshop up --profile full`) and the test fixtures.

Each server is a separate OS process that this module starts, waits for and stops:

- `PostgresServer` -- the Debian PostgreSQL binaries (`initdb`, `postgres`), trust auth on loopback.
- `KafkaServer` -- Apache Kafka in KRaft mode (one node, broker and controller combined), run from the
  Maven Central jars `org.apache.kafka:kafka_2.13`, fetched once with Maven into the cache directory
  (`$CLOUDSHOP_CACHE_DIR`, default `~/.cache/cloudshop`).
- `MotoServer` -- the moto server, standing in for the AWS APIs (S3, SES, ...; every API in the
  embedded profile).
- `DynaliteServer` -- dynalite, an open-source implementation of the DynamoDB API (Node.js, from the
  npm registry), for DynamoDB in the full profile and the tests.
- `ElasticMqServer` -- ElasticMQ, an SQS-compatible server (JVM, from the Maven Central jars
  `org.elasticmq:elasticmq-server_2.13`, fetched like Kafka's), for SQS in the full profile and the
  tests: moto's SQS slows down in proportion to the queue's length.

DynamoDB Local is not used: its artifacts are published under the vendor's own terms rather than an
open-source licence. The DynamoDB adapter is the same boto3 code on moto, dynalite and AWS; only the
endpoint (`DYNAMODB_ENDPOINT_URL`) differs.

Common rules, so that servers never leak or collide:
- everything binds 127.0.0.1 only, on a free port picked at construction unless one is given;
- a server writes its log to `<data_dir>/<name>.log`; if it does not become ready within its
  timeout, start() stops it and raises `ServerStartError` carrying the tail of that log;
- each server runs in its own process group (its own session); stop() asks the main process to
  shut down cleanly, then SIGKILLs the whole group, so no child outlives it;
- a server can be started again after stop() on the same data directory and port;
- servers still running when the interpreter exits are stopped by an atexit hook;
- an `observer` (the runner's ledger, `cloudshop.local.ledger`) is told of each process the moment it
  is spawned and once it has ended, so that a watchdog or the next run can stop what a killed runner
  left behind (an atexit hook does not run on SIGKILL).

`python -m cloudshop.local.servers fetch` downloads the Kafka and ElasticMQ jars and dynalite ahead of
time (used by `make`).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Protocol, Self

HOST = "127.0.0.1"
KAFKA_VERSION = "4.4.0"
KAFKA_SCALA_ARTIFACT = "org.apache.kafka:kafka_2.13"
# Kafka 4.x logs through SLF4J to log4j2, as its own distribution does. Kafka's pom still names
# slf4j-api 1.7, which cannot find log4j2's SLF4J-2 binding, so the API is pinned to 2.x (it keeps
# the 1.7 calling interface) and the broker's log reaches kafka.log.
LOG4J_VERSION = "2.26.1"
SLF4J_VERSION = "2.0.17"
MAVEN_DEPENDENCY_PLUGIN_VERSION = "3.8.1"

_LOG_TAIL_LINES = 40


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now.

    The OS picks it (bind to port 0); there is a small race until the server binds it, acceptable
    for local tooling, and far less likely to collide than a fixed port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cache_dir() -> Path:
    """The download cache shared by every checkout on the machine (`$CLOUDSHOP_CACHE_DIR`)."""
    configured = os.environ.get("CLOUDSHOP_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "cloudshop"


def _progress(message: str) -> None:
    """Long steps report to stderr so that `make` and pytest -s users see why they wait."""
    print(f"[cloudshop.local] {message}", file=sys.stderr, flush=True)


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


class ServerStartError(RuntimeError):
    """A local server did not come up; the message says why and quotes the end of its log."""


class ProcessObserver(Protocol):
    """Told when a server's process is spawned and when it has ended (see `cloudshop.local.ledger`)."""

    def spawned(self, server: ManagedServer, *, pid: int, argv: Sequence[str]) -> None: ...

    def ended(self, server: ManagedServer, *, pid: int) -> None: ...


_RUNNING: set[ManagedServer] = set()


@atexit.register
def _stop_leftovers() -> None:
    # A crashed test run or an interrupted runner must not leave databases and brokers behind.
    for server in list(_RUNNING):
        with contextlib.suppress(Exception):
            server.stop()


class ManagedServer:
    """One server process: start it, wait until it answers, stop it (whole process group).

    Subclasses give the command line (`_command`), one-off preparation of the data directory
    (`_prepare`) and a readiness probe (`_is_ready`). The process inherits a log file opened here,
    so its output survives the process and can be quoted when start-up fails.
    """

    name: ClassVar[str] = "server"
    startup_timeout: ClassVar[float] = 60.0
    stop_timeout: ClassVar[float] = 20.0
    # Sent to the main process only; the rest of the group gets SIGKILL once it has gone.
    stop_signal: ClassVar[signal.Signals] = signal.SIGTERM
    # When a whole platform is stopped from its ledger, lower waves go first: the services before the
    # servers they use, as `Platform.stop()` orders them.
    stop_wave: ClassVar[int] = 1

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port if port is not None else free_port()
        self._process: subprocess.Popen[bytes] | None = None
        # Seconds the last start() took until ready (preparation included); worth reporting.
        self.startup_seconds: float | None = None
        self.observer: ProcessObserver | None = None

    # -- subclass hooks -------------------------------------------------------------------------
    def _prepare(self) -> None:
        """Make the data directory usable (idempotent: runs before every start)."""

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _environment(self) -> dict[str, str]:
        return dict(os.environ)

    def _is_ready(self) -> bool:
        raise NotImplementedError

    def _after_ready(self) -> None:
        """One-off set-up that needs the running server (e.g. creating a database)."""

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    @property
    def label(self) -> str:
        """The name people know this process by (in reports and the ledger)."""
        return self.name

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def start(self) -> Self:
        """Start the server and block until it is ready; raise ServerStartError otherwise."""
        if self.running:
            return self
        requested = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._prepare()
        if _port_open(self.port):
            raise ServerStartError(f"{self.name}: port {HOST}:{self.port} is already in use")
        # The readiness timeout counts from the spawn: a first-time jar fetch must not eat into it.
        started = time.monotonic()
        argv = self._command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== cloudshop: starting {self.name} on {HOST}:{self.port} ===\n".encode())
            log.flush()
            self._process = subprocess.Popen(  # noqa: S603 - fixed argv built by this module
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._environment(),
                start_new_session=True,
            )
        _RUNNING.add(self)
        try:
            if self.observer is not None:
                self.observer.spawned(self, pid=self._process.pid, argv=argv)
            self._wait_ready(started)
            self._after_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - requested
        return self

    def _wait_ready(self, started: float) -> None:
        deadline = started + self.startup_timeout
        assert self._process is not None
        while True:
            code = self._process.poll()
            if code is not None:
                raise ServerStartError(f"{self.name} exited with code {code} before it was ready\n{self._log_tail()}")
            try:
                if self._is_ready():
                    return
            except Exception:  # noqa: S110 - a probe failing just means "not yet"
                pass
            if time.monotonic() > deadline:
                raise ServerStartError(
                    f"{self.name} was not ready on {HOST}:{self.port} within "
                    f"{self.startup_timeout:.0f}s\n{self._log_tail()}"
                )
            time.sleep(0.2)

    def stop(self) -> None:
        """Ask the server to shut down, wait, then SIGKILL whatever is left of its process group."""
        process = self._process
        _RUNNING.discard(self)
        if process is None:
            return
        self._process = None
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=self.stop_timeout)
        # The group id is the leader's pid (start_new_session); children may outlive the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if self.observer is not None:
            self.observer.ended(self, pid=process.pid)

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError as exc:
            return f"(no log at {self.log_path}: {exc})"
        tail = "\n".join(lines[-_LOG_TAIL_LINES:])
        return f"--- last {_LOG_TAIL_LINES} lines of {self.log_path} ---\n{tail}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<{type(self).__name__} {HOST}:{self.port} {state} data_dir={self.data_dir}>"


# ---------------------------------------------------------------------------------------------------
# PostgreSQL
# ---------------------------------------------------------------------------------------------------


def find_postgres_bin_dir() -> Path:
    """The directory holding `initdb` and `postgres` (Debian keeps them off PATH, per version)."""
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda path: int(Path(path).parent.name) if Path(path).parent.name.isdigit() else 0,
        reverse=True,
    )
    for candidate in versioned:
        if (Path(candidate) / "initdb").exists() and (Path(candidate) / "postgres").exists():
            return Path(candidate)
    on_path = shutil.which("initdb")
    if on_path:
        bin_dir = Path(on_path).resolve().parent
        if (bin_dir / "postgres").exists():
            return bin_dir
    raise ServerStartError(
        "PostgreSQL binaries not found (looked in /usr/lib/postgresql/*/bin and PATH); "
        "install them with: apt-get install -y postgresql"
    )


def _unprivileged_user() -> pwd.struct_passwd:
    """initdb and postgres refuse to run as root, so as root they run as this user instead."""
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise ServerStartError("running as root, but neither a 'postgres' nor a 'nobody' user exists")


def _make_traversable(path: Path) -> None:
    """Give 'others' search (x) permission on every ancestor of `path` that lacks it.

    As root, the cluster runs as an unprivileged user, who must reach the data directory; pytest's
    temporary directories are mode 0700. Search permission alone lets that user pass through a
    directory without listing it, the smallest widening that works.
    """
    for ancestor in reversed(path.parents):
        mode = ancestor.stat().st_mode
        if not mode & 0o001:
            _progress(f"allowing other users to traverse {ancestor} (o+x) so PostgreSQL can reach its data")
            os.chmod(ancestor, mode | 0o001)


def self_signed_certificate(host: str, *, days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed certificate for `host` (named as a DNS name, or an IP address when it is one) and its key,
    both PEM: what a local TLS server needs when the client checks no chain, or trusts this one."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    try:
        alternative: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alternative = x509.DNSName(host)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, certificate.public_bytes(serialization.Encoding.PEM)


class PostgresServer(ManagedServer):
    """A throw-away PostgreSQL cluster on 127.0.0.1 with a `cloudshop` database.

    Built for tests and local runs, not durability: trust auth on loopback only, fsync off, no unix
    socket (so several clusters never collide on a socket path). The cluster lives in
    `<data_dir>/pgdata` and is kept between starts. `url` is a SQLAlchemy/psycopg URL.
    """

    name = "postgres"
    startup_timeout = 60.0
    # SIGINT is PostgreSQL's "fast shutdown": it ends open sessions instead of waiting for them.
    stop_signal = signal.SIGINT
    database = "cloudshop"
    # The services' pools plus concurrency tests reach ~100 connections; leave headroom.
    max_connections = 300

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        superuser: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        database: str | None = None,
    ) -> None:
        """`superuser` + `password`: the cluster's only user is that one, and every client must log in
        with a password (scram-sha-256), like RDS's master user: for tests of roles and rotation.
        `ssl`: TLS with a self-signed certificate, and clients without TLS are refused (RDS with
        `rds.force_ssl`); `url` then asks for `sslmode=require`. `database`: the one created on start."""
        super().__init__(data_dir, port=port)
        self.bin_dir = find_postgres_bin_dir()
        if os.geteuid() == 0:
            self._run_as: pwd.struct_passwd | None = _unprivileged_user()
            self.user = self._run_as.pw_name
        else:
            self._run_as = None
            self.user = pwd.getpwuid(os.geteuid()).pw_name
        if (superuser is None) != (password is None):
            raise ValueError("give both superuser and password, or neither")
        self.password = password
        if superuser is not None:
            self.user = superuser
        self.ssl = ssl
        if database is not None:
            self.database = database

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        """URL of another database on this cluster (e.g. one per test run)."""
        from urllib.parse import quote

        login = self.user + (f":{quote(self.password, safe='')}" if self.password else "")
        query = "?sslmode=require" if self.ssl else ""
        return f"postgresql://{login}@{HOST}:{self.port}/{database}{query}"

    def _as_server_user(self, argv: list[str]) -> list[str]:
        if self._run_as is None:
            return argv
        # setpriv execs in place (no extra parent process as with runuser/su), so the process we
        # signal on stop() is the postmaster itself.
        return [
            "setpriv",
            f"--reuid={self._run_as.pw_uid}",
            f"--regid={self._run_as.pw_gid}",
            "--init-groups",
            "--",
            *argv,
        ]

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(LC_ALL="C", LANG="C")
        if self._run_as is not None:
            env.update(HOME=self._run_as.pw_dir, USER=self._run_as.pw_name, LOGNAME=self._run_as.pw_name)
        return env

    def _prepare(self) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if self._run_as is not None:
            _make_traversable(self.data_dir)
            os.chown(self.data_dir, self._run_as.pw_uid, self._run_as.pw_gid)
            for root, dirs, files in os.walk(self.pgdata):
                os.chown(root, self._run_as.pw_uid, self._run_as.pw_gid)
                for entry in (*dirs, *files):
                    os.lchown(Path(root) / entry, self._run_as.pw_uid, self._run_as.pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return
        auth = ["--auth=trust"]
        if self.password is not None:
            password_file = self.data_dir / "superuser-password"
            password_file.write_text(self.password)
            if self._run_as is not None:
                os.chown(password_file, self._run_as.pw_uid, self._run_as.pw_gid)
            auth = ["--auth=scram-sha-256", f"--pwfile={password_file}"]
        initdb = self._as_server_user(
            [
                str(self.bin_dir / "initdb"),
                f"--pgdata={self.pgdata}",
                f"--username={self.user}",
                *auth,
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        with open(self.log_path, "ab") as log:
            result = subprocess.run(  # noqa: S603 - fixed argv
                initdb,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                env=self._environment(),
                check=False,
            )
        if result.returncode != 0:
            raise ServerStartError(f"initdb failed with code {result.returncode}\n{self._log_tail()}")
        if self.ssl:
            self._require_tls()

    def _require_tls(self) -> None:
        """A self-signed certificate (sslmode=require checks no chain) and `hostssl` lines only, so a
        client that does not ask for TLS is refused, as by RDS with rds.force_ssl=1."""
        key_pem, certificate_pem = self_signed_certificate(HOST)
        key_file, certificate_file = self.pgdata / "server.key", self.pgdata / "server.crt"
        key_file.write_bytes(key_pem)
        key_file.chmod(0o600)  # PostgreSQL refuses a private key that others may read
        certificate_file.write_bytes(certificate_pem)
        hba = self.pgdata / "pg_hba.conf"
        lines = hba.read_text().splitlines()
        hba.write_text("".join(f"hostssl{line[4:]}\n" if line.startswith("host ") else f"{line}\n" for line in lines))
        if self._run_as is not None:
            for path in (key_file, certificate_file):
                os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _command(self) -> list[str]:
        settings = {
            "listen_addresses": HOST,
            "port": str(self.port),
            "unix_socket_directories": "",
            "max_connections": str(self.max_connections),
            "shared_buffers": "128MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "log_min_messages": "warning",
        }
        if self.ssl:
            settings.update(ssl="on", ssl_cert_file="server.crt", ssl_key_file="server.key")
        argv = [str(self.bin_dir / "postgres"), "-D", str(self.pgdata)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        return self._as_server_user(argv)

    def _connect(self, database: str):  # type: ignore[no-untyped-def]
        import psycopg

        return psycopg.connect(self.url_for(database), connect_timeout=2, autocommit=True)

    def _is_ready(self) -> bool:
        if not _port_open(self.port):
            return False
        with self._connect("postgres") as conn:
            conn.execute("SELECT 1")
        return True

    def _after_ready(self) -> None:
        self.create_database(self.database)

    def create_database(self, name: str) -> None:
        """Create database `name` unless it exists (the `cloudshop` one is created on start)."""
        from psycopg import sql

        with self._connect("postgres") as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------------
# Apache Kafka (KRaft)
# ---------------------------------------------------------------------------------------------------


def runtime_pom(name: str, version: str, dependencies: Sequence[tuple[str, str, str]]) -> str:
    """A pom whose only job is to let Maven resolve `dependencies` (group, artifact, version) and
    their runtime classpath (`dependency:copy-dependencies`), for a server run from Maven Central jars."""
    entries = "".join(
        f"""    <dependency>
      <groupId>{group}</groupId>
      <artifactId>{artifact}</artifactId>
      <version>{dependency_version}</version>
    </dependency>
"""
        for group, artifact, dependency_version in dependencies
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by cloudshop.local.servers: resolves the {name} runtime classpath. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.cloudshop</groupId>
  <artifactId>{name}-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{entries}  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{MAVEN_DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


_KAFKA_LOG4J2 = """\
# Generated by cloudshop.local.servers: broker logs to stdout, which goes to kafka.log.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def kafka_libs_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / "kafka" / version / "libs"


def fetch_kafka(version: str = KAFKA_VERSION) -> Path:
    """Download the Kafka broker jars and their runtime dependencies once; return the jar directory."""
    group, artifact = KAFKA_SCALA_ARTIFACT.split(":")
    pom = runtime_pom(
        "kafka",
        version,
        [
            (group, artifact, version),
            ("org.slf4j", "slf4j-api", SLF4J_VERSION),
            ("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
            ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
        ],
    )
    return _fetch_with_maven(kafka_libs_dir(version), pom, label=f"Apache Kafka {version}", marker="kafka_2.13-*.jar")


def _fetch_with_maven(libs: Path, pom: str, *, label: str, marker: str) -> Path:
    """Resolve `pom`'s runtime classpath with Maven into `libs`, once; return `libs`.

    Maven resolves the classpath from a generated pom (no hand-kept jar list to drift). The jars land
    in a temporary directory that is renamed into place only when complete, under a file lock, so an
    interrupted or concurrent fetch never leaves a half-filled cache behind. `marker` is a glob of the
    main jar, whose presence means the fetch is done.
    """
    if libs.is_dir() and any(libs.glob(marker)):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServerStartError(f"Maven (`mvn`) is needed to fetch the {label} jars; apt-get install -y maven")
    version_dir = libs.parent
    version_dir.mkdir(parents=True, exist_ok=True)
    with open(version_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if libs.is_dir() and any(libs.glob(marker)):
            return libs
        work = Path(tempfile.mkdtemp(prefix="fetch-", dir=version_dir))
        try:
            (work / "pom.xml").write_text(pom)
            staged = work / "libs"
            _progress(f"fetching the {label} jars with Maven into {libs} (first time only)")
            started = time.monotonic()
            _run_maven(
                [
                    mvn,
                    "-B",
                    "-f",
                    str(work / "pom.xml"),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={staged}",
                ],
                log_path=work / "maven.log",
                label=label,
            )
            jars = sorted(staged.glob("*.jar"))
            if not any(staged.glob(marker)):
                raise ServerStartError(f"Maven finished but no {marker} is in {staged}")
            staged.rename(libs)
            _progress(f"fetched {len(jars)} jars in {time.monotonic() - started:.0f}s")
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return libs


def _run_maven(argv: list[str], *, log_path: Path, label: str) -> None:
    """Run Maven, echoing a progress line every few downloads; on failure quote its output."""
    downloads = 0
    with open(log_path, "w") as log:
        process = subprocess.Popen(  # noqa: S603 - fixed argv
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if "Downloaded from" in line:
                downloads += 1
                if downloads % 25 == 0:
                    _progress(f"  ... {downloads} files downloaded")
        code = process.wait()
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-_LOG_TAIL_LINES:])
        raise ServerStartError(f"Maven failed with code {code} fetching the {label} jars:\n{tail}")


def _kafka_cluster_id() -> str:
    """A random cluster id in Kafka's format: 16 bytes, URL-safe base64 without padding."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # Kafka's own generator avoids a leading '-', which tools would read as an option.
        if not cluster_id.startswith("-"):
            return cluster_id


SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class ScramListener:
    """A second listener as MSK's public SASL/SCRAM endpoint is configured: SASL_SSL (TLS 1.2+), the
    SCRAM-SHA-512 users given here, and Kafka ACLs enforced (StandardAuthorizer,
    `allow.everyone.if.no.acl.found=false`), so a SCRAM user reaches only what an ACL grants it.

    The PLAINTEXT listener stays as it is and stands in for MSK's IAM listener: its principal
    (`User:ANONYMOUS`) is a super user, as IAM-authenticated clients are not governed by Kafka ACLs on
    MSK. Users are created when the storage is formatted (`kafka-storage format --add-scram`).
    """

    users: Mapping[str, str]
    port: int | None = None


class KafkaServer(ManagedServer):
    """A single-node Apache Kafka broker in KRaft mode (broker and controller in one process).

    The broker listens on `127.0.0.1:<port>` (PLAINTEXT); the controller on a second free port.
    Storage is formatted once in `<data_dir>/kraft-logs`, so stop() then start() keeps every topic
    and message: the tests use that to simulate a broker outage.

    With `scram` the broker also listens on `127.0.0.1:<scram_port>` with SASL_SSL and SCRAM-SHA-512
    users, ACLs enforced there (see `ScramListener`); its certificate is signed by a CA made for the
    data directory, `ca_file` (PEM), which clients trust.
    """

    name = "kafka"
    # A cold JVM on two cores; the broker usually needs 5-15s.
    startup_timeout = 180.0
    stop_timeout = 30.0
    heap = "512m"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        port: int | None = None,
        *,
        controller_port: int | None = None,
        version: str = KAFKA_VERSION,
        scram: ScramListener | None = None,
    ) -> None:
        super().__init__(data_dir, port=port)
        self.controller_port = controller_port if controller_port is not None else free_port()
        self.version = version
        self.scram = scram
        self.scram_port = (scram.port or free_port()) if scram is not None else None
        self._libs: Path | None = None

    @classmethod
    def fetch(cls, version: str = KAFKA_VERSION) -> Path:
        """Only download the jars (for `make` prefetch); return their directory."""
        return fetch_kafka(version)

    @property
    def bootstrap_servers(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft-logs"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def scram_bootstrap_servers(self) -> str:
        """The SASL_SSL (SCRAM) listener's address; only with `scram`."""
        if self.scram_port is None:
            raise ValueError("this broker has no SCRAM listener (KafkaServer(scram=...))")
        return f"{HOST}:{self.scram_port}"

    @property
    def ca_file(self) -> Path:
        """The PEM certificate of the CA that signed the SCRAM listener's certificate: what clients trust."""
        return self.data_dir / "tls" / "ca.pem"

    @property
    def _keystore(self) -> Path:
        return self.data_dir / "tls" / "broker-keystore.pem"

    def _listener_properties(self) -> dict[str, str]:
        plain = f"PLAINTEXT://{HOST}:{self.port}"
        if self.scram_port is None:
            return {
                "listeners": f"{plain},CONTROLLER://{HOST}:{self.controller_port}",
                "advertised.listeners": plain,
                "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            }
        scram = f"SASL_SSL://{HOST}:{self.scram_port}"
        return {
            "listeners": f"{plain},{scram},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"{plain},{scram}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(self._keystore),
            "ssl.enabled.protocols": "TLSv1.3,TLSv1.2",
            "ssl.client.auth": "none",
            # ACLs on, default deny, as the cloud link's configuration (cdk/streaming.py) sets them. The
            # PLAINTEXT and controller principal stands for MSK's IAM clients, whom ACLs do not govern.
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found": "false",
            "super.users": "User:ANONYMOUS",
        }

    def _write_tls_material(self) -> None:
        """A CA and a broker certificate for 127.0.0.1/localhost, made once per data directory."""
        if self.ca_file.exists() and self._keystore.exists():
            return
        import datetime
        import ipaddress

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cloudshop local Kafka CA")])
        ca = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            # Clients check the host name (ssl.endpoint.identification.algorithm=https), as against MSK.
            .add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        # Kafka's PEM key store: an unencrypted PKCS#8 key, then the certificate chain.
        with os.fdopen(os.open(self._keystore, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as store:
            store.write(
                key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
                + certificate.public_bytes(pem)
                + ca.public_bytes(pem)
            )
        self.ca_file.write_bytes(ca.public_bytes(pem))

    def _server_properties(self) -> str:
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            **self._listener_properties(),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.log_dirs),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "auto.create.topics.enable": "true",
            "group.initial.rebalance.delay.ms": "0",
            # Small segments keep a test broker's disk use and start-up recovery small.
            "log.segment.bytes": str(8 * 1024 * 1024),
            "log.retention.check.interval.ms": "60000",
        }
        return "".join(f"{key}={value}\n" for key, value in properties.items())

    def _java(self, main_class: str, *args: str) -> list[str]:
        assert self._libs is not None
        java = shutil.which("java")
        if java is None:
            raise ServerStartError("a Java 17+ runtime (`java`) is needed for Kafka")
        return [
            java,
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{self._libs}/*",
            main_class,
            *args,
        ]

    def _prepare(self) -> None:
        self._libs = fetch_kafka(self.version)
        if self.scram is not None:
            self._write_tls_material()
        # Rewritten on every start: the ports are the object's, the storage is what persists.
        self.config_path.write_text(self._server_properties())
        (self.data_dir / "log4j2.properties").write_text(_KAFKA_LOG4J2)
        if (self.log_dirs / "meta.properties").exists():
            return
        users: list[str] = []
        for name, password in (self.scram.users if self.scram is not None else {}).items():
            users += ["--add-scram", f"{SCRAM_MECHANISM}=[name={name},password={password}]"]
        argv = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            _kafka_cluster_id(),
            "--config",
            str(self.config_path),
            *users,
            "--ignore-formatted",
        )
        with open(self.log_path, "ab") as log:
            result = subprocess.run(  # noqa: S603 - fixed argv
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, check=False
            )
        if result.returncode != 0:
            raise ServerStartError(f"formatting Kafka storage failed with code {result.returncode}\n{self._log_tail()}")

    def _command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_path))

    def _is_ready(self) -> bool:
        if not _port_open(self.port):
            return False
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers, request_timeout_ms=5000, client_id="cloudshop-probe"
        )
        try:
            cluster = admin.describe_cluster()
            return bool(cluster.get("brokers"))
        finally:
            admin.close()

    def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        """Create the topics that do not exist yet (replication factor 1: there is one broker)."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id="cloudshop-admin")
        try:
            existing = set(admin.list_topics())
            wanted = [
                NewTopic(name=name, num_partitions=partitions, replication_factor=1)
                for name in names
                if name not in existing
            ]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics(wanted)
        finally:
            admin.close()


# ---------------------------------------------------------------------------------------------------
# moto (AWS APIs: S3 and SES in the full profile, every API in the embedded one)
# ---------------------------------------------------------------------------------------------------

# moto's own application, served by waitress instead of werkzeug's development server (what
# `python -m moto.server` runs): werkzeug answers every request with `Connection: close`, so each AWS
# call paid a new TCP connection, and the server a new thread. Keeping connections alive took the CPU
# of an S3 PutObject plus an SES SendEmail from 7.1 to 5.7 ms in moto and from 4.0 to 3.4 ms in the
# boto3 caller, and their wall time from 15.4 to 9.9 ms. Threads serve requests, not connections:
# enough for the long polls (up to 20 s each) of every SQS consumer the embedded profile runs at once.
_MOTO_LAUNCHER = (
    "import os, sys\n"
    "host, port = sys.argv[1], sys.argv[2]\n"
    "os.environ.setdefault('MOTO_PORT', port)\n"
    "import waitress\n"
    "from moto.server import DomainDispatcherApplication, create_backend_app\n"
    "waitress.serve(DomainDispatcherApplication(create_backend_app), host=host, port=int(port),\n"
    "               threads=32, connection_limit=1000, asyncore_use_poll=True, ident='moto', _quiet=True)\n"
)


class MotoServer(ManagedServer):
    """The moto server on 127.0.0.1, a separate process serving the AWS APIs at `endpoint_url`.

    Without a `data_dir` its log goes to a fresh temporary directory (moto keeps state in memory).
    """

    name = "moto"
    startup_timeout = 60.0

    def __init__(self, port: int | None = None, *, data_dir: str | os.PathLike[str] | None = None) -> None:
        super().__init__(data_dir or tempfile.mkdtemp(prefix="cloudshop-moto-"), port=port)

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.setdefault("AWS_ACCESS_KEY_ID", "testing")
        env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _command(self) -> list[str]:
        return [sys.executable, "-c", _MOTO_LAUNCHER, HOST, str(self.port)]

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint_url}/moto-api/data.json", timeout=2):  # noqa: S310
                return True
        except urllib.error.HTTPError:
            return True  # any HTTP answer means the server is up

    def reset(self) -> None:
        """Drop every resource moto holds (between tests that need a clean account)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass


# ---------------------------------------------------------------------------------------------------
# DynamoDB (dynalite)
# ---------------------------------------------------------------------------------------------------

DYNALITE_VERSION = "4.0.0"


def fetch_dynalite(version: str = DYNALITE_VERSION) -> Path:
    """Install dynalite from the npm registry into the cache, once; returns its `cli.js`."""
    home = cache_dir() / "dynalite" / version
    cli = home / "node_modules" / "dynalite" / "cli.js"
    if cli.exists():
        return cli
    npm = shutil.which("npm")
    if npm is None:
        raise ServerStartError("npm (Node.js) is needed to install dynalite: apt-get install nodejs npm")
    _progress(f"installing dynalite {version} from the npm registry into {home} ...")
    home.parent.mkdir(parents=True, exist_ok=True)
    # Installed beside its final place and renamed into it, so a half-done install is never used.
    staging = Path(tempfile.mkdtemp(prefix=".dynalite-", dir=home.parent))
    command = [npm, "install", "--no-audit", "--no-fund", "--silent", "--prefix", str(staging), f"dynalite@{version}"]
    answer = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - fixed argv
    if answer.returncode != 0:
        raise ServerStartError(f"npm install dynalite@{version} failed:\n{answer.stdout}{answer.stderr}")
    with contextlib.suppress(OSError):
        staging.rename(home)  # a concurrent installer may have won; either copy is complete
    if not cli.exists():
        raise ServerStartError(f"dynalite was installed but {cli} is missing")
    return cli


class DynaliteServer(ManagedServer):
    """DynamoDB for the full profile and the tests: dynalite, an open-source implementation of the
    DynamoDB API (Node.js, MIT), in memory. DynamoDB Local is not used: its artifacts come under the
    vendor's own terms, not an open-source licence.

    dynalite has no transactions and no TTL expiry: cloudshop needs neither (single-item conditional
    writes carry the outbox; sessions also check `expires_at` on read).
    """

    name = "dynalite"
    startup_timeout = 60.0

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int | None = None) -> None:
        super().__init__(data_dir, port=port)

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _prepare(self) -> None:
        self._cli = fetch_dynalite()

    def _command(self) -> list[str]:
        node = shutil.which("node")
        if node is None:
            raise ServerStartError("node (Node.js) is needed to run dynalite")
        return [
            node,
            str(self._cli),
            "--host",
            HOST,
            "--port",
            str(self.port),
            "--createTableMs",
            "0",
            "--deleteTableMs",
            "0",
            "--updateTableMs",
            "0",
        ]

    def _is_ready(self) -> bool:
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.endpoint_url,
            data=b"{}",
            method="POST",
            headers={"X-Amz-Target": "DynamoDB_20120810.ListTables", "Content-Type": "application/x-amz-json-1.0"},
        )
        try:
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310
                return True
        except urllib.error.HTTPError:
            return True  # it answered (unsigned requests are refused): it is up


# ---------------------------------------------------------------------------------------------------
# SQS (ElasticMQ)
# ---------------------------------------------------------------------------------------------------

ELASTICMQ_VERSION = "1.7.1"
ELASTICMQ_ARTIFACT = "org.elasticmq:elasticmq-server_2.13"


def elasticmq_libs_dir(version: str = ELASTICMQ_VERSION) -> Path:
    return cache_dir() / "elasticmq" / version / "libs"


def fetch_elasticmq(version: str = ELASTICMQ_VERSION) -> Path:
    """Download the ElasticMQ server jar and its runtime dependencies once (~37 MB); return the jar directory."""
    group, artifact = ELASTICMQ_ARTIFACT.split(":")
    pom = runtime_pom("elasticmq", version, [(group, artifact, version)])
    return _fetch_with_maven(
        elasticmq_libs_dir(version), pom, label=f"ElasticMQ {version}", marker="elasticmq-server_2.13-*.jar"
    )


class ElasticMqServer(ManagedServer):
    """SQS for the full profile and the tests: ElasticMQ (Scala on the JVM, Apache 2.0), an SQS-compatible
    server speaking SQS's JSON and query protocols, in memory, run from the Maven Central jars
    `org.elasticmq:elasticmq-server_2.13`.

    Why not moto's SQS: moto's SendMessage walks the whole queue for every message it adds (a
    10-message SendMessageBatch took 4 ms on an empty queue and 155 ms at 1,000 messages here), so
    under load the order service's outbox relay fell behind by tens of seconds. ElasticMQ's send
    stays under a millisecond at any depth (the README's ElasticMQ section has the measurements).

    The server binds 127.0.0.1:<port> and hands out queue URLs on that same address
    (`node-address`), so a URL it returns is one the clients can call. No queue is predeclared:
    provisioning (`cloudshop.provision`) creates them, as CDK does in the cloud. Queue ARNs carry
    `region` and the account `000000000000` (ElasticMQ's), which is what a RedrivePolicy names.

    ElasticMQ accepts `MessageRetentionPeriod` but neither keeps nor reports it: messages stay until
    deleted (or moved to a dead-letter queue), longer than SQS's retention, never shorter.
    """

    name = "elasticmq"
    startup_timeout = 60.0
    stop_timeout = 10.0
    # The queues are in memory; 256 MiB holds far more messages than a local run or the bench leaves.
    heap = "256m"
    account_id = "000000000000"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        port: int | None = None,
        region: str = "eu-west-1",
        version: str = ELASTICMQ_VERSION,
    ) -> None:
        super().__init__(data_dir, port=port)
        self.region = region
        self.version = version
        self._libs: Path | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.data_dir / "elasticmq.conf"

    def _config(self) -> str:
        # HOCON. `-Dconfig.file` replaces the jar's application.conf, which holds the HTTP server's
        # settings (a request timeout above SQS's 20 s long poll, 256 KB messages), so it is included.
        return f"""\
# Generated by cloudshop.local.servers: ElasticMQ on {HOST}:{self.port}, no predeclared queues.
include classpath("application.conf")

node-address {{
  protocol = "http"
  host = "{HOST}"
  port = {self.port}
  context-path = ""
}}
generate-node-address = false

rest-sqs {{
  enabled = true
  bind-hostname = "{HOST}"
  bind-port = {self.port}
  # SQS's own limits (10 entries a batch, 256 KB, 20 s waits...): what passes here passes in AWS.
  sqs-limits = strict
}}

# A queue that does not exist is an error, as in SQS: it is never created by a send.
auto-create-queues {{
  enabled = false
}}

aws {{
  region = "{self.region}"
  accountId = "{self.account_id}"
}}

queues {{}}
queues-storage {{
  enabled = false
}}
messages-storage {{
  enabled = false
}}
"""

    def _prepare(self) -> None:
        self._libs = fetch_elasticmq(self.version)
        # Rewritten on every start: the port is the object's, and nothing else persists.
        self.config_path.write_text(self._config())

    def _command(self) -> list[str]:
        assert self._libs is not None
        java = shutil.which("java")
        if java is None:
            raise ServerStartError("a Java 17+ runtime (`java`) is needed for ElasticMQ")
        return [
            java,
            "-Xms64m",
            f"-Xmx{self.heap}",
            # A small heap on two cores: the serial collector's short pauses, and no concurrent GC
            # threads taking CPU from the services beside it.
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dconfig.file={self.config_path}",
            "-cp",
            f"{self._libs}/*",
            "org.elasticmq.server.Main",
        ]

    def _is_ready(self) -> bool:
        if not _port_open(self.port):
            return False
        # An SQS call over the JSON protocol, as the services make them; ElasticMQ checks no signature.
        request = urllib.request.Request(  # noqa: S310 - loopback
            self.endpoint_url,
            data=b"{}",
            method="POST",
            headers={"X-Amz-Target": "AmazonSQS.ListQueues", "Content-Type": "application/x-amz-json-1.0"},
        )
        with urllib.request.urlopen(request, timeout=2) as answer:  # noqa: S310
            return bool(answer.status == 200)


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------------
# Prometheus (`cloudshop up --observability`)
# ---------------------------------------------------------------------------------------------------

PROMETHEUS_BIN = os.environ.get("CLOUDSHOP_PROMETHEUS", "/usr/bin/prometheus")
# The one source of the alerting and recording rules: the PrometheusRule that kustomize applies.
PROMETHEUS_RULES = Path(__file__).resolve().parents[2] / "eks_services" / "k8s" / "monitoring" / "prometheus-rules.yaml"


class PrometheusServer(ManagedServer):
    """A real Prometheus (Debian's `prometheus` package) scraping `targets` (job name → port on
    127.0.0.1, path /metrics) every 5 s and evaluating the cluster's rules, with its TSDB in `data_dir`."""

    name = "prometheus"
    # Stopped before the services it scrapes would only log scrape failures; either order is safe.
    stop_wave = 0

    def __init__(self, data_dir: str | os.PathLike[str], *, port: int | None = None, targets: dict[str, int]) -> None:
        super().__init__(data_dir, port=port)
        self.targets = dict(targets)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def _prepare(self) -> None:
        import yaml

        rules = yaml.safe_load(PROMETHEUS_RULES.read_text())["spec"]
        (self.data_dir / "rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
        config = {
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "rule_files": ["rules.yaml"],
            "scrape_configs": [
                {
                    "job_name": job,
                    "metrics_path": "/metrics",
                    # The services label their own series with `service`; keep theirs, as in the cluster.
                    "honor_labels": True,
                    "static_configs": [{"targets": [f"{HOST}:{port}"]}],
                }
                for job, port in sorted(self.targets.items())
            ],
        }
        (self.data_dir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))

    def _command(self) -> list[str]:
        if not Path(PROMETHEUS_BIN).is_file():
            raise ServerStartError(f"prometheus not found at {PROMETHEUS_BIN}: run `make system-deps`")
        return [
            PROMETHEUS_BIN,
            f"--config.file={self.data_dir / 'prometheus.yml'}",
            f"--storage.tsdb.path={self.data_dir / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
            "--storage.tsdb.retention.time=2d",
        ]

    def _is_ready(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:  # noqa: S310 - local URL
            return bool(answer.status == 200)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m cloudshop.local.servers fetch`: prefetch the Kafka and ElasticMQ jars and dynalite (run by `make`)."""
    parser = argparse.ArgumentParser(prog="python -m cloudshop.local.servers", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser(
        "fetch", help="download the Apache Kafka and ElasticMQ jars and dynalite into the cache"
    )
    fetch.add_argument("--kafka-version", default=KAFKA_VERSION)
    fetch.add_argument("--elasticmq-version", default=ELASTICMQ_VERSION)
    args = parser.parse_args(argv)
    if args.command == "fetch":
        try:
            libs = fetch_kafka(args.kafka_version)
            elasticmq = fetch_elasticmq(args.elasticmq_version)
            dynalite = fetch_dynalite()
        except ServerStartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _progress(f"Kafka {args.kafka_version} jars ready in {libs}")
        _progress(f"ElasticMQ {args.elasticmq_version} jars ready in {elasticmq}")
        _progress(f"dynalite ready: {dynalite}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
