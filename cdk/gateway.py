"""The HTTP API: the estate's route table, a token authorizer, throttling and access logs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.assets import ARCHITECTURE, RUNTIME, RUNTIME_REASON, LambdaPackages
from cdk.nag import LAMBDA_BASIC, LAMBDA_BASIC_REASON, LOG_GROUP_KMS_REASON, XRAY, XRAY_REASON, checkov_skip, nag
from cdk.runtime.authorizer import SERVICE_TOKEN_HEADER
from cdk.tables import construct_id
from cloudshop.build import PLATFORM_ASSET
from cloudshop.estate import GATEWAY_HEALTH_PATHS, Route

ACCESS_LOG_FORMAT = json.dumps(
    {
        "requestId": "$context.requestId",
        "ip": "$context.identity.sourceIp",
        "requestTime": "$context.requestTime",
        "httpMethod": "$context.httpMethod",
        "routeKey": "$context.routeKey",
        "path": "$context.path",
        "status": "$context.status",
        "protocol": "$context.protocol",
        "responseLength": "$context.responseLength",
        "latency": "$context.responseLatency",
        "integrationLatency": "$context.integrationLatency",
        "integrationError": "$context.integrationErrorMessage",
        "authorizerError": "$context.authorizer.error",
        "sub": "$context.authorizer.sub",
        "service": "$context.authorizer.service",
    }
)
PUBLIC_ROUTE_REASON = "Public by the route table (cloudshop.estate route with public=True): {route}."
AUTHORIZER_SKIPS = {
    "CKV_AWS_116": "Invoked synchronously by API Gateway, which denies the request on failure.",
    "CKV_AWS_117": (
        "Verifies a signature with the public key and reads the sessions table through DynamoDB's regional "
        "endpoint: it reaches nothing inside the VPC."
    ),
    "CKV_AWS_115": "Bounded by the stage throttling; reserving concurrency would cap the whole API.",
    "CKV_AWS_173": "Its environment holds the JWT public key, the issuer and a table name: no secret values.",
}
SERVICE_AUTHORIZER_SKIPS = {
    "CKV_AWS_116": "Invoked synchronously by API Gateway, which denies the request on failure.",
    "CKV_AWS_117": "Reads one secret from Secrets Manager's regional endpoint: it reaches nothing in the VPC.",
    "CKV_AWS_115": "Bounded by the stage throttling; reserving concurrency would cap the internal routes.",
    "CKV_AWS_173": "Its environment names the secret by ARN; the value is read at run time, never stored.",
}

HEALTH_SKIPS = {
    "CKV_AWS_116": "Invoked synchronously by API Gateway; there is nothing to retry.",
    "CKV_AWS_117": "Answers a constant: it reaches no resource, in the VPC or out of it.",
    "CKV_AWS_115": "Bounded by the stage throttling; reserving concurrency would cap a health check.",
    "CKV_AWS_173": "Its only environment variable is its service name: nothing to encrypt.",
}


def route_key(route: Route) -> apigw.HttpRouteKey:
    return apigw.HttpRouteKey.with_(route.path, apigw.HttpMethod[route.method])


def route_id(route: Route) -> str:
    """A stable construct id per route, e.g. `GetApiV1ProductsProxy`."""
    path = route.path.replace("{proxy+}", "proxy").replace("/", "-")
    return route.method.capitalize() + construct_id(path)


class HttpGateway(Construct):
    """The HTTP API with a `$default` stage (throttled, JSON access logs) and two Lambda authorizers.

    User routes carry `authorizer`, which checks the RS256 access token with the public key and that
    its session is still active (`cdk/runtime/authorizer.py`): a JWT authorizer would need an OIDC
    issuer URL serving JWKS, which the user service does not publish, and could not see a logout.
    Internal routes carry `service_authorizer`, which takes only a service token (`x-service-token`).
    Neither caches its answers. The stack grants the functions what they read (sessions table, secret).
    Routes are added from the estate's route table by service: `add_routes` takes the routes of the
    services a given integration serves.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id_: str,
        *,
        api_name: str,
        packages: LambdaPackages,
        dependency_layer: lambda_.ILayerVersion,
        authorizer_environment: Mapping[str, str],
        service_authorizer_environment: Mapping[str, str],
        throttle_rate: int,
        throttle_burst: int,
        log_retention: logs.RetentionDays,
        cors_origins: Iterable[str] = (),
    ) -> None:
        super().__init__(scope, construct_id_)
        origins = list(cors_origins)
        self.api = apigw.HttpApi(
            self,
            "Api",
            api_name=api_name,
            create_default_stage=False,
            cors_preflight=apigw.CorsPreflightOptions(
                allow_origins=origins,
                allow_methods=[apigw.CorsHttpMethod.ANY],
                allow_headers=["authorization", "content-type", "idempotency-key"],
                max_age=Duration.hours(1),
            )
            if origins
            else None,
        )
        self.access_logs = logs.LogGroup(
            self, "AccessLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        checkov_skip(self.access_logs, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
        self.stage = apigw.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(rate_limit=throttle_rate, burst_limit=throttle_burst),
            detailed_metrics_enabled=True,
        )
        cfn_stage = self.stage.node.default_child
        assert isinstance(cfn_stage, apigw.CfnStage)
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.access_logs.log_group_arn, format=ACCESS_LOG_FORMAT
        )

        self.authorizer_function = self._authorizer_function(
            "AuthorizerFunction",
            handler="cdk.runtime.authorizer.handler",
            environment=authorizer_environment,
            description="cloudshop gateway authorizer: RS256 access token of a live session",
            skips=AUTHORIZER_SKIPS,
            packages=packages,
            dependency_layer=dependency_layer,
            log_retention=log_retention,
        )
        self.service_authorizer_function = self._authorizer_function(
            "ServiceAuthorizerFunction",
            handler="cdk.runtime.authorizer.service_handler",
            environment=service_authorizer_environment,
            description="cloudshop gateway authorizer: service token on internal routes",
            skips=SERVICE_AUTHORIZER_SKIPS,
            packages=packages,
            dependency_layer=dependency_layer,
            log_retention=log_retention,
        )
        # No result cache on either: a cached "allow" would outlive a logout (access tokens) or the
        # token's own five-minute life (service tokens).
        self.authorizer = authorizers.HttpLambdaAuthorizer(
            "TokenAuthorizer",
            self.authorizer_function,
            authorizer_name="cloudshop-token",
            response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
            identity_source=["$request.header.Authorization"],
            results_cache_ttl=Duration.seconds(0),
        )
        self.service_authorizer = authorizers.HttpLambdaAuthorizer(
            "ServiceTokenAuthorizer",
            self.service_authorizer_function,
            authorizer_name="cloudshop-service-token",
            response_types=[authorizers.HttpLambdaResponseType.SIMPLE],
            identity_source=[f"$request.header.{SERVICE_TOKEN_HEADER}"],
            results_cache_ttl=Duration.seconds(0),
        )
        self.routes: dict[Route, apigw.HttpRoute] = {}
        self.health_function = self._health_function(
            packages=packages, dependency_layer=dependency_layer, log_retention=log_retention
        )
        health = integrations.HttpLambdaIntegration("HealthIntegration", self.health_function)
        self.health_routes = []
        for path in GATEWAY_HEALTH_PATHS:
            http_route = apigw.HttpRoute(
                self,
                "GetHealth" + construct_id(path.replace("/", "-")),
                http_api=self.api,
                route_key=apigw.HttpRouteKey.with_(path, apigw.HttpMethod.GET),
                integration=health,
            )
            reason = PUBLIC_ROUTE_REASON.format(route=f"GET {path} (the gateway's health, like the local one)")
            nag(http_route, {"AwsSolutions-APIG4": reason})
            checkov_skip(http_route, {"CKV_AWS_309": reason})
            self.health_routes.append(http_route)

    def _health_function(
        self, *, packages: LambdaPackages, dependency_layer: lambda_.ILayerVersion, log_retention: logs.RetentionDays
    ) -> lambda_.Function:
        log_group = logs.LogGroup(self, "HealthLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        checkov_skip(log_group, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
        function = lambda_.Function(
            self,
            "HealthFunction",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="cdk.runtime.gateway_health.handler",
            code=packages.code(PLATFORM_ASSET),
            layers=[dependency_layer],
            memory_size=128,
            timeout=Duration.seconds(3),
            environment={"SERVICE_NAME": "gateway-health"},
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            description="cloudshop gateway /healthz",
        )
        checkov_skip(function, HEALTH_SKIPS)
        nag(function, {"AwsSolutions-L1": RUNTIME_REASON, LAMBDA_BASIC: LAMBDA_BASIC_REASON, XRAY: XRAY_REASON})
        return function

    def _authorizer_function(
        self,
        construct_id_: str,
        *,
        handler: str,
        environment: Mapping[str, str],
        description: str,
        skips: Mapping[str, str],
        packages: LambdaPackages,
        dependency_layer: lambda_.ILayerVersion,
        log_retention: logs.RetentionDays,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(
            self,
            construct_id_.replace("Function", "Logs"),
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        checkov_skip(log_group, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
        function = lambda_.Function(
            self,
            construct_id_,
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler=handler,
            code=packages.code(PLATFORM_ASSET),
            layers=[dependency_layer],
            memory_size=256,
            timeout=Duration.seconds(5),
            environment=dict(environment),
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            description=description,
        )
        checkov_skip(function, skips)
        nag(function, {"AwsSolutions-L1": RUNTIME_REASON, LAMBDA_BASIC: LAMBDA_BASIC_REASON, XRAY: XRAY_REASON})
        return function

    def authorizer_for(self, route: Route) -> authorizers.HttpLambdaAuthorizer | None:
        """Public routes: none; internal routes: the service token; every other route: the access token."""
        if route.public:
            return None
        return self.service_authorizer if route.internal else self.authorizer

    def add_routes(
        self, scope: Construct, routes: Iterable[Route], integration: apigw.HttpRouteIntegration
    ) -> list[apigw.HttpRoute]:
        """Add `routes` on `integration`, in `scope` (a construct of the stack that owns the integration)."""
        added = []
        for route in routes:
            http_route = apigw.HttpRoute(
                scope,
                route_id(route),
                http_api=self.api,
                route_key=route_key(route),
                integration=integration,
                authorizer=self.authorizer_for(route),
            )
            if route.public:
                reason = PUBLIC_ROUTE_REASON.format(route=f"{route.method} {route.path}")
                nag(http_route, {"AwsSolutions-APIG4": reason})
                checkov_skip(http_route, {"CKV_AWS_309": reason})
            self.routes[route] = http_route
            added.append(http_route)
        return added

    @property
    def url(self) -> str:
        return self.api.api_endpoint
