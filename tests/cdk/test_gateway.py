"""HttpGateway and the private integration: the route table of `cloudshop.estate`, auth, limits, logs."""

from __future__ import annotations

import json
import shlex
from typing import Any

import pytest
from aws_cdk.assertions import Match

from cloudshop.estate import ESTATE, GATEWAY_HEALTH, GATEWAY_HEALTH_PATHS, LAMBDA_SERVICES, WORKLOADS, Route, Workload
from cloudshop.settings import resource_settings
from tests.cdk.test_eks import render
from tests.cdk.test_functions import settings_names
from tests.infra.test_dockerfiles import stages

pytestmark = pytest.mark.infra


def stack_of(route: Route) -> str:
    return "Api" if route.service in LAMBDA_SERVICES else "Eks"


def authorizers_by_identity(synth) -> dict[str, str]:
    """The logical id of each authorizer, by the header it takes its identity from."""
    found = {}
    for logical_id, resource in synth.resources("Api", "AWS::ApiGatewayV2::Authorizer").items():
        (source,) = resource["Properties"]["IdentitySource"]
        found[source] = logical_id
    return found


@pytest.mark.parametrize("route", ESTATE.routes, ids=lambda r: f"{r.method} {r.path}")
def test_every_route_of_the_table_is_on_the_api_with_its_authorization(synth, route: Route) -> None:
    by_identity = authorizers_by_identity(synth)
    if route.public:
        authorization: dict[str, object] = {"AuthorizationType": "NONE"}
    else:
        # Internal routes take only a service token; every other route an access token.
        identity = "$request.header.x-service-token" if route.internal else "$request.header.Authorization"
        authorizer_id: object = {"Ref": by_identity[identity]}
        if stack_of(route) != "Api":
            authorizer_id = Match.any_value()  # imported across stacks
        authorization = {"AuthorizationType": "CUSTOM", "AuthorizerId": authorizer_id}
    synth.template(stack_of(route)).has_resource_properties(
        "AWS::ApiGatewayV2::Route",
        {"RouteKey": f"{route.method} {route.path}", "Target": Match.any_value(), **authorization},
    )


def test_internal_routes_exist_and_serve_reservations_only() -> None:
    internal = [r for r in ESTATE.routes if r.internal]
    assert internal and all(r.service == "product" and not r.public for r in internal)
    # Exact route keys, each with the callers the estate declares: no greedy internal route.
    assert all("{proxy+}" not in r.path and r.callers == ("order",) for r in internal)


def test_no_route_exists_that_the_table_does_not_declare(synth) -> None:
    keys = [r["Properties"]["RouteKey"] for r in synth.all_resources("AWS::ApiGatewayV2::Route").values()]
    declared = [f"{r.method} {r.path}" for r in ESTATE.routes] + [f"GET {p}" for p in GATEWAY_HEALTH_PATHS]
    assert sorted(keys) == sorted(declared)


def test_the_gateway_answers_healthz_like_the_local_one(synth) -> None:
    from cdk.runtime.gateway_health import handler

    routes = synth.resources("Api", "AWS::ApiGatewayV2::Route")
    health = {
        r["Properties"]["RouteKey"]: r for r in routes.values() if r["Properties"]["RouteKey"].endswith("healthz")
    }
    assert set(health) == {f"GET {p}" for p in GATEWAY_HEALTH_PATHS}
    assert all("AuthorizerId" not in r["Properties"] for r in health.values()), "health needs no token"
    functions = synth.resources("Api", "AWS::Lambda::Function")
    (function,) = [f for f in functions.values() if f["Properties"]["Handler"] == "cdk.runtime.gateway_health.handler"]
    assert "VpcConfig" not in function["Properties"]

    answer = handler({"rawPath": "/healthz"}, None)
    assert answer["statusCode"] == 200
    assert json.loads(answer["body"]) == GATEWAY_HEALTH


def test_stage_is_throttled_and_writes_json_access_logs(synth) -> None:
    synth.template("Api").has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "StageName": "$default",
            "AutoDeploy": True,
            "DefaultRouteSettings": {
                "ThrottlingRateLimit": synth.config.api_throttle_rate,
                "ThrottlingBurstLimit": synth.config.api_throttle_burst,
                "DetailedMetricsEnabled": True,
            },
            "AccessLogSettings": {
                "DestinationArn": Match.any_value(),
                "Format": Match.string_like_regexp(r"\$context\.requestId"),
            },
        },
    )


@pytest.mark.parametrize(
    ("identity", "handler"),
    [
        ("$request.header.Authorization", "cdk.runtime.authorizer.handler"),
        ("$request.header.x-service-token", "cdk.runtime.authorizer.service_handler"),
    ],
)
def test_authorizers_answer_simply_and_are_never_cached(synth, identity: str, handler: str) -> None:
    # A cached "allow" would outlive a logout (access tokens) or the token itself (service tokens).
    synth.template("Api").has_resource_properties(
        "AWS::ApiGatewayV2::Authorizer",
        {
            "AuthorizerType": "REQUEST",
            "IdentitySource": [identity],
            "EnableSimpleResponses": True,
            "AuthorizerPayloadFormatVersion": "2.0",
            "AuthorizerResultTtlInSeconds": 0,
        },
    )
    synth.template("Api").has_resource_properties("AWS::Lambda::Function", {"Handler": handler})


def authorizer_function(synth, handler: str) -> tuple[str, dict[str, Any]]:
    (found,) = [
        (logical_id, f["Properties"])
        for logical_id, f in synth.resources("Api", "AWS::Lambda::Function").items()
        if f["Properties"]["Handler"] == handler
    ]
    return found


def test_access_token_authorizer_gets_the_key_issuer_and_sessions_table(synth) -> None:
    _, function = authorizer_function(synth, "cdk.runtime.authorizer.handler")
    env = function["Environment"]["Variables"]

    assert env["JWT_ISSUER"] == "cloudshop"
    assert env["SESSIONS_TABLE"] == resource_settings(synth.config.prefix)["SESSIONS_TABLE"]
    assert env["ENVIRONMENT"] == synth.config.environment
    assert "JWT_PUBLIC_KEY" in env


def test_service_token_authorizer_names_the_secrets_of_its_routes_pairs_by_arn_only(synth) -> None:
    _, function = authorizer_function(synth, "cdk.runtime.authorizer.service_handler")
    env = function["Environment"]["Variables"]

    arns = json.loads(render(env["INTERNAL_TOKEN_SECRET_ARNS"]))
    assert sorted(arns) == list(ESTATE.token_pairs_of("gateway")) == ["order-product"]
    assert "INTERNAL_TOKEN_SECRETS" not in env


@pytest.mark.parametrize("handler", ["cdk.runtime.authorizer.handler", "cdk.runtime.authorizer.service_handler"])
def test_authorizer_variables_are_settings_fields(synth, handler: str) -> None:
    _, function = authorizer_function(synth, handler)
    assert set(function["Environment"]["Variables"]) <= settings_names()


def policy_statements_of(synth, handler: str) -> list[dict[str, Any]]:
    _, function = authorizer_function(synth, handler)
    role = function["Role"]["Fn::GetAtt"][0]
    return [
        statement
        for policy in synth.resources("Api", "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


def data_actions(statements: list[dict[str, Any]]) -> dict[str, str]:
    """{action: rendered resource} for the data actions (X-Ray's are not data)."""
    found = {}
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        for action in actions:
            if not action.startswith("xray:"):
                found[action] = json.dumps(statement["Resource"])
    return found


def test_access_token_authorizer_may_only_read_session_items(synth) -> None:
    actions = data_actions(policy_statements_of(synth, "cdk.runtime.authorizer.handler"))

    assert set(actions) == {"dynamodb:GetItem", "kms:Decrypt", "kms:DescribeKey"}
    assert "TablesSessions" in actions["dynamodb:GetItem"]


def test_service_token_authorizer_may_only_read_the_secrets_of_its_routes_pairs(synth) -> None:
    actions = data_actions(policy_statements_of(synth, "cdk.runtime.authorizer.service_handler"))

    assert set(actions) == {"secretsmanager:GetSecretValue", "kms:Decrypt", "kms:DescribeKey"}
    assert "AuthInternalTokenOrderProduct" in actions["secretsmanager:GetSecretValue"]
    assert "AuthInternalTokenOrderPayment" not in actions["secretsmanager:GetSecretValue"]


def test_eks_routes_go_through_the_vpc_link(synth) -> None:
    synth.template("Eks").has_resource_properties(
        "AWS::ApiGatewayV2::Integration",
        {
            "IntegrationType": "HTTP_PROXY",
            "ConnectionType": "VPC_LINK",
            "ConnectionId": Match.any_value(),
            "IntegrationUri": Match.any_value(),
            "PayloadFormatVersion": "1.0",
        },
    )
    synth.template("Eks").has_resource_properties("AWS::ApiGatewayV2::VpcLink", {"SubnetIds": Match.any_value()})


def test_lambda_routes_use_lambda_proxy_integrations(synth) -> None:
    synth.template("Api").has_resource_properties(
        "AWS::ApiGatewayV2::Integration", {"IntegrationType": "AWS_PROXY", "PayloadFormatVersion": "2.0"}
    )


@pytest.mark.parametrize("workload", WORKLOADS, ids=lambda workload: workload.name)
def test_pods_keep_idle_connections_longer_than_the_load_balancer(synth, workload: Workload) -> None:
    # Whoever closes an idle connection first races the other side's next request on it: the ALB
    # must be that side, or a request sent as the pod closes the connection becomes a 502.
    (balancer,) = synth.resources("Eks", "AWS::ElasticLoadBalancingV2::LoadBalancer").values()
    attributes = {a["Key"]: a["Value"] for a in balancer["Properties"]["LoadBalancerAttributes"]}
    entrypoint = shlex.split(dict(stages(workload)[-1])["ENTRYPOINT"].replace('", "', " ").strip('[]"'))

    pod_keep_alive = int(entrypoint[entrypoint.index("--timeout-keep-alive") + 1])
    assert int(attributes["idle_timeout.timeout_seconds"]) < pod_keep_alive
