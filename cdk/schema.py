"""The deploy's migration step: the database-ops function and the `Custom::SchemaMigration` resource.

Why a custom resource in the Data stack: `cdk deploy --all` runs it after the database, its proxy and
the secrets exist and before the Api stack (which depends on the Data stack) creates or updates the
functions that serve traffic, so new code never meets an old schema. Its properties carry a digest of
every migration script and role declaration (`cloudshop.schema.schema_fingerprint`), so it runs again
exactly when one of them changes; running it again changes nothing. The CDK Provider framework
invokes the function; a failure raises inside it and the framework puts the message (Alembic's error)
into the stack event, which fails and rolls back the deploy while the previous schema keeps serving
(the migrations run in one PostgreSQL transaction).

The same function answers the operator's commands (`cloudshop admin create`, `cloudshop catalog
load`): it is the only holder of the master secret, and it lives in the VPC next to the proxy.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import CustomResource, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import custom_resources as cr
from constructs import Construct

from cdk.assets import ARCHITECTURE, RUNTIME, RUNTIME_REASON, LambdaPackages
from cdk.database import PORT, Database
from cdk.nag import (
    CDK_PROVIDER_FUNCTION_SKIPS,
    LAMBDA_BASIC,
    LAMBDA_BASIC_REASON,
    LAMBDA_VPC,
    LAMBDA_VPC_REASON,
    LOG_GROUP_KMS_REASON,
    checkov_skip,
    checkov_skip_all,
    nag,
)
from cloudshop.build import PLATFORM_ASSET
from cloudshop.remote import database_ops_function_name
from cloudshop.schema import schema_fingerprint

DATABASE_OPS_SERVICE = "database-ops"
# Alembic over the proxy takes seconds; the margin is for a cold start and a large data migration.
MIGRATION_TIMEOUT = Duration.minutes(10)
FUNCTION_SKIPS = {
    "CKV_AWS_116": "Invoked synchronously by the deploy (Provider framework) or by an operator's CLI.",
    "CKV_AWS_115": "Runs per deploy or per operator command; reserving concurrency would take it from the services.",
    "CKV_AWS_173": "Its environment names secrets by ARN and holds resource names: no secret values.",
}


class SchemaMigration(Construct):
    """`function` (migrations, roles, first admin, catalog) and `resource`, the step every deploy runs."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        database: Database,
        packages: LambdaPackages,
        dependency_layer: lambda_.ILayerVersion,
        encryption_key: kms.IKey,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        name_prefix: str,
        environment: Mapping[str, str],
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        assert database.secret is not None
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="cloudshop database-ops function"
        )
        role_secrets = {schema.role: database.role_secrets[schema.service] for schema in database.schemas}
        log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        checkov_skip(log_group, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
        self.function = lambda_.Function(
            self,
            "Function",
            function_name=database_ops_function_name(name_prefix),
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="cdk.runtime.database_ops.handler",
            code=packages.code(PLATFORM_ASSET),
            layers=[dependency_layer],
            memory_size=512,
            timeout=MIGRATION_TIMEOUT,
            environment={
                **environment,
                "SERVICE_NAME": DATABASE_OPS_SERVICE,
                "DATABASE_URL": database.proxy_url,
                "DATABASE_SECRET_ARN": database.secret.secret_arn,
                "DATABASE_ROLE_SECRETS": Stack.of(self).to_json_string(
                    {role: secret.secret_arn for role, secret in role_secrets.items()}
                ),
            },
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            log_group=log_group,
            description="cloudshop database migrations, roles, first admin and demo catalog",
        )
        database.proxy.connections.allow_from(self.security_group, ec2.Port.tcp(PORT), "database-ops function")
        secret_arns = [database.secret.secret_arn, *(s.secret_arn for s in role_secrets.values())]
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"], resources=secret_arns
            )
        )
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=["kms:Decrypt", "kms:DescribeKey"], resources=[encryption_key.key_arn])
        )
        checkov_skip(self.function, FUNCTION_SKIPS)
        nag(
            self.function,
            {"AwsSolutions-L1": RUNTIME_REASON, LAMBDA_BASIC: LAMBDA_BASIC_REASON, LAMBDA_VPC: LAMBDA_VPC_REASON},
        )

        self.provider = cr.Provider(self, "Provider", on_event_handler=self.function)
        checkov_skip_all(self.provider, CDK_PROVIDER_FUNCTION_SKIPS, resource_type="AWS::Lambda::Function")
        checkov_skip_all(self.provider, {"CKV_AWS_158": LOG_GROUP_KMS_REASON}, resource_type="AWS::Logs::LogGroup")
        provider_reason = (
            "The CDK Provider framework's own function: it only invokes the database-ops function (every "
            "version of it, hence `:*`) and reports to CloudFormation."
        )
        nag(
            self.provider,
            {
                "AwsSolutions-L1": provider_reason,
                LAMBDA_BASIC: provider_reason,
                "AwsSolutions-IAM5[Resource::<" + self._logical_id(self.function) + ".Arn>:*]": provider_reason,
            },
        )
        self.resource = CustomResource(
            self,
            "Migration",
            service_token=self.provider.service_token,
            resource_type="Custom::SchemaMigration",
            properties={
                "Fingerprint": schema_fingerprint(database.schemas),
                "Roles": ",".join(sorted(role_secrets)),
            },
        )
        # The proxy answers only once its target group holds the instance.
        self.resource.node.add_dependency(database.proxy)

    @staticmethod
    def _logical_id(function: lambda_.Function) -> str:
        from cdk.nag import logical_id

        resource = function.node.default_child
        assert isinstance(resource, lambda_.CfnFunction)
        return logical_id(resource)
