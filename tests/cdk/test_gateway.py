"""HttpGateway and the private integration: the route table of `cloudshop.estate`, auth, limits, logs."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from cloudshop.estate import ESTATE, LAMBDA_SERVICES, Route

pytestmark = pytest.mark.infra


def stack_of(route: Route) -> str:
    return "Api" if route.service in LAMBDA_SERVICES else "Eks"


@pytest.mark.parametrize("route", ESTATE.routes, ids=lambda r: f"{r.method} {r.path}")
def test_every_route_of_the_table_is_on_the_api_with_its_authorization(synth, route: Route) -> None:
    authorization = (
        {"AuthorizationType": "NONE"}
        if route.public
        else {"AuthorizationType": "CUSTOM", "AuthorizerId": Match.any_value()}
    )
    synth.template(stack_of(route)).has_resource_properties(
        "AWS::ApiGatewayV2::Route",
        {"RouteKey": f"{route.method} {route.path}", "Target": Match.any_value(), **authorization},
    )


def test_no_route_exists_that_the_table_does_not_declare(synth) -> None:
    keys = [r["Properties"]["RouteKey"] for r in synth.all_resources("AWS::ApiGatewayV2::Route").values()]
    assert sorted(keys) == sorted(f"{r.method} {r.path}" for r in ESTATE.routes)


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


def test_authorizer_checks_the_bearer_token_with_a_cached_simple_response(synth) -> None:
    synth.template("Api").has_resource_properties(
        "AWS::ApiGatewayV2::Authorizer",
        {
            "AuthorizerType": "REQUEST",
            "IdentitySource": ["$request.header.Authorization"],
            "EnableSimpleResponses": True,
            "AuthorizerPayloadFormatVersion": "2.0",
            "AuthorizerResultTtlInSeconds": 300,
        },
    )
    synth.template("Api").has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "cdk.runtime.authorizer.handler",
            "Environment": {
                "Variables": {
                    "JWT_PUBLIC_KEY": Match.any_value(),
                    "JWT_ISSUER": "cloudshop",
                    "SERVICE_NAME": Match.any_value(),
                    "ENVIRONMENT": "dev",
                }
            },
        },
    )


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
