"""Thin stacks: they compose constructs, grant, and output. Dependencies are explicit, so one
`cdk deploy --all` deploys network -> data -> streaming -> api -> eks -> monitoring in order."""

from __future__ import annotations

import json
from typing import Any

from aws_cdk import CfnOutput, Stack
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.access import (
    SERVICE_ACCESS,
    DataResources,
    access_findings,
    grant_internal_token,
    grant_service_access,
    grant_session_check,
    internal_token_arns,
)
from cdk.alerts import AlertRouting
from cdk.analytics_link import AnalyticsLink, WindowsConsumer, output_id, terraform_variables
from cdk.assets import LambdaPackages
from cdk.auth import AuthSecrets
from cdk.buckets import EstateBuckets
from cdk.config import DeploymentConfig
from cdk.database import PORT as DB_PORT
from cdk.database import Database
from cdk.delivery import GitHubDelivery
from cdk.eks import EksCore, argocd_bootstrap
from cdk.encryption import DataKey
from cdk.functions import API_TIMEOUT, CONSUMER_TIMEOUT, ServiceFunctions
from cdk.gateway import HttpGateway
from cdk.monitoring import Monitoring
from cdk.nag import nag
from cdk.network import Network
from cdk.queues import EstateQueues
from cdk.schema import SchemaMigration
from cdk.service_ingress import PrivateIngress
from cdk.settings_env import service_settings, shared_pod_settings, workload_pod_settings
from cdk.storefront import StorefrontSite, image_store_origins, storefront_origins
from cdk.streaming import IAM_PORT, EventStream
from cdk.tables import EstateTables
from cdk.telemetry import TelemetryAccess
from cloudshop.build import StorefrontBuild
from cloudshop.estate import ESTATE, LAMBDA_SERVICES
from cloudshop.lambda_entry import POWERTOOLS_NAMESPACE, runtime_settings
from cloudshop.settings import Settings, resource_settings


def allow_ingress(
    scope: Construct,
    construct_id: str,
    *,
    target: ec2.ISecurityGroup,
    source: ec2.ISecurityGroup,
    port: int,
    description: str,
) -> ec2.CfnSecurityGroupIngress:
    """An ingress rule owned by the consumer's stack, so the provider's stack never depends on it."""
    return ec2.CfnSecurityGroupIngress(
        scope,
        construct_id,
        group_id=target.security_group_id,
        source_security_group_id=source.security_group_id,
        ip_protocol="tcp",
        from_port=port,
        to_port=port,
        description=description,
    )


WINDOWS_CONSUMER_SERVICE = "analytics-windows"


def _retention(config: DeploymentConfig) -> logs.RetentionDays:
    by_days = {
        30: logs.RetentionDays.ONE_MONTH,
        90: logs.RetentionDays.THREE_MONTHS,
        180: logs.RetentionDays.SIX_MONTHS,
        365: logs.RetentionDays.ONE_YEAR,
    }
    return by_days[config.log_retention_days]


class NetworkStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig, **kwargs: Any) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.network = Network(
            self,
            "Network",
            cidr=config.vpc_cidr,
            availability_zones=config.azs,
            nat_gateways=config.nat_gateways,
            log_retention=_retention(config),
        )
        vpc = self.network.vpc
        CfnOutput(self, "VpcId", value=vpc.vpc_id)
        CfnOutput(self, "VpcCidr", value=vpc.vpc_cidr_block)
        # The Kubernetes overlays admit gateway traffic from these CIDRs (allow-gateway-ingress).
        gateway = vpc.select_subnets(subnet_group_name="gateway").subnets
        CfnOutput(self, "GatewaySubnetCidrs", value=",".join(subnet.ipv4_cidr_block for subnet in gateway))


class DataStack(Stack):
    """The estate's data: key, tables, buckets, queues, PostgreSQL (+ proxy) and the auth secrets."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: Network,
        packages: LambdaPackages,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        key = DataKey(self, "DataKey", alias=f"alias/{config.prefix}data").key
        self.tables = EstateTables(self, "Tables", tables=ESTATE.tables, prefix=config.prefix, encryption_key=key)
        self.buckets = EstateBuckets(
            self,
            "Buckets",
            buckets=ESTATE.buckets,
            encryption_key=key,
            prefix=config.prefix,
            browser_origins=storefront_origins(config.cors_origins),
        )
        self.queues = EstateQueues(self, "Queues", queues=ESTATE.queues, prefix=config.prefix, encryption_key=key)
        self.database = Database(
            self,
            "Database",
            vpc=network.vpc,
            data_subnets=network.data_subnets,
            app_subnets=network.app_subnets,
            encryption_key=key,
            instance_class=config.db_instance_class,
            multi_az=config.db_multi_az,
            allocated_storage_gib=config.db_allocated_storage_gib,
            max_allocated_storage_gib=config.db_max_allocated_storage_gib,
            backup_retention_days=config.db_backup_retention_days,
            database_name=config.db_name,
            rotation_days=config.db_rotation_days,
            schemas=ESTATE.sql_schemas,
            secret_name_prefix=config.prefix,
        )
        layer = packages.dependency_layer(self, "Dependencies")
        self.auth = AuthSecrets(
            self,
            "Auth",
            packages=packages,
            dependency_layer=layer,
            encryption_key=key,
            name_prefix=config.prefix,
            log_retention=_retention(config),
            key_generation=config.jwt_key_generation,
        )
        self.resources = DataResources(
            key=key,
            tables=self.tables,
            buckets=self.buckets,
            queues=self.queues,
            database=self.database,
            auth=self.auth,
        )
        # The deploy's own migration step; the Api stack (the code that serves) deploys after it.
        self.schema = SchemaMigration(
            self,
            "Schema",
            database=self.database,
            packages=packages,
            dependency_layer=layer,
            encryption_key=key,
            vpc=network.vpc,
            subnets=network.app_subnets,
            name_prefix=config.prefix,
            environment={"ENVIRONMENT": config.environment, "LOG_LEVEL": "INFO", **resource_settings(config.prefix)},
            log_retention=_retention(config),
        )
        self.database.rotate_roles_after(self.schema.resource)
        assert self.database.secret is not None
        CfnOutput(self, "DatabaseSecretArn", value=self.database.secret.secret_arn)
        CfnOutput(self, "DatabaseOpsFunctionName", value=self.schema.function.function_name)
        CfnOutput(self, "JwtSigningKeySecretArn", value=self.auth.signing_key.secret_arn)


class StreamingStack(Stack):
    """MSK, the analytics link to Dataproc (SCRAM secrets, ACLs) and the windows consumer Lambda."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: Network,
        data: DataResources,
        packages: LambdaPackages,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.stream = EventStream(
            self,
            "EventStream",
            vpc=network.vpc,
            subnets=network.kafka_subnets,
            topics=ESTATE.topics,
            cluster_name=f"{config.prefix}events",
            kafka_version=config.kafka_version,
            broker_instance_type=config.kafka_broker_instance_type,
            broker_storage_gib=config.kafka_broker_storage_gib,
            encryption_key=data.key,
            log_retention=_retention(config),
            public_access=config.kafka_public_access,
        )
        CfnOutput(self, "KafkaBootstrapServers", value=self.stream.bootstrap_servers)
        layer = packages.dependency_layer(self, "Dependencies")
        (analytics,) = ESTATE.scram_clients
        self.link = AnalyticsLink(
            self,
            "AnalyticsLink",
            stream=self.stream,
            clients=ESTATE.scram_clients,
            client_cidrs=config.analytics_client_cidrs,
            name_prefix=config.prefix,
            packages=packages,
            dependency_layer=layer,
            vpc=network.vpc,
            subnets=network.app_subnets,
            log_retention=_retention(config),
        )
        self.windows = WindowsConsumer(
            self,
            "WindowsConsumer",
            stream=self.stream,
            topic=analytics.write_topics[0],
            bucket_name=data.buckets.bucket_name("analytics-results"),
            bucket_arn=data.buckets.bucket_arn("analytics-results"),
            data_key=data.key,
            environment={
                "SERVICE_NAME": WINDOWS_CONSUMER_SERVICE,
                "ENVIRONMENT": config.environment,
                "LOG_LEVEL": "INFO",
                "POWERTOOLS_SERVICE_NAME": WINDOWS_CONSUMER_SERVICE,
                "POWERTOOLS_METRICS_NAMESPACE": POWERTOOLS_NAMESPACE,
            },
            packages=packages,
            dependency_layer=layer,
            vpc=network.vpc,
            subnets=network.app_subnets,
            endpoint_security_group=network.endpoint_security_group,
            log_retention=_retention(config),
        )
        # Named as the Terraform example's variables they are pasted into.
        for variable, value in terraform_variables(self.link, self.stream, client=analytics.name).items():
            CfnOutput(self, output_id(variable), value=value, description=f"Terraform variable {variable}")


class ApiStack(Stack):
    """The Lambda services, the HTTP API with the Lambda-served routes, and the storefront's CloudFront
    distribution in front of both (the site bucket, and the API under `/api/*`)."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: Network,
        data: DataResources,
        packages: LambdaPackages,
        storefront: StorefrontBuild,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        layer = packages.dependency_layer(self, "Dependencies")
        self.environments = {
            service: {
                **service_settings(
                    service,
                    SERVICE_ACCESS[service],
                    config=config,
                    data=data,
                    database_url=data.database.proxy_url,
                ),
                **runtime_settings(service),
            }
            for service in LAMBDA_SERVICES
        }
        sender_domain = config.ses_sender.split("@", 1)[-1]
        self.functions = ServiceFunctions(
            self,
            "Services",
            services=LAMBDA_SERVICES,
            packages=packages,
            dependency_layer=layer,
            environment=self.environments,
            access=SERVICE_ACCESS,
            data=data,
            vpc=network.vpc,
            subnets=network.app_subnets,
            memory_mib=config.lambda_memory_mib,
            log_retention=_retention(config),
            email_identities=[config.ses_sender, sender_domain],
        )
        allow_ingress(
            self,
            "ServicesToProxy",
            target=data.database.proxy_security_group,
            source=self.functions.security_group,
            port=DB_PORT,
            description="Lambda services to RDS Proxy",
        )
        # Settings fields, like every other function's environment (tests/cdk/test_gateway.py checks).
        self.authorizer_environment = {
            "SERVICE_NAME": "gateway-authorizer",
            "ENVIRONMENT": config.environment,
            "JWT_PUBLIC_KEY": data.auth.public_key_pem,
            "JWT_ISSUER": str(Settings.model_fields["jwt_issuer"].default),
            "SESSIONS_TABLE": resource_settings(config.prefix)["SESSIONS_TABLE"],
        }
        self.service_authorizer_environment = {
            "SERVICE_NAME": "gateway-service-authorizer",
            "ENVIRONMENT": config.environment,
            "INTERNAL_TOKEN_SECRET_ARNS": json.dumps(internal_token_arns("gateway", data=data), sort_keys=True),
        }
        self.gateway = HttpGateway(
            self,
            "Gateway",
            api_name=f"{config.prefix}api",
            packages=packages,
            dependency_layer=layer,
            authorizer_environment=self.authorizer_environment,
            service_authorizer_environment=self.service_authorizer_environment,
            throttle_rate=config.api_throttle_rate,
            throttle_burst=config.api_throttle_burst,
            log_retention=_retention(config),
            cors_origins=config.cors_origins,
        )
        grant_session_check(self.gateway.authorizer_function, data=data)
        grant_internal_token(self.gateway.service_authorizer_function, data=data)
        for service in LAMBDA_SERVICES:
            integration = integrations.HttpLambdaIntegration(
                f"{service.capitalize()}Integration", self.functions[service]
            )
            self.gateway.add_routes(self.gateway, [r for r in ESTATE.routes if r.service == service], integration)
        self.timeouts = {
            service: CONSUMER_TIMEOUT if SERVICE_ACCESS[service].consume_queues else API_TIMEOUT
            for service in LAMBDA_SERVICES
        }
        CfnOutput(self, "ApiUrl", value=self.gateway.url)
        self.storefront = StorefrontSite(
            self,
            "Storefront",
            site=storefront.site,
            api=self.gateway.api,
            access_logs=data.buckets.access_logs,
            image_origins=image_store_origins(data.buckets.bucket_name("product-images"), config.region),
        )
        CfnOutput(self, "StorefrontUrl", value=self.storefront.url)


class EksStack(Stack):
    """EKS core and the private integration of its services into the HTTP API."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        network: Network,
        data: DataResources,
        access_log_bucket: Any,
        stream: EventStream,
        gateway: HttpGateway,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.core = EksCore(
            self,
            "Eks",
            cluster_name=f"{config.prefix}eks",
            vpc=network.vpc,
            subnets=network.app_subnets,
            kubernetes_version=config.kubernetes_version,
            workloads=ESTATE.workloads,
            node_instance_type=config.node_instance_type,
            node_count=config.node_count,
            argocd_bootstrap=argocd_bootstrap(config.argocd_bootstrap),
            argocd_chart_version=config.argocd_chart_version,
            admin_role_arns=config.cluster_admin_role_arns,
        )
        self.alerts = AlertRouting(
            self,
            "Alerts",
            name=config.prefix,
            cluster=self.core.cluster,
            region=config.region,
            pod_identity_agent=self.core.pod_identity_agent,
            alert_email=config.alarm_email,
        )
        self.telemetry = TelemetryAccess(
            self,
            "Telemetry",
            cluster=self.core.cluster,
            pod_identity_agent=self.core.pod_identity_agent,
            nodes=self.core.nodegroup,
        )
        cluster_sg = self.core.cluster.cluster_security_group
        workload_access = {w.name: SERVICE_ACCESS[w.name] for w in ESTATE.workloads}
        if any(access.database for access in workload_access.values()):
            allow_ingress(
                self,
                "PodsToDatabase",
                target=data.database.security_group,
                source=cluster_sg,
                port=DB_PORT,
                description="EKS pods to PostgreSQL",
            )
        if any(access.produce_topics or access.consume_topics for access in workload_access.values()):
            allow_ingress(
                self,
                "PodsToKafka",
                target=stream.security_group,
                source=cluster_sg,
                port=IAM_PORT,
                description="EKS pods to MSK (SASL/IAM)",
            )
        per_workload: dict[str, dict[str, str]] = {}
        for workload in ESTATE.workloads:
            access = workload_access[workload.name]
            role = self.core.roles[workload.name]
            grant_service_access(role, access, service=workload.name, data=data, stream=stream)
            nag(role, access_findings(access, data=data, stream=stream))
            per_workload[workload.name] = {
                **service_settings(
                    workload.name,
                    access,
                    config=config,
                    data=data,
                    database_url=data.database.instance_url,
                    kafka_bootstrap_servers=stream.bootstrap_servers,
                ),
                "AWS_REGION": config.region,
                # The product service is a Lambda: pods reach it through the HTTP API (internal routes).
                "PRODUCT_SERVICE_URL": gateway.url,
            }
        # One `cloudshop-aws` ConfigMap per namespace, shared by its workloads' pods, and one
        # `cloudshop-aws-<workload>` per workload for what it alone may see.
        self.aws_settings: dict[str, dict[str, str]] = {}
        self.workload_settings: dict[str, dict[str, str]] = {}
        for namespace in sorted({w.namespace for w in ESTATE.workloads}):
            members: dict[str, dict[str, str]] = {
                w.name: per_workload[w.name] for w in ESTATE.workloads if w.namespace == namespace
            }
            self.aws_settings[namespace] = shared_pod_settings(members)
            if "JWT_PUBLIC_KEY" in self.aws_settings[namespace]:
                # The ConfigMap reaches the cluster as one JSON document with the deploy-time values
                # pasted in verbatim; a raw PEM's newlines would make it invalid JSON and fail the stack.
                self.aws_settings[namespace]["JWT_PUBLIC_KEY"] = data.auth.public_key_pem_json_escaped
            self.core.add_settings(namespace, self.aws_settings[namespace])
            for name, settings in members.items():
                own = workload_pod_settings(settings)
                if own:
                    self.workload_settings[name] = own
                    self.core.add_settings(namespace, own, workload=name)
        self.ingress = PrivateIngress(
            self,
            "Ingress",
            vpc=network.vpc,
            subnets=network.gateway_subnets,
            core=self.core,
            gateway=gateway,
            routes=ESTATE.routes,
            access_log_bucket=access_log_bucket,
        )
        for name, repository in self.core.repositories.items():
            CfnOutput(self, f"{name.capitalize()}RepositoryUri", value=repository.repository_uri)
        CfnOutput(self, "ClusterName", value=self.core.cluster.cluster_name)
        CfnOutput(self, "AlertsTopicArn", value=self.alerts.topic.topic_arn)
        CfnOutput(self, "DatabasePort", value=str(DB_PORT))
        # The GitHub workflows' identities: deliver pushes to these repositories, deploy runs CDK.
        self.delivery = GitHubDelivery(
            self,
            "GitHub",
            repository=config.github_repository,
            environment=config.environment,
            repositories=list(self.core.repositories.values()),
            existing_provider_arn=config.github_oidc_provider_arn,
            pull_request_diff=config.github_diff_role,
        )
        CfnOutput(self, "GitHubOidcProviderArn", value=self.delivery.provider.oidc_provider_arn)
        CfnOutput(self, "DeliveryRoleArn", value=self.delivery.delivery_role.role_arn)
        CfnOutput(self, "DeployRoleArn", value=self.delivery.deploy_role.role_arn)
        if self.delivery.diff_role is not None:
            CfnOutput(self, "DiffRoleArn", value=self.delivery.diff_role.role_arn)


class MonitoringStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        api: ApiStack,
        data: DataStack,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            name=f"{config.prefix}ops",
            functions=api.functions.functions,
            timeouts=api.timeouts,
            api=api.gateway.api,
            tables=data.tables.tables,
            dead_letter_queues=data.queues.dead_letter_queues,
            database=data.database.instance,
            alarm_email=config.alarm_email,
        )
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        CfnOutput(self, "DashboardName", value=f"{config.prefix}ops")
