"""One Lambda execution environment, as a process: `python -I -u lambda_host.py --handler m.f --code DIR ...`.

Started by `tests.cdk.rehearsal.lambdas` with exactly the function's environment. Like the Python
runtime it puts the function's code asset first on `sys.path`, then its layers, and imports the
handler once (the init phase); then it runs one invocation at a time, in the main thread.

The project is installed in the virtualenv in editable mode, which would let any module of the
repository be imported from anywhere. That import hook is removed first, so the function sees only
what its package and layers ship (plus the virtualenv's third-party libraries, which stand in for the
dependency layer): a module missing from the asset fails here as it would in Lambda.

Protocol (loopback only): `GET /ready` -> 200 once the init phase is over (`init_error` says how it
went); `POST /invoke` with the event as the body -> 200 with the handler's JSON answer, and the
header `X-Function-Error: Unhandled` with Lambda's error document when the handler raised.
"""

from __future__ import annotations

import argparse
import decimal
import importlib
import json
import logging
import os
import sys
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any


def isolate_imports(code: str, layers: list[str]) -> None:
    """The function's import path: its code, then its layers, then the runtime's libraries."""
    sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in _module_of(f)]
    sys.path_hooks[:] = [h for h in sys.path_hooks if "__editable__" not in _module_of(h)]
    sys.path[:] = [p for p in sys.path if "__editable__" not in p]
    importlib.invalidate_caches()
    layer_paths = []
    for layer in layers:
        # Lambda adds /opt/python and /opt/python/lib/python3.x/site-packages of every layer.
        layer_paths += [
            os.path.join(layer, "python"),
            os.path.join(layer, "python", "lib", f"python{sys.version_info[0]}.{sys.version_info[1]}", "site-packages"),
        ]
    sys.path[:0] = [code, *layer_paths]


def _module_of(thing: Any) -> str:
    return str(getattr(thing, "__module__", "") or getattr(type(thing), "__module__", ""))


class Context:
    """The `context` argument the Python runtime passes (the attributes Powertools and handlers read)."""

    def __init__(self, args: argparse.Namespace, request_id: str) -> None:
        self.function_name = args.function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = args.function_arn
        self.memory_limit_in_mb = args.memory
        self.aws_request_id = request_id
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + args.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _json_default(value: Any) -> Any:
    # The Python runtime serialises Decimal (DynamoDB numbers) as JSON numbers.
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def error_document(exc: BaseException, request_id: str, *, error_type: str | None = None) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": error_type or type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_exception(exc),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--handler", required=True)
    parser.add_argument("--code", required=True)
    parser.add_argument("--layer", action="append", default=[])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--function-name", required=True)
    parser.add_argument("--function-arn", required=True)
    parser.add_argument("--timeout", type=float, required=True)
    parser.add_argument("--memory", type=int, required=True)
    parser.add_argument("--tracing", action="store_true")
    args = parser.parse_args()

    # The runtime gives the root logger a handler, so `logger.info` of a module that sets its level shows.
    logging.basicConfig(format="[%(levelname)s]\t%(asctime)s\t%(name)s\t%(message)s", stream=sys.stdout)
    isolate_imports(args.code, args.layer)
    module_name, _, function_name = args.handler.rpartition(".")
    handler: Any = None
    init_error: dict[str, Any] | None = None
    try:
        handler = getattr(importlib.import_module(module_name), function_name)
    except BaseException as exc:
        error_type = "Runtime.ImportModuleError" if isinstance(exc, ImportError) else "Runtime.InitError"
        init_error = error_document(exc, "init", error_type=error_type)
        print(f"[ERROR] init failed: {''.join(init_error['stackTrace'])}", flush=True)

    class Invocations(BaseHTTPRequestHandler):
        def log_message(self, format: str, *values: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes, *, error: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if error:
                self.send_header("X-Function-Error", "Unhandled")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._answer(200, json.dumps({"init_error": init_error}).encode())

        def do_POST(self) -> None:
            request_id = self.headers.get("X-Request-Id") or str(uuid.uuid4())
            payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if init_error is not None:
                self._answer(200, json.dumps(init_error).encode(), error=True)
                return
            if args.tracing:
                # What the runtime sets per invocation when active tracing is on (unsampled: no daemon).
                os.environ["_X_AMZN_TRACE_ID"] = (
                    f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=0"
                )
            try:
                event = json.loads(payload or b"{}")
                result = handler(event, Context(args, request_id))
                body = json.dumps(result, default=_json_default).encode()
            except Exception as exc:
                print(f"[ERROR] {request_id} {''.join(traceback.format_exception(exc))}", flush=True)
                self._answer(200, json.dumps(error_document(exc, request_id)).encode(), error=True)
                return
            self._answer(200, body)

    print(f"lambda host for {args.function_name} ({args.handler}) on 127.0.0.1:{args.port}", flush=True)
    HTTPServer(("127.0.0.1", args.port), Invocations).serve_forever()


if __name__ == "__main__":
    main()
