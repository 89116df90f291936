"""The HTTP API (`AWS::ApiGatewayV2::*`) of the templates, served on loopback as API Gateway serves it.

Built from the deployed resources alone: each `Route`'s `RouteKey` and `Target` (`integrations/<id>`)
-> its `Integration` (`AWS_PROXY`: a Lambda function with payload format 2.0; `HTTP_PROXY` over a VPC
link: a load balancer listener, which the cluster resolves to a pod), and its `AuthorizerId` -> a
Lambda `REQUEST` authorizer with simple responses.

API Gateway's rules, as documented for HTTP APIs:
- route selection: the most specific match wins: a route without a greedy variable over one with
  `{proxy+}` (which matches one or more path segments, never none), literal segments over `{vars}`
  from the left, and a method over `ANY`; `$default` last; no match is a 404;
- an authorizer whose identity source is missing answers 401 without being invoked; `isAuthorized:
  false` is a 403; an authorizer that fails is a 500; the context of an allow reaches a Lambda
  integration as `requestContext.authorizer.lambda`;
- a Lambda integration gets the payload 2.0 event; an answer without `statusCode` is a 200 with the
  answer as JSON; a function error is a 500.
Not emulated: throttling, CORS preflight, authorizer result caching (the templates set a TTL of 0).
"""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx

from tests.cdk.rehearsal.cloudformation import Deployment, NotEmulated, Resource
from tests.cdk.rehearsal.lambdas import LambdaService
from tests.cdk.rehearsal.processes import LoopbackServer

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)
# HTTP API integrations time out at 30 s.
INTEGRATION_TIMEOUT = 30.0
_FUNCTION_IN_URI = re.compile(r"/functions/(?P<arn>arn:[^/]+)/invocations$")

Headers = list[tuple[str, str]]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Headers
    body: bytes

    @staticmethod
    def message(status: int, message: str) -> Answer:
        return Answer(status, [("content-type", "application/json")], json.dumps({"message": message}).encode())


@dataclass(frozen=True)
class RouteKey:
    """`METHOD /path/{var}/{proxy+}` (or `$default`) and how specifically it matches a request."""

    text: str
    method: str
    segments: tuple[str, ...]

    @staticmethod
    def parse(text: str) -> RouteKey:
        if text == "$default":
            return RouteKey(text, "ANY", ())
        method, _, path = text.partition(" ")
        return RouteKey(text, method.upper(), tuple(path.strip("/").split("/")) if path.strip("/") else ())

    @property
    def greedy(self) -> bool:
        return bool(self.segments) and self.segments[-1].endswith("+}")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """The path parameters when the route takes this request, else None."""
        if self.text == "$default" or self.method not in ("ANY", method.upper()):
            return None
        parts = path.strip("/").split("/") if path.strip("/") else []
        parameters: dict[str, str] = {}
        fixed = self.segments[:-1] if self.greedy else self.segments
        if len(parts) < len(fixed) + (1 if self.greedy else 0) or (not self.greedy and len(parts) != len(fixed)):
            return None
        for pattern, part in zip(fixed, parts, strict=False):
            if pattern.startswith("{") and pattern.endswith("}"):
                parameters[pattern[1:-1]] = urllib.parse.unquote(part)
            elif pattern != part:
                return None
        if self.greedy:
            parameters[self.segments[-1][1:-2]] = urllib.parse.unquote("/".join(parts[len(fixed) :]))
        return parameters

    def rank(self) -> tuple[Any, ...]:
        """Smaller is more specific: no greedy variable, literal segments from the left, a method over ANY."""
        literal = tuple(0 if not (s.startswith("{") and s.endswith("}")) else 1 for s in self.segments)
        return (self.text == "$default", self.greedy, literal, self.method == "ANY")


@dataclass(frozen=True)
class Authorizer:
    name: str
    function_arn: str
    identity_sources: tuple[str, ...]


@dataclass(frozen=True)
class Integration:
    kind: str  # AWS_PROXY | HTTP_PROXY
    function_arn: str | None = None
    upstream: Callable[[], str] | None = None  # base URL of an HTTP_PROXY integration


@dataclass(frozen=True)
class Route:
    key: RouteKey
    integration: Integration
    authorizer: Authorizer | None


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str
    headers: Headers
    body: bytes
    source_ip: str

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ",".join(values) if values else None


class HttpApi:
    """One `AWS::ApiGatewayV2::Api` and what its routes lead to."""

    def __init__(
        self,
        deployment: Deployment,
        api: Resource,
        *,
        lambdas: LambdaService,
        listener_url: Callable[[str], str],
        port: int,
    ) -> None:
        self.deployment = deployment
        self.lambdas = lambdas
        self.api_id = deployment.ref(api)
        self.domain = str(deployment.get_att(api, "ApiEndpoint")).removeprefix("https://")
        self.routes = self._routes(listener_url)
        self._http = httpx.Client(timeout=INTEGRATION_TIMEOUT)
        self._server = LoopbackServer(_handler(self), port=port)

    @property
    def url(self) -> str:
        return self._server.url

    def serve(self) -> HttpApi:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()
        self._http.close()

    # --- the route table, from the template ------------------------------------------------------------
    def _routes(self, listener_url: Callable[[str], str]) -> list[Route]:
        deployment = self.deployment
        mine = [r for r in deployment.of_type("AWS::ApiGatewayV2::Route") if deployment.prop(r, "ApiId") == self.api_id]
        integrations = {
            deployment.ref(i): i
            for i in deployment.of_type("AWS::ApiGatewayV2::Integration")
            if deployment.prop(i, "ApiId") == self.api_id
        }
        authorizers = {
            deployment.ref(a): a
            for a in deployment.of_type("AWS::ApiGatewayV2::Authorizer")
            if deployment.prop(a, "ApiId") == self.api_id
        }
        routes = []
        for route in mine:
            target = str(deployment.prop(route, "Target", ""))
            if not target.startswith("integrations/") or target.split("/", 1)[1] not in integrations:
                raise NotEmulated(f"{route}: target {target!r} is no integration of this API")
            integration = self._integration(integrations[target.split("/", 1)[1]], listener_url)
            authorizer = None
            if deployment.prop(route, "AuthorizationType", "NONE") == "CUSTOM":
                authorizer = self._authorizer(authorizers[deployment.prop(route, "AuthorizerId")])
            elif deployment.prop(route, "AuthorizationType", "NONE") != "NONE":
                raise NotEmulated(f"{route}: authorization {deployment.prop(route, 'AuthorizationType')}")
            routes.append(Route(RouteKey.parse(str(deployment.prop(route, "RouteKey"))), integration, authorizer))
        return routes

    def _integration(self, resource: Resource, listener_url: Callable[[str], str]) -> Integration:
        prop = self.deployment.prop
        kind = prop(resource, "IntegrationType")
        uri = str(prop(resource, "IntegrationUri"))
        if kind == "AWS_PROXY":
            if prop(resource, "PayloadFormatVersion", "1.0") != "2.0":
                raise NotEmulated(f"{resource}: Lambda payload format {prop(resource, 'PayloadFormatVersion', '1.0')}")
            match = _FUNCTION_IN_URI.search(uri)
            return Integration("AWS_PROXY", function_arn=match["arn"] if match else uri)
        if kind == "HTTP_PROXY" and prop(resource, "ConnectionType", "INTERNET") == "VPC_LINK":
            return Integration("HTTP_PROXY", upstream=lambda: listener_url(uri))
        raise NotEmulated(f"{resource}: integration type {kind}")

    def _authorizer(self, resource: Resource) -> Authorizer:
        prop = self.deployment.prop
        if prop(resource, "AuthorizerType") != "REQUEST" or not prop(resource, "EnableSimpleResponses", False):
            raise NotEmulated(f"{resource}: only Lambda REQUEST authorizers with simple responses are emulated")
        if prop(resource, "AuthorizerPayloadFormatVersion") != "2.0":
            raise NotEmulated(f"{resource}: authorizer payload {prop(resource, 'AuthorizerPayloadFormatVersion')}")
        match = _FUNCTION_IN_URI.search(str(prop(resource, "AuthorizerUri")))
        if match is None:
            raise NotEmulated(f"{resource}: authorizer URI {prop(resource, 'AuthorizerUri')}")
        return Authorizer(
            name=str(prop(resource, "Name")),
            function_arn=match["arn"],
            identity_sources=tuple(prop(resource, "IdentitySource", [])),
        )

    # --- a request ----------------------------------------------------------------------------------------
    def select(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        matches = [(route, params) for route in self.routes if (params := route.key.match(method, path)) is not None]
        if not matches:
            default = next((r for r in self.routes if r.key.text == "$default"), None)
            return (default, {}) if default else None
        return min(matches, key=lambda m: m[0].key.rank())

    def handle(self, request: Request) -> Answer:
        request_id = base64.b32encode(uuid.uuid4().bytes).decode()[:16]
        selected = self.select(request.method, request.path)
        if selected is None:
            return self._stamp(Answer.message(404, "Not Found"), request_id)
        route, parameters = selected
        authorizer_context: dict[str, Any] | None = None
        if route.authorizer is not None:
            denied, authorizer_context = self._authorize(route, request, parameters, request_id)
            if denied is not None:
                return self._stamp(denied, request_id)
        if route.integration.kind == "AWS_PROXY":
            answer = self._invoke(route, request, parameters, request_id, authorizer_context)
        else:
            answer = self._forward(route, request)
        return self._stamp(answer, request_id)

    def _stamp(self, answer: Answer, request_id: str) -> Answer:
        return Answer(answer.status, [*answer.headers, ("apigw-requestid", request_id)], answer.body)

    def _identity(self, source: str, request: Request) -> str | None:
        if source.startswith("$request.header."):
            return request.header(source.removeprefix("$request.header."))
        if source.startswith("$request.querystring."):
            values = urllib.parse.parse_qs(request.query).get(source.removeprefix("$request.querystring."))
            return ",".join(values) if values else None
        raise NotEmulated(f"identity source {source}")

    def _authorize(
        self, route: Route, request: Request, parameters: dict[str, str], request_id: str
    ) -> tuple[Answer | None, dict[str, Any] | None]:
        authorizer = route.authorizer
        assert authorizer is not None
        identity = [self._identity(source, request) for source in authorizer.identity_sources]
        if any(not value for value in identity):
            return Answer.message(401, "Unauthorized"), None
        event = self._event(route, request, parameters, request_id, None)
        event.update(
            type="REQUEST",
            routeArn=(
                f"arn:aws:execute-api:{self.deployment.region}:{self.deployment.account}:"
                f"{self.api_id}/$default/{request.method}{request.path}"
            ),
            identitySource=identity,
        )
        event.pop("body", None)
        event.pop("isBase64Encoded", None)
        result = self.lambdas.invoke(authorizer.function_arn, event)
        if result.error or not isinstance(result.payload, dict) or "isAuthorized" not in result.payload:
            return Answer.message(500, "Internal Server Error"), None
        if result.payload["isAuthorized"] is not True:
            return Answer.message(403, "Forbidden"), None
        return None, dict(result.payload.get("context") or {})

    def _event(
        self,
        route: Route,
        request: Request,
        parameters: dict[str, str],
        request_id: str,
        authorizer_context: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """The HTTP API payload format 2.0 event."""
        headers: dict[str, str] = {}
        cookies: list[str] = []
        for name, value in request.headers:
            if name.lower() == "cookie":
                cookies += [c.strip() for c in value.split(";") if c.strip()]
                continue
            key = name.lower()
            headers[key] = f"{headers[key]},{value}" if key in headers else value
        query: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(request.query, keep_blank_values=True):
            query[name] = f"{query[name]},{value}" if name in query else value
        now = time.time()
        try:
            body, encoded = request.body.decode(), False
        except UnicodeDecodeError:
            body, encoded = base64.b64encode(request.body).decode(), True
        context: dict[str, Any] = {
            "accountId": self.deployment.account,
            "apiId": self.api_id,
            "domainName": self.domain,
            "domainPrefix": self.api_id,
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": "HTTP/1.1",
                "sourceIp": request.source_ip,
                "userAgent": headers.get("user-agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.key.text,
            "stage": "$default",
            "time": datetime.fromtimestamp(now, UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(now * 1000),
        }
        if authorizer_context is not None:
            context["authorizer"] = {"lambda": authorizer_context}
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.key.text,
            "rawPath": request.path,
            "rawQueryString": request.query,
            "headers": headers,
            "requestContext": context,
            "isBase64Encoded": encoded,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if parameters:
            event["pathParameters"] = parameters
        if request.body:
            event["body"] = body
        return event

    def _invoke(
        self,
        route: Route,
        request: Request,
        parameters: dict[str, str],
        request_id: str,
        authorizer_context: dict[str, Any] | None,
    ) -> Answer:
        assert route.integration.function_arn is not None
        event = self._event(route, request, parameters, request_id, authorizer_context)
        result = self.lambdas.invoke(route.integration.function_arn, event)
        if result.error:
            return Answer.message(500, "Internal Server Error")
        payload = result.payload
        if not (isinstance(payload, dict) and "statusCode" in payload):
            # Payload 2.0: an answer without a status code is the body of a 200 JSON answer.
            text = payload if isinstance(payload, str) else json.dumps(payload)
            return Answer(200, [("content-type", "application/json")], text.encode())
        headers: Headers = [(k, str(v)) for k, v in (payload.get("headers") or {}).items()]
        for name, values in (payload.get("multiValueHeaders") or {}).items():
            headers += [(name, str(v)) for v in values]
        headers += [("set-cookie", cookie) for cookie in payload.get("cookies") or []]
        # API Gateway frames the answer itself: a function's own Content-Length (Mangum sends one) is
        # dropped, not sent beside the gateway's (a strict HTTP client refuses the duplicate).
        headers = [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]
        body = payload.get("body") or ""
        raw = base64.b64decode(body) if payload.get("isBase64Encoded") else str(body).encode()
        return Answer(int(payload["statusCode"]), headers, raw)

    def _forward(self, route: Route, request: Request) -> Answer:
        """HTTP_PROXY: the request as it came (method, path, query, headers, body) to the integration."""
        assert route.integration.upstream is not None
        url = route.integration.upstream().rstrip("/") + request.path + (f"?{request.query}" if request.query else "")
        headers = [(k, v) for k, v in request.headers if k.lower() not in HOP_BY_HOP]
        headers.append(("x-forwarded-for", request.source_ip))
        try:
            response = self._http.request(request.method, url, headers=headers, content=request.body)
        except httpx.TimeoutException:
            return Answer.message(504, "Gateway Timeout")
        except httpx.TransportError:
            return Answer.message(503, "Service Unavailable")
        kept = [(k, v) for k, v in response.headers.multi_items() if k.lower() not in HOP_BY_HOP]
        return Answer(response.status_code, kept, response.content)


def _handler(api: HttpApi) -> type[BaseHTTPRequestHandler]:
    class Gateway(BaseHTTPRequestHandler):
        def log_message(self, format: str, *values: Any) -> None:
            pass

        def _serve(self) -> None:
            split = urllib.parse.urlsplit(self.path)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Request(
                method=self.command,
                path=split.path,
                query=split.query,
                headers=list(self.headers.items()),
                body=body,
                source_ip=self.client_address[0],
            )
            try:
                answer = api.handle(request)
            except Exception as exc:  # the emulator's own failure: visible in the answer, never a hang
                answer = Answer(500, [("content-type", "text/plain")], f"rehearsal gateway: {exc!r}".encode())
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _serve

    return Gateway
