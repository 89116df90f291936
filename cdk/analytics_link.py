"""The AWS half of the analytics link to GCP, and the windows coming back into AWS.

`AnalyticsLink`: the Spark job on Dataproc signs in to MSK with SASL/SCRAM over TLS on the brokers'
public addresses (port 9196), from Cloud NAT's static addresses only. Per client of
`cloudshop.estate.SCRAM_CLIENTS` it makes the SCRAM secret (`AmazonMSK_<prefix><name>`, as MSK
requires the name, encrypted with a customer-managed key of its own, as MSK requires too), associates
it with the cluster (`AWS::MSK::BatchScramSecret`), and sets the client's Kafka ACLs
(`Custom::KafkaAcls`: CloudFormation has no resource for ACLs; a function in the VPC sets them through
the brokers' IAM listener with `cloudshop.kafka_acls`, the code the local rehearsal runs against its
SCRAM broker). The cluster runs with `allow.everyone.if.no.acl.found=false`, so a SCRAM user reaches
exactly what its ACLs grant: the analytics job reads `orders` and writes `analytics-results`. The
AWS-side services keep IAM, which ACLs do not govern.

`WindowsConsumer`: the Lambda that puts the windows the job publishes on `analytics-results` where
`GET /api/v1/analytics/windows` reads them (`analytics.results_consumer`), fed by an MSK event source
mapping with IAM authentication. GCP holds no AWS credential.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from aws_cdk import CustomResource, Duration, RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_msk as msk
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import custom_resources as cr
from constructs import Construct

from analytics.results_consumer import CONSUMER_GROUP, DEAD_LETTER_PREFIX
from analytics.windows import PREFIX as WINDOWS_PREFIX
from cdk.assets import ARCHITECTURE, RUNTIME, RUNTIME_REASON, LambdaPackages
from cdk.nag import (
    CDK_PROVIDER_FUNCTION_SKIPS,
    LAMBDA_BASIC,
    LAMBDA_BASIC_REASON,
    LAMBDA_VPC,
    LAMBDA_VPC_REASON,
    LOG_GROUP_KMS_REASON,
    checkov_skip,
    checkov_skip_all,
    logical_id,
    managed_policy,
    nag,
)
from cdk.streaming import IAM_PORT, PUBLIC_SCRAM_PORT, EventStream
from cloudshop.build import PLATFORM_ASSET
from cloudshop.estate import ScramClient
from cloudshop.kafka_acls import bindings_for, principal_of, to_json, topics_of

# MSK associates only secrets whose name starts with this.
SCRAM_SECRET_PREFIX = "AmazonMSK_"  # noqa: S105 - a name prefix, not a password
ROTATION_REASON = (
    "The SCRAM password is also held by the Dataproc job's Secret Manager secret on GCP; a rotation is "
    "a two-cloud procedure (analytics/README.md, 'Rotating the SCRAM password'), not a Lambda."
)
ACL_FUNCTION_SKIPS = {
    "CKV_AWS_116": "Invoked synchronously by the deploy (Provider framework); a failure fails the deploy.",
    "CKV_AWS_115": "Runs once per deploy; reserving concurrency would take it from the services.",
    "CKV_AWS_173": "Its environment holds the Kafka client's security settings only: no secret values.",
}
CONSUMER_FUNCTION_SKIPS = {
    "CKV_AWS_116": (
        "Invoked by the MSK event source mapping, which retries a failed batch until it succeeds; bad "
        "records go to the dead-letters/ prefix of the results bucket, so no batch fails for its data."
    ),
    "CKV_AWS_115": "One poller per partition (analytics-results has one): its concurrency is bounded already.",
    "CKV_AWS_173": "Its environment holds a bucket and a topic name: no secret values.",
}


def secret_name(name_prefix: str, client: ScramClient) -> str:
    return f"{SCRAM_SECRET_PREFIX}{name_prefix}{client.name}"


class AnalyticsLink(Construct):
    """SCRAM secrets, their association, the clients' ACLs and, with `client_cidrs`, the security group
    rules of MSK's public SASL/SCRAM listener. `secrets` maps each client to its secret."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stream: EventStream,
        clients: Iterable[ScramClient],
        client_cidrs: Iterable[str],
        name_prefix: str,
        packages: LambdaPackages,
        dependency_layer: lambda_.ILayerVersion,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        clients = tuple(clients)
        self.key = kms.Key(
            self,
            "ScramKey",
            description="cloudshop MSK SASL/SCRAM secrets (analytics link)",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.secrets: dict[str, secretsmanager.Secret] = {}
        self.secret_names = {client.name: secret_name(name_prefix, client) for client in clients}
        for client in clients:
            secret = secretsmanager.Secret(
                self,
                f"{client.name.capitalize()}Scram",
                secret_name=self.secret_names[client.name],
                description=f"SASL/SCRAM credentials of the Kafka client {client.name} (outside AWS)",
                encryption_key=self.key,
                generate_secret_string=secretsmanager.SecretStringGenerator(
                    secret_string_template=json.dumps({"username": client.name}),
                    generate_string_key="password",
                    exclude_punctuation=True,
                    password_length=40,
                ),
                removal_policy=RemovalPolicy.DESTROY,
            )
            nag(secret, {"AwsSolutions-SMG4": ROTATION_REASON})
            checkov_skip(secret, {"CKV2_AWS_57": ROTATION_REASON})
            self.secrets[client.name] = secret
        self.association = msk.CfnBatchScramSecret(
            self,
            "ScramSecrets",
            cluster_arn=stream.cluster_arn,
            secret_arn_list=[secret.secret_arn for secret in self.secrets.values()],
        )

        # Public access: MSK's SCRAM listener admits exactly the declared sources (GCP's Cloud NAT).
        self.client_cidrs = tuple(client_cidrs)
        for index, cidr in enumerate(self.client_cidrs):
            ec2.CfnSecurityGroupIngress(
                self,
                f"PublicScram{index}",
                group_id=stream.security_group.security_group_id,
                cidr_ip=cidr,
                ip_protocol="tcp",
                from_port=PUBLIC_SCRAM_PORT,
                to_port=PUBLIC_SCRAM_PORT,
                description="analytics link: SASL/SCRAM over TLS from GCP Cloud NAT",
            )

        self.acl_function = self._acl_function(
            stream=stream,
            packages=packages,
            dependency_layer=dependency_layer,
            vpc=vpc,
            subnets=subnets,
            log_retention=log_retention,
        )
        provider = cr.Provider(self, "AclProvider", on_event_handler=self.acl_function)
        checkov_skip_all(provider, CDK_PROVIDER_FUNCTION_SKIPS, resource_type="AWS::Lambda::Function")
        checkov_skip_all(provider, {"CKV_AWS_158": LOG_GROUP_KMS_REASON}, resource_type="AWS::Logs::LogGroup")
        provider_reason = (
            "The CDK Provider framework's own function: it only invokes the Kafka ACL function (every "
            "version of it, hence `:*`) and reports to CloudFormation."
        )
        resource = self.acl_function.node.default_child
        assert isinstance(resource, lambda_.CfnFunction)
        nag(
            provider,
            {
                "AwsSolutions-L1": provider_reason,
                LAMBDA_BASIC: provider_reason,
                f"AwsSolutions-IAM5[Resource::<{logical_id(resource)}.Arn>:*]": provider_reason,
            },
        )
        self.acls: dict[str, CustomResource] = {}
        replicated = json.dumps(sorted({topic for client in clients for topic in topics_of(bindings_for(client))}))
        for client in clients:
            acls = CustomResource(
                self,
                f"{client.name.capitalize()}Acls",
                service_token=provider.service_token,
                resource_type="Custom::KafkaAcls",
                properties={
                    "BootstrapServers": stream.bootstrap_servers,
                    "Principal": principal_of(client),
                    "Acls": to_json(bindings_for(client)),
                    "ReplicatedTopics": replicated,
                },
            )
            # Before the credentials work, what they may do is decided.
            self.association.node.add_dependency(acls)
            self.acls[client.name] = acls

    def _acl_function(
        self,
        *,
        stream: EventStream,
        packages: LambdaPackages,
        dependency_layer: lambda_.ILayerVersion,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        log_retention: logs.RetentionDays,
    ) -> lambda_.Function:
        security_group = ec2.SecurityGroup(
            self, "AclFunctionSecurityGroup", vpc=vpc, description="cloudshop Kafka ACL function"
        )
        ingress = ec2.CfnSecurityGroupIngress(
            self,
            "AclFunctionToKafka",
            group_id=stream.security_group.security_group_id,
            source_security_group_id=security_group.security_group_id,
            ip_protocol="tcp",
            from_port=IAM_PORT,
            to_port=IAM_PORT,
            description="Kafka ACL function to MSK (SASL/IAM)",
        )
        log_group = logs.LogGroup(self, "AclLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        checkov_skip(log_group, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
        function = lambda_.Function(
            self,
            "AclFunction",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="cdk.runtime.kafka_acls.handler",
            code=packages.code(PLATFORM_ASSET),
            layers=[dependency_layer],
            memory_size=256,
            timeout=Duration.minutes(2),
            environment={"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "AWS_MSK_IAM"},
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[security_group],
            log_group=log_group,
            description="cloudshop Kafka ACLs of the clients outside AWS (Custom::KafkaAcls)",
        )
        function.node.add_dependency(ingress)
        # CreateAcls and DeleteAcls are ALTER on the cluster, DescribeAcls DESCRIBE (MSK's IAM mapping).
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kafka-cluster:Connect", "kafka-cluster:DescribeCluster", "kafka-cluster:AlterCluster"],
                resources=[stream.cluster_arn],
            )
        )
        checkov_skip(function, ACL_FUNCTION_SKIPS)
        nag(
            function,
            {"AwsSolutions-L1": RUNTIME_REASON, LAMBDA_BASIC: LAMBDA_BASIC_REASON, LAMBDA_VPC: LAMBDA_VPC_REASON},
        )
        return function


class WindowsConsumer(Construct):
    """`function` on the `analytics-results` topic (MSK event source, IAM), writing the windows'
    objects and dead letters into the results bucket, and nothing else."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stream: EventStream,
        topic: str,
        bucket_name: str,
        bucket_arn: str,
        data_key: kms.IKey,
        environment: Mapping[str, str],
        packages: LambdaPackages,
        dependency_layer: lambda_.ILayerVersion,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        endpoint_security_group: ec2.ISecurityGroup,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="cloudshop analytics windows consumer"
        )
        log_group = logs.LogGroup(self, "Logs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        checkov_skip(log_group, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
        self.function = lambda_.Function(
            self,
            "Function",
            runtime=RUNTIME,
            architecture=ARCHITECTURE,
            handler="cdk.runtime.windows_consumer.handler",
            code=packages.code(PLATFORM_ASSET),
            layers=[dependency_layer],
            memory_size=256,
            timeout=Duration.seconds(60),
            environment={**environment, "ANALYTICS_RESULTS_BUCKET": bucket_name, "ANALYTICS_TOPIC": topic},
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[self.security_group],
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            description="cloudshop analytics windows: analytics-results topic -> S3 (GET /analytics/windows)",
        )
        # Reads a window before it writes (a conditional put), and needs ListBucket so that a missing
        # window is a 404 rather than a 403. Only its two prefixes; nothing deletes.
        objects = [f"{bucket_arn}/{WINDOWS_PREFIX}*", f"{bucket_arn}/{DEAD_LETTER_PREFIX}*"]
        self.function.add_to_role_policy(
            iam.PolicyStatement(actions=["s3:GetObject", "s3:PutObject"], resources=objects)
        )
        self.function.add_to_role_policy(iam.PolicyStatement(actions=["s3:ListBucket"], resources=[bucket_arn]))
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey"],
                resources=[data_key.key_arn],
            )
        )
        stream.grant_consume(self.function, topic, group=CONSUMER_GROUP)
        self.function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["kafka-cluster:DescribeClusterDynamicConfiguration"], resources=[stream.cluster_arn]
            )
        )
        # The event source's pollers run in the brokers' subnets with the brokers' security group: to
        # the brokers' IAM port, and to the Lambda and STS interface endpoints (network.py).
        brokers = stream.security_group
        brokers.add_ingress_rule(brokers, ec2.Port.tcp(IAM_PORT), "MSK event source pollers (SASL/IAM)")
        brokers.add_egress_rule(brokers, ec2.Port.tcp(IAM_PORT), "MSK event source pollers to the brokers")
        brokers.add_egress_rule(
            endpoint_security_group, ec2.Port.tcp(443), "MSK event source pollers to the Lambda and STS endpoints"
        )
        self.function.role.add_managed_policy(  # type: ignore[union-attr]
            iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AWSLambdaMSKExecutionRole")
        )
        self.event_source = sources.ManagedKafkaEventSource(
            cluster_arn=stream.cluster_arn,
            topic=topic,
            consumer_group_id=CONSUMER_GROUP,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=100,
            max_batching_window=Duration.seconds(1),
        )
        self.function.add_event_source(self.event_source)
        checkov_skip(self.function, CONSUMER_FUNCTION_SKIPS)
        rendered_bucket = f"arn:<AWS::Partition>:s3:::{bucket_name}"  # as cdk-nag names it in findings
        nag(
            self.function,
            {
                "AwsSolutions-L1": RUNTIME_REASON,
                LAMBDA_BASIC: LAMBDA_BASIC_REASON,
                LAMBDA_VPC: LAMBDA_VPC_REASON,
                managed_policy("AWSLambdaMSKExecutionRole", service_role=True): (
                    "AWSLambdaMSKExecutionRole is the AWS-maintained minimum for an MSK event source: "
                    "describing the cluster and its bootstrap brokers and placing the pollers' ENIs."
                ),
                "AwsSolutions-IAM5[Resource::*]": (
                    "Active tracing: xray:PutTraceSegments/PutTelemetryRecords do not support "
                    "resource-level permissions, so CDK grants them on `*`; no data resource is involved."
                ),
                f"AwsSolutions-IAM5[Resource::{rendered_bucket}/{WINDOWS_PREFIX}*]": (
                    "One object per window: the keys are data (window starts), so the grant names the "
                    "bucket's windows/ prefix and lets the consumer address its objects."
                ),
                f"AwsSolutions-IAM5[Resource::{rendered_bucket}/{DEAD_LETTER_PREFIX}*]": (
                    "One dead letter per refused record (its topic, partition and offset make the key), "
                    "under the bucket's dead-letters/ prefix only."
                ),
                f"AwsSolutions-IAM5[Resource::{stream.rendered_group_arn(CONSUMER_GROUP)}]": (
                    "Kafka consumer groups are named by the consumer (prefix `cloudshop-`) and the cluster "
                    "UUID is unknown before deploy; the cluster name is unique in the account and region."
                ),
            },
        )


def terraform_variables(link: AnalyticsLink, stream: EventStream, *, client: str) -> dict[str, str]:
    """What the Terraform example (analytics/terraform/examples/basic) takes from the AWS side, by the
    name of its variable: the stack outputs them as `output_id(variable)`."""
    return {
        "msk_scram_bootstrap_servers": stream.public_scram_bootstrap_servers,
        "msk_scram_secret_name": link.secret_names[client],
    }


def output_id(variable: str) -> str:
    """`msk_scram_secret_name` -> `MskScramSecretName`: stack outputs take no underscores."""
    return "".join(part.capitalize() for part in variable.split("_"))
