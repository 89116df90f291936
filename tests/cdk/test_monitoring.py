"""Monitoring: alarms to an encrypted topic, and a dashboard, for the serverless side and the stores."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

from cloudshop.estate import ESTATE, LAMBDA_SERVICES

pytestmark = pytest.mark.infra


def alarm_names(synth) -> set[str]:
    return {a["Properties"]["AlarmName"] for a in synth.resources("Monitoring", "AWS::CloudWatch::Alarm").values()}


@pytest.mark.parametrize("service", LAMBDA_SERVICES)
@pytest.mark.parametrize("signal", ["errors", "throttles", "duration-p99"])
def test_lambda_alarm(synth, service: str, signal: str) -> None:
    assert f"{synth.config.prefix}ops-{service}-{signal}" in alarm_names(synth)


def test_lambda_error_alarm_reads_the_function_errors(synth) -> None:
    synth.template("Monitoring").has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": f"{synth.config.prefix}ops-user-errors",
            "Namespace": "AWS/Lambda",
            "MetricName": "Errors",
            "Statistic": "Sum",
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "AlarmActions": [Match.any_value()],
        },
    )


def test_api_5xx_alarm(synth) -> None:
    synth.template("Monitoring").has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"AlarmName": f"{synth.config.prefix}ops-api-5xx", "Namespace": "AWS/ApiGateway", "MetricName": "5xx"},
    )


@pytest.mark.parametrize("queue", ESTATE.queues, ids=lambda q: q.name)
def test_dead_letter_queue_depth_alarm(synth, queue) -> None:
    synth.template("Monitoring").has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "AlarmName": f"{synth.config.prefix}ops-{queue.name}-dlq-depth",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Threshold": 1,
        },
    )


@pytest.mark.parametrize("table", ESTATE.tables, ids=lambda t: t.name)
def test_table_throttle_alarm(synth, table) -> None:
    assert f"{synth.config.prefix}ops-{table.name}-table-throttles" in alarm_names(synth)


@pytest.mark.parametrize(
    ("alarm", "metric"), [("rds-cpu", "CPUUtilization"), ("rds-connections", "DatabaseConnections")]
)
def test_database_alarm(synth, alarm: str, metric: str) -> None:
    synth.template("Monitoring").has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {"AlarmName": f"{synth.config.prefix}ops-{alarm}", "Namespace": "AWS/RDS", "MetricName": metric},
    )


def test_alarm_topic_is_encrypted_and_dashboard_exists(synth) -> None:
    synth.template("Monitoring").has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})
    synth.template("Monitoring").has_resource_properties(
        "AWS::CloudWatch::Dashboard", {"DashboardName": f"{synth.config.prefix}ops"}
    )
