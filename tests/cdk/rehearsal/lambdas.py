"""The Lambda functions of the templates, each in its own process, behind the Lambda Invoke API.

`FunctionSpec` is one `AWS::Lambda::Function` as deployed: its physical name and ARN, handler,
timeout, memory, its code asset and layers (directories of the cloud assembly), and its environment
as the template evaluates it. `LambdaService` starts a `lambda_host.py` process per function on first
use (or ahead of time with `start`), and serves `POST /2015-03-31/functions/<name>/invocations` on
loopback, so plain boto3 with `AWS_ENDPOINT_URL_LAMBDA` invokes functions by name or ARN.

Every environment is the template's, rewritten through the network map, plus what the Lambda
runtime sets itself (region, function name, task root, ...), plus dummy credentials and endpoints
of the local AWS APIs in place of the execution role and AWS's own endpoints.
"""

from __future__ import annotations

import json
import sys
import threading
import urllib.parse
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx

from tests.cdk.rehearsal.network import NetworkMap
from tests.cdk.rehearsal.processes import HOST, Child, LoopbackServer, RehearsalError, free_port, log_tail

HOST_SCRIPT = Path(__file__).with_name("lambda_host.py")
PROVIDER_ON_EVENT = "USER_ON_EVENT_FUNCTION_ARN"
PROVIDER_IS_COMPLETE = "USER_IS_COMPLETE_FUNCTION_ARN"
# Lambda refuses a function whose environment sets one of these: the runtime owns them.
RESERVED = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_LAMBDA_RUNTIME_API",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
START_TIMEOUT = 60.0


@dataclass
class FunctionSpec:
    stack: str
    logical_id: str
    name: str
    arn: str
    handler: str
    runtime: str
    timeout: float
    memory: int
    environment: dict[str, str]
    code: Path | None
    layers: list[Path] = field(default_factory=list)
    tracing: bool = False

    @property
    def module_file(self) -> Path | None:
        """Where the handler's module is in the code asset (None when it is not there)."""
        if self.code is None:
            return None
        module = self.handler.rpartition(".")[0].replace(".", "/")
        for candidate in (self.code / f"{module}.py", self.code / module / "__init__.py"):
            if candidate.exists():
                return candidate
        return None

    @property
    def hostable(self) -> bool:
        """A Python function whose handler module its asset ships: it can run here."""
        return self.runtime.startswith("python") and self.module_file is not None

    @property
    def provider_targets(self) -> tuple[str | None, str | None]:
        """For a CDK Provider framework function: the ARNs of the user's onEvent and isComplete functions."""
        return self.environment.get(PROVIDER_ON_EVENT), self.environment.get(PROVIDER_IS_COMPLETE)

    def __str__(self) -> str:
        return f"{self.name} ({self.handler}, {self.stack}/{self.logical_id})"


@dataclass(frozen=True)
class Invocation:
    payload: Any
    error: str | None  # Lambda's X-Amz-Function-Error (`Unhandled`) when the handler failed
    raw: bytes

    def describe(self) -> str:
        if self.error and isinstance(self.payload, dict):
            trace = "".join(self.payload.get("stackTrace") or [])
            return f"{self.payload.get('errorType')}: {self.payload.get('errorMessage')}\n{trace}"
        return self.raw.decode(errors="replace")[:4000]


def asset_directory(assets: Path, s3_key: str, *, work: Path) -> Path:
    """The directory of the cloud assembly asset that `s3_key` (`<hash>.zip`) names."""
    digest = s3_key.removesuffix(".zip")
    directory = assets / f"asset.{digest}"
    if directory.is_dir():
        return directory
    archive = assets / f"asset.{digest}.zip"
    if archive.exists():
        target = work / "assets" / digest
        if not target.exists():
            with zipfile.ZipFile(archive) as zipped:
                zipped.extractall(target)
        return target
    raise RehearsalError(f"asset {s3_key} is not in the cloud assembly {assets}")


class LambdaHost:
    """The process of one function, and a client that runs one invocation at a time on it."""

    def __init__(self, spec: FunctionSpec, *, env: dict[str, str], work: Path) -> None:
        self.spec = spec
        self.port = free_port()
        assert spec.code is not None
        argv = [
            sys.executable,
            "-I",
            "-u",
            str(HOST_SCRIPT),
            f"--handler={spec.handler}",
            f"--code={spec.code}",
            f"--port={self.port}",
            f"--function-name={spec.name}",
            f"--function-arn={spec.arn}",
            f"--timeout={spec.timeout}",
            f"--memory={spec.memory}",
            *[f"--layer={layer}" for layer in spec.layers],
            *(["--tracing"] if spec.tracing else []),
        ]
        self.child = Child(f"Lambda {spec}", argv, env=env, cwd=spec.code, log=work / "lambda" / f"{spec.name}.log")
        # Lambda runs one invocation per execution environment at a time.
        self._lock = threading.Lock()
        self._http = httpx.Client(base_url=f"http://{HOST}:{self.port}")

    def start(self) -> None:
        self.child.start()
        self.child.wait_http(f"http://{HOST}:{self.port}/ready", timeout=START_TIMEOUT)

    def invoke(self, event: Any) -> Invocation:
        body = event if isinstance(event, bytes) else json.dumps(event).encode()
        with self._lock:
            if not self.child.running:
                raise RehearsalError(f"{self.child.name} is not running\n{self.child.evidence()}")
            try:
                response = self._http.post(
                    "/invoke",
                    content=body,
                    headers={"X-Request-Id": str(uuid.uuid4())},
                    timeout=self.spec.timeout,
                )
            except httpx.TimeoutException:
                # Lambda ends an invocation at the function's timeout, and the environment with it.
                self.child.stop()
                error = {
                    "errorType": "Sandbox.Timedout",
                    "errorMessage": f"Task timed out after {self.spec.timeout:.2f} seconds",
                }
                return Invocation(payload=error, error="Unhandled", raw=json.dumps(error).encode())
        raw = response.content
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        return Invocation(payload=payload, error=response.headers.get("X-Function-Error"), raw=raw)

    def stop(self) -> None:
        self._http.close()
        self.child.stop()


class LambdaService:
    """The account's functions: registry by name and ARN, their hosts, and the Invoke API endpoint."""

    def __init__(self, *, work: Path, network: NetworkMap, local_env: dict[str, str], region: str) -> None:
        self.work = work
        self.network = network
        self.local_env = dict(local_env)
        self.region = region
        self.functions: dict[str, FunctionSpec] = {}
        self._hosts: dict[str, LambdaHost] = {}
        self._starting: dict[str, threading.Lock] = {}
        self._registry_lock = threading.Lock()
        self._endpoint = LoopbackServer(_invoke_api(self))

    @property
    def endpoint_url(self) -> str:
        return self._endpoint.url

    def serve(self) -> None:
        self._endpoint.start()

    def register(self, spec: FunctionSpec) -> None:
        reserved = sorted(RESERVED & set(spec.environment))
        if reserved:
            raise RehearsalError(f"Lambda refuses {spec}: reserved environment variables {reserved}")
        self.functions[spec.name] = spec

    def lookup(self, name_or_arn: str) -> FunctionSpec:
        """By name, ARN, or ARN with a qualifier (`:$LATEST`), as the Invoke API accepts them."""
        reference = urllib.parse.unquote(name_or_arn)
        if reference.startswith("arn:"):
            parts = reference.split(":")
            reference = parts[6] if len(parts) >= 7 else reference
        else:
            reference = reference.split(":", 1)[0]
        if reference not in self.functions:
            raise KeyError(name_or_arn)
        return self.functions[reference]

    def environment(self, spec: FunctionSpec) -> dict[str, str]:
        """What the function's process sees: the template's values, and what the runtime adds."""
        runtime = {
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory),
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"rehearsal/[$LATEST]{uuid.uuid4().hex}",
            "LAMBDA_TASK_ROOT": str(spec.code),
            "LAMBDA_RUNTIME_DIR": str(Path(sys.executable).parent),
            "_HANDLER": spec.handler,
            "TZ": ":UTC",
            "LANG": "en_US.UTF-8",
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        }
        if spec.tracing:
            runtime.update(AWS_XRAY_CONTEXT_MISSING="LOG_ERROR", AWS_XRAY_DAEMON_ADDRESS=f"{HOST}:2000")
        return {**self.network.rewrite_environment(spec.environment), **runtime, **self.local_env}

    def host(self, spec: FunctionSpec) -> LambdaHost:
        """The running host of `spec`, started on first use."""
        with self._registry_lock:
            lock = self._starting.setdefault(spec.name, threading.Lock())
        with lock:
            if spec.name in self._hosts and not self._hosts[spec.name].child.running:
                # A timed-out or crashed environment is replaced by a fresh one (a cold start).
                self._hosts.pop(spec.name).stop()
            if spec.name not in self._hosts:
                if not spec.hostable:
                    raise RehearsalError(
                        f"{spec} cannot run here: runtime {spec.runtime}, handler module "
                        f"{'found' if spec.module_file else 'missing from its code asset ' + str(spec.code)}"
                    )
                host = LambdaHost(spec, env=self.environment(spec), work=self.work)
                self._hosts[spec.name] = host
                host.start()
            return self._hosts[spec.name]

    def start(self, specs: list[FunctionSpec]) -> None:
        """Start several hosts at once (their imports take seconds each)."""
        with ThreadPoolExecutor(max_workers=max(1, len(specs))) as pool:
            for future in [pool.submit(self.host, spec) for spec in specs]:
                future.result()

    def invoke(self, name_or_arn: str, event: Any) -> Invocation:
        try:
            spec = self.lookup(name_or_arn)
        except KeyError:
            raise RehearsalError(f"no function {name_or_arn!r}; deployed: {sorted(self.functions)}") from None
        return self.host(spec).invoke(event)

    def log(self, name_or_arn: str) -> str:
        try:
            spec = self.lookup(name_or_arn)
        except KeyError:
            return f"(no function {name_or_arn})"
        host = self._hosts.get(spec.name)
        return host.child.evidence() if host else f"({spec.name} never started)"

    def logs(self) -> str:
        return "\n".join(log_tail(host.child.log, 25) for host in self._hosts.values())

    def stop(self) -> None:
        self._endpoint.stop()
        for host in self._hosts.values():
            host.stop()


def _invoke_api(service: LambdaService) -> type[BaseHTTPRequestHandler]:
    """The Invoke API (`POST /2015-03-31/functions/<name>/invocations`) as boto3 calls it."""

    class InvokeApi(BaseHTTPRequestHandler):
        def log_message(self, format: str, *values: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in {"Content-Type": "application/json", **headers}.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, error_type: str, message: str) -> None:
            body = json.dumps({"Type": "User", "message": message}).encode()
            self._answer(status, body, {"x-amzn-ErrorType": error_type})

        def do_POST(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            parts = path.strip("/").split("/")
            payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if len(parts) != 4 or parts[:2] != ["2015-03-31", "functions"] or parts[3] != "invocations":
                self._error(404, "UnknownOperationException", f"not the Invoke API: {path}")
                return
            try:
                spec = service.lookup(parts[2])
            except KeyError:
                self._error(404, "ResourceNotFoundException", f"Function not found: {urllib.parse.unquote(parts[2])}")
                return
            invocation_type = self.headers.get("X-Amz-Invocation-Type", "RequestResponse")
            if invocation_type == "DryRun":
                self._answer(204, b"", {})
                return
            if invocation_type == "Event":
                threading.Thread(target=service.invoke, args=(spec.name, payload), daemon=True).start()
                self._answer(202, b"", {})
                return
            try:
                result = service.invoke(spec.name, payload or b"{}")
            except RehearsalError as exc:
                self._error(500, "ServiceException", str(exc)[:2000])
                return
            headers = {"X-Amz-Executed-Version": "$LATEST"}
            if result.error:
                headers["X-Amz-Function-Error"] = result.error
            self._answer(200, result.raw, headers)

    return InvokeApi
