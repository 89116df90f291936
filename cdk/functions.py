"""The Lambda-hosted services (user, product, notification): functions, settings, grants, SQS source."""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Aws, Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.access import DataResources, ServiceAccess, access_findings, grant_service_access
from cdk.assets import ARCHITECTURE, RUNTIME, RUNTIME_REASON, LambdaPackages
from cdk.nag import (
    LAMBDA_BASIC,
    LAMBDA_BASIC_REASON,
    LAMBDA_VPC,
    LAMBDA_VPC_REASON,
    LOG_GROUP_KMS_REASON,
    XRAY,
    XRAY_REASON,
    checkov_skip,
    nag,
)
from cloudshop.estate import ServiceName

# HTTP API integrations time out at 30 s; a function answering an API call must finish well before.
API_TIMEOUT = Duration.seconds(15)
# Must stay below the queue's visibility timeout (30 s, `cloudshop.estate.QUEUES`), or Lambda refuses
# the event source mapping.
CONSUMER_TIMEOUT = Duration.seconds(20)
SQS_BATCH_SIZE = 10

# OpenTelemetry (cloudshop.tracing): the ADOT collector as a Lambda extension (AWS's layer, one per
# region and architecture) receives the function's spans on localhost:4318 and its default
# configuration sends them to X-Ray, where they join the traces the pods and the gateway started.
# Only the collector: the app brings its own SDK, so no auto-instrumentation wrapper slows the cold start.
ADOT_COLLECTOR_LAYER = "arn:aws:lambda:{region}:901920570463:layer:aws-otel-collector-{arch}-ver-0-117-0:1"
TRACING_ENVIRONMENT = {"TRACING_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://localhost:4318"}

FUNCTION_SKIPS = {
    "CKV_AWS_116": (
        "API functions are invoked synchronously (the gateway returns the error); the SQS consumer's "
        "failed messages go to the queue's own DLQ through the redrive policy."
    ),
    "CKV_AWS_115": (
        "No reserved concurrency: the gateway's stage throttling bounds the load, and reserving would "
        "carve the account's pool into slices that fail under uneven traffic."
    ),
    "CKV_AWS_173": (
        "The environment holds names, URLs and ARNs only; secret values are read from Secrets Manager "
        "at start-up, so there is nothing a customer-managed key would protect."
    ),
}


class ServiceFunctions(Construct):
    """One function per Lambda service (`functions.<service>.handler.handler`), in the app subnets.

    `environment` maps each service to its settings (see `cdk.settings_env`); `access` to what it may
    touch. The service consuming a queue (`access.consume_queues`) gets an SQS event source with partial
    batch responses, so one poison message goes to the DLQ and the rest of the batch is not retried.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        services: tuple[ServiceName, ...],
        packages: LambdaPackages,
        dependency_layer: lambda_.ILayerVersion,
        environment: Mapping[ServiceName, Mapping[str, str]],
        access: Mapping[ServiceName, ServiceAccess],
        data: DataResources,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        memory_mib: int,
        log_retention: logs.RetentionDays,
        email_identities: list[str],
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(self, "SecurityGroup", vpc=vpc, description="cloudshop Lambda services")
        self.functions: dict[ServiceName, lambda_.Function] = {}
        arch = "arm64" if ARCHITECTURE == lambda_.Architecture.ARM_64 else "amd64"
        self.collector_layer = lambda_.LayerVersion.from_layer_version_arn(
            self, "AdotCollector", ADOT_COLLECTOR_LAYER.format(region=Aws.REGION, arch=arch)
        )
        for service in services:
            service_access = access[service]
            consumer = bool(service_access.consume_queues)
            name = service.capitalize()
            log_group = logs.LogGroup(
                self, f"{name}Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY
            )
            checkov_skip(log_group, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
            function = lambda_.Function(
                self,
                name,
                runtime=RUNTIME,
                architecture=ARCHITECTURE,
                handler=f"functions.{service}.handler.handler",
                code=packages.code(service),
                layers=[dependency_layer, self.collector_layer],
                memory_size=memory_mib,
                timeout=CONSUMER_TIMEOUT if consumer else API_TIMEOUT,
                environment={**environment[service], **TRACING_ENVIRONMENT},
                vpc=vpc,
                vpc_subnets=subnets,
                security_groups=[self.security_group],
                tracing=lambda_.Tracing.ACTIVE,
                log_group=log_group,
                description=f"cloudshop {service} service",
            )
            grant_service_access(
                function, service_access, service=service, data=data, email_identities=email_identities
            )
            for queue_name in service_access.consume_queues:
                function.add_event_source(
                    sources.SqsEventSource(
                        data.queues[queue_name],
                        batch_size=SQS_BATCH_SIZE,
                        max_batching_window=Duration.seconds(1),
                        report_batch_item_failures=True,
                    )
                )
            checkov_skip(function, FUNCTION_SKIPS)
            nag(
                function,
                {
                    "AwsSolutions-L1": RUNTIME_REASON,
                    LAMBDA_BASIC: LAMBDA_BASIC_REASON,
                    LAMBDA_VPC: LAMBDA_VPC_REASON,
                    XRAY: XRAY_REASON,
                    **access_findings(service_access, data=data),
                },
            )
            self.functions[service] = function

    def __getitem__(self, service: ServiceName) -> lambda_.Function:
        return self.functions[service]
