"""CloudWatch alarms and one dashboard for the serverless side and the data stores."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_rds as rds
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.tables import construct_id
from cloudshop.estate import ServiceName

PERIOD = Duration.minutes(5)
# p99 duration alarms fire at this share of the function's timeout.
DURATION_SHARE = 0.8
DB_CPU_PERCENT = 80
DB_CONNECTIONS = 300


class Monitoring(Construct):
    """Alarms (to `topic`) and a dashboard: Lambda errors/throttles/duration, API 5xx, DLQ depth,
    DynamoDB throttles, RDS CPU and connections. Each alarm's name says what to look at."""

    def __init__(
        self,
        scope: Construct,
        construct_id_: str,
        *,
        name: str,
        functions: Mapping[ServiceName, lambda_.Function],
        timeouts: Mapping[ServiceName, Duration],
        api: apigw.HttpApi,
        tables: Mapping[str, dynamodb.Table],
        dead_letter_queues: Mapping[str, sqs.IQueue],
        database: rds.DatabaseInstance,
        alarm_email: str | None,
    ) -> None:
        super().__init__(scope, construct_id_)
        self.name = name
        # CloudWatch can publish to an encrypted topic only with a customer-managed key that trusts it.
        self.key = kms.Key(self, "AlarmKey", description=f"{name} alarm topic", enable_key_rotation=True)
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:GenerateDataKey"],
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                resources=["*"],
            )
        )
        self.topic = sns.Topic(self, "AlarmTopic", display_name=f"{name} alarms", master_key=self.key, enforce_ssl=True)
        if alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        self.alarms: list[cloudwatch.Alarm] = []
        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=name)

        for service, function in functions.items():
            timeout_ms = timeouts[service].to_milliseconds()
            errors = function.metric_errors(period=PERIOD, statistic="Sum")
            throttles = function.metric_throttles(period=PERIOD, statistic="Sum")
            duration = function.metric_duration(period=PERIOD, statistic="p99")
            self._alarm(f"{service}-errors", errors, threshold=1, evaluation_periods=1)
            self._alarm(f"{service}-throttles", throttles, threshold=1, evaluation_periods=1)
            self._alarm(
                f"{service}-duration-p99",
                duration,
                threshold=DURATION_SHARE * timeout_ms,
                evaluation_periods=3,
            )
            self.dashboard.add_widgets(
                cloudwatch.GraphWidget(title=f"{service}: errors and throttles", left=[errors, throttles]),
                cloudwatch.GraphWidget(title=f"{service}: duration p99 (ms)", left=[duration]),
            )

        server_errors = api.metric_server_error(period=PERIOD, statistic="Sum")
        client_errors = api.metric_client_error(period=PERIOD, statistic="Sum")
        self._alarm("api-5xx", server_errors, threshold=5, evaluation_periods=1)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="API 4xx / 5xx", left=[client_errors, server_errors]),
            cloudwatch.GraphWidget(title="API latency p99", left=[api.metric_latency(period=PERIOD, statistic="p99")]),
        )

        for queue_name, dlq in dead_letter_queues.items():
            depth = dlq.metric_approximate_number_of_messages_visible(period=PERIOD, statistic="Maximum")
            self._alarm(f"{queue_name}-dlq-depth", depth, threshold=1, evaluation_periods=1)
            self.dashboard.add_widgets(cloudwatch.GraphWidget(title=f"{queue_name} DLQ depth", left=[depth]))

        throttle_metrics = []
        for number, (table_name, table) in enumerate(tables.items()):
            key = construct_id(table_name)
            # Ids must be unique across the dashboard graph that shows every table.
            read, write = f"r{number}", f"w{number}"
            throttled = cloudwatch.MathExpression(
                expression=f"FILL({read}, 0) + FILL({write}, 0)",
                using_metrics={
                    read: table.metric("ReadThrottleEvents", period=PERIOD, statistic="Sum"),
                    write: table.metric("WriteThrottleEvents", period=PERIOD, statistic="Sum"),
                },
                label=f"{table_name} throttles",
                period=PERIOD,
            )
            self._alarm(f"{table_name}-table-throttles", throttled, threshold=1, evaluation_periods=1, key=key)
            throttle_metrics.append(throttled)
        self.dashboard.add_widgets(cloudwatch.GraphWidget(title="DynamoDB throttles", left=throttle_metrics, width=24))

        cpu = database.metric_cpu_utilization(period=PERIOD, statistic="Average")
        connections = database.metric_database_connections(period=PERIOD, statistic="Maximum")
        self._alarm("rds-cpu", cpu, threshold=DB_CPU_PERCENT, evaluation_periods=3)
        self._alarm("rds-connections", connections, threshold=DB_CONNECTIONS, evaluation_periods=3)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="RDS CPU %", left=[cpu]),
            cloudwatch.GraphWidget(title="RDS connections", left=[connections]),
        )

    def _alarm(
        self,
        alarm_id: str,
        metric: cloudwatch.IMetric,
        *,
        threshold: float,
        evaluation_periods: int,
        key: str | None = None,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            key + "ThrottleAlarm" if key else construct_id(alarm_id) + "Alarm",
            alarm_name=f"{self.name}-{alarm_id}",
            metric=metric,
            threshold=threshold,
            evaluation_periods=evaluation_periods,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(actions.SnsAction(self.topic))
        self.alarms.append(alarm)
        return alarm
