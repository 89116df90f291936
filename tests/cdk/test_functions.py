"""ServiceFunctions: the Lambda services, their settings contract, grants and the SQS event source."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from cdk.access import SERVICE_ACCESS
from cdk.config import preset
from cloudshop.estate import ESTATE, LAMBDA_SERVICES, ServiceName
from cloudshop.settings import Settings, resource_settings

pytestmark = pytest.mark.infra

# Library-owned variables: Powertools reads them, Settings does not.
LIBRARY_PREFIXES = ("POWERTOOLS_", "PYDANTIC_")  # cloudshop.lambda_entry.runtime_settings


def settings_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(name.upper())
        if field.alias:
            names.add(field.alias.upper())
    return names


def function_of(synth, service: str) -> dict[str, Any]:
    functions = [
        f
        for f in synth.resources("Api", "AWS::Lambda::Function").values()
        if f["Properties"].get("Handler") == f"functions.{service}.handler.handler"
    ]
    assert len(functions) == 1, f"no single function for {service}"
    return functions[0]["Properties"]


def environment(synth, service: str) -> dict[str, Any]:
    return function_of(synth, service)["Environment"]["Variables"]


@pytest.mark.parametrize("service", LAMBDA_SERVICES)
def test_service_runs_its_handler_in_the_vpc_with_the_dependency_layer(synth, service: str) -> None:
    synth.template("Api").has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": f"functions.{service}.handler.handler",
            "Runtime": "python3.11",
            "Architectures": ["x86_64"],
            "Layers": [Match.any_value(), Match.any_value()],
            "TracingConfig": {"Mode": "Active"},
            "VpcConfig": {"SubnetIds": Match.any_value(), "SecurityGroupIds": Match.any_value()},
        },
    )


@pytest.mark.parametrize("service", LAMBDA_SERVICES)
def test_every_variable_a_service_gets_is_a_settings_field(synth, service: str) -> None:
    known = settings_names()
    unknown = {
        name for name in environment(synth, service) if name not in known and not name.startswith(LIBRARY_PREFIXES)
    }
    assert not unknown, f"{service} gets variables Settings does not declare: {unknown}"


@pytest.mark.parametrize("service", LAMBDA_SERVICES)
def test_required_settings_and_resource_names_are_set(synth, service: ServiceName) -> None:
    env = environment(synth, service)
    for name, value in resource_settings(synth.config.prefix).items():
        assert env[name] == value
    for name in (
        "SERVICE_NAME",
        "ENVIRONMENT",
        "JWT_PUBLIC_KEY",
        "POWERTOOLS_SERVICE_NAME",
        "POWERTOOLS_METRICS_NAMESPACE",
    ):
        assert name in env, f"{service} lacks {name}"
    access = SERVICE_ACCESS[service]
    assert ("INTERNAL_TOKEN_SECRET_ARNS" in env) == access.internal_token
    assert ("ORDER_EVENTS_QUEUE_URL" in env) == ("order-events" in access.send_queues + access.consume_queues)
    assert ("SES_SENDER" in env) == access.send_email
    assert env["SERVICE_NAME"] == env["POWERTOOLS_SERVICE_NAME"] == service
    assert env["ENVIRONMENT"] == synth.config.environment
    # Settings must accept every literal value CDK sets.
    literals = {k.lower(): v for k, v in env.items() if isinstance(v, str) and k in settings_names()}
    Settings(**literals)


@pytest.mark.parametrize("service", LAMBDA_SERVICES)
def test_only_the_user_service_can_find_the_signing_key(synth, service: str) -> None:
    assert ("JWT_PRIVATE_KEY_SECRET_ARN" in environment(synth, service)) == (service == "user")
    assert "JWT_PRIVATE_KEY" not in environment(synth, service)


@pytest.mark.parametrize("service", [s for s in LAMBDA_SERVICES if SERVICE_ACCESS[s].database])
def test_database_url_points_at_the_proxy_without_credentials(synth, service: str) -> None:
    env = environment(synth, service)
    url = env["DATABASE_URL"]["Fn::Join"][1]
    assert url[0] == "postgresql://"
    assert "Endpoint" in str(url[1]) and "Proxy" in str(url[1])
    assert url[2] == f":5432/{synth.config.db_name}?sslmode=require"
    assert "DATABASE_SECRET_ARN" in env


def test_notification_consumes_order_events_with_partial_batch_responses(synth) -> None:
    queue = ESTATE.queue("order-events")
    synth.template("Api").has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionName": Match.any_value(),
            "EventSourceArn": Match.any_value(),
            "BatchSize": 10,
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    )
    # Lambda refuses a mapping whose function outlives the queue's visibility timeout.
    assert function_of(synth, "notification")["Timeout"] < queue.visibility_timeout_seconds


def test_api_functions_finish_before_the_gateway_gives_up(synth) -> None:
    for service in LAMBDA_SERVICES:
        assert function_of(synth, service)["Timeout"] < 30


@pytest.mark.parametrize("service", LAMBDA_SERVICES)
def test_spans_go_to_the_adot_collector_layer_over_otlp(synth, service: str) -> None:
    env = environment(synth, service)
    assert env["TRACING_ENABLED"] == "true"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://localhost:4318"
    assert ":layer:aws-otel-collector-amd64-" in json.dumps(function_of(synth, service)["Layers"][1])
    assert Settings(tracing_enabled=env["TRACING_ENABLED"]).tracing_enabled


@pytest.mark.parametrize("service", LAMBDA_SERVICES)
def test_a_function_keeps_the_share_of_traces_its_environment_is_configured_for(synth, service: str) -> None:
    env = environment(synth, service)
    assert Settings(trace_sample_ratio=env["TRACE_SAMPLE_RATIO"]).trace_sample_ratio == synth.config.trace_sample_ratio


def test_the_trace_share_is_configurable_per_environment_and_must_be_a_share() -> None:
    assert preset("dev").trace_sample_ratio == preset("prod").trace_sample_ratio == 1.0  # every trace by default
    assert preset("prod", trace_sample_ratio=0.05).trace_sample_ratio == 0.05
    with pytest.raises(ValueError, match="trace_sample_ratio"):
        preset("prod", trace_sample_ratio=1.5)
