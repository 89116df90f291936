"""The event stream: an MSK cluster with IAM authentication for AWS clients, SASL/SCRAM for the
analytics link to GCP (public access, when turned on), and the estate's topics."""

from __future__ import annotations

import base64
from collections.abc import Iterable

from aws_cdk import Aws, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_msk as msk
from aws_cdk import custom_resources as cr
from constructs import Construct

from cdk.nag import (
    CDK_PROVIDER_FUNCTION_SKIPS,
    LAMBDA_BASIC,
    LAMBDA_BASIC_REASON,
    LOG_GROUP_KMS_REASON,
    checkov_skip,
    nag,
)
from cdk.tables import construct_id
from cloudshop.estate import Topic

AWS_CUSTOM_RESOURCE_SINGLETON = "AWS679f53fac002430cb0da5b7982bd2287"
IAM_PORT = 9098
# MSK's SASL/SCRAM listener on the brokers' public addresses (public access turned on).
PUBLIC_SCRAM_PORT = 9196
# What the `MskScramBootstrapServers` output says while public access is off. It is no host:port list,
# so the Terraform module's validation refuses it if pasted.
PUBLIC_ACCESS_OFF = "public access is off: set CLOUDSHOP_ANALYTICS_CLIENT_CIDRS and deploy again (analytics/README.md)"
# Consumer groups the services may join.
CONSUMER_GROUPS = "cloudshop-*"
SERVER_PROPERTIES = "\n".join(
    [
        # Topics come from the estate only (AWS::MSK::Topic), never from a producer's typo.
        "auto.create.topics.enable=false",
        "default.replication.factor=3",
        "min.insync.replicas=2",
        "unclean.leader.election.enable=false",
        "num.partitions=3",
        # SASL/SCRAM users (the analytics link) reach only what a Kafka ACL grants them
        # (cdk/analytics_link.py). IAM clients are authorised by IAM policies, not ACLs.
        "allow.everyone.if.no.acl.found=false",
    ]
)


def topic_configs(topic: Topic) -> str:
    """`AWS::MSK::Topic` takes its topic configuration as base64-encoded properties."""
    properties = f"retention.ms={topic.retention_hours * 3600 * 1000}\ncleanup.policy=delete\n"
    return base64.b64encode(properties.encode()).decode()


class EventStream(Construct):
    """A provisioned MSK cluster, one broker per AZ: AWS clients sign in with IAM (SASL/IAM over TLS,
    port 9098); the clients outside AWS (`cloudshop.estate.SCRAM_CLIENTS`) with SASL/SCRAM over TLS.

    Provisioned rather than Serverless: three kafka.t3.small brokers cost a fraction of a Serverless
    cluster's hourly fee, and provisioned clusters support `AWS::MSK::Topic`, so topics are plain
    CloudFormation resources built from `cloudshop.estate.TOPICS` with no admin client to run.
    `bootstrap_servers` is the IAM bootstrap string (`KAFKA_BOOTSTRAP_SERVERS`).

    `public_access` turns on MSK public access (SERVICE_PROVIDED_EIPS): the brokers get public
    addresses, and `public_scram_bootstrap_servers` is their SASL/SCRAM string (port 9196). MSK refuses
    public access at creation, so it is off on a cluster's first deploy and turned on by a later one
    (an update of the cluster, about 30 minutes); analytics/README.md has the order of the steps.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id_: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        topics: Iterable[Topic],
        cluster_name: str,
        kafka_version: str,
        broker_instance_type: str,
        broker_storage_gib: int,
        encryption_key: kms.IKey,
        log_retention: logs.RetentionDays,
        public_access: bool = False,
    ) -> None:
        super().__init__(scope, construct_id_)
        self.cluster_name = cluster_name
        self.public_access = public_access
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=vpc, description="cloudshop MSK brokers", allow_all_outbound=False
        )
        subnet_ids = vpc.select_subnets(subnet_group_name=subnets.subnet_group_name).subnet_ids
        broker_logs = logs.LogGroup(self, "BrokerLogs", retention=log_retention, removal_policy=RemovalPolicy.DESTROY)
        checkov_skip(broker_logs, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
        configuration = msk.CfnConfiguration(
            self,
            "Configuration",
            name=f"{cluster_name}-config",
            server_properties=SERVER_PROPERTIES,
            kafka_versions_list=[kafka_version],
        )
        self.cluster = msk.CfnCluster(
            self,
            "Cluster",
            cluster_name=cluster_name,
            kafka_version=kafka_version,
            number_of_broker_nodes=len(subnet_ids),
            broker_node_group_info=msk.CfnCluster.BrokerNodeGroupInfoProperty(
                instance_type=broker_instance_type,
                client_subnets=subnet_ids,
                security_groups=[self.security_group.security_group_id],
                storage_info=msk.CfnCluster.StorageInfoProperty(
                    ebs_storage_info=msk.CfnCluster.EBSStorageInfoProperty(volume_size=broker_storage_gib)
                ),
                connectivity_info=msk.CfnCluster.ConnectivityInfoProperty(
                    public_access=msk.CfnCluster.PublicAccessProperty(
                        type="SERVICE_PROVIDED_EIPS" if public_access else "DISABLED"
                    )
                ),
            ),
            client_authentication=msk.CfnCluster.ClientAuthenticationProperty(
                sasl=msk.CfnCluster.SaslProperty(
                    iam=msk.CfnCluster.IamProperty(enabled=True),
                    scram=msk.CfnCluster.ScramProperty(enabled=True),
                ),
                unauthenticated=msk.CfnCluster.UnauthenticatedProperty(enabled=False),
            ),
            encryption_info=msk.CfnCluster.EncryptionInfoProperty(
                encryption_at_rest=msk.CfnCluster.EncryptionAtRestProperty(
                    data_volume_kms_key_id=encryption_key.key_arn
                ),
                encryption_in_transit=msk.CfnCluster.EncryptionInTransitProperty(client_broker="TLS", in_cluster=True),
            ),
            # The latest revision: a change of SERVER_PROPERTIES is a new revision the brokers then take.
            configuration_info=msk.CfnCluster.ConfigurationInfoProperty(
                arn=configuration.attr_arn, revision=configuration.attr_latest_revision_revision
            ),
            enhanced_monitoring="PER_BROKER",
            open_monitoring=msk.CfnCluster.OpenMonitoringProperty(
                prometheus=msk.CfnCluster.PrometheusProperty(
                    jmx_exporter=msk.CfnCluster.JmxExporterProperty(enabled_in_broker=True),
                    node_exporter=msk.CfnCluster.NodeExporterProperty(enabled_in_broker=True),
                )
            ),
            logging_info=msk.CfnCluster.LoggingInfoProperty(
                broker_logs=msk.CfnCluster.BrokerLogsProperty(
                    cloud_watch_logs=msk.CfnCluster.CloudWatchLogsProperty(
                        enabled=True, log_group=broker_logs.log_group_name
                    )
                )
            ),
        )
        self.cluster.apply_removal_policy(RemovalPolicy.DESTROY)
        if public_access:
            checkov_skip(
                self.cluster,
                {
                    "CKV_AWS_291": (
                        "Public access is the analytics link to Dataproc on GCP: SASL/SCRAM over TLS only, "
                        "admitted from Cloud NAT's addresses by the security group, and Kafka ACLs limit the "
                        "SCRAM user to reading orders and writing analytics-results (analytics/README.md)."
                    )
                },
            )
        self.cluster_arn = self.cluster.attr_arn
        replication = min(3, len(subnet_ids))
        self.topics: dict[str, msk.CfnTopic] = {}
        for topic in topics:
            self.topics[topic.name] = msk.CfnTopic(
                self,
                f"{construct_id(topic.name)}Topic",
                cluster_arn=self.cluster_arn,
                topic_name=topic.name,
                partition_count=topic.partitions,
                replication_factor=replication,
                configs=topic_configs(topic),
            )

        # MSK has no CloudFormation attribute for its bootstrap string; ask the API once per deploy.
        lookup = cr.AwsCustomResource(
            self,
            "BootstrapBrokers",
            on_update=cr.AwsSdkCall(
                service="Kafka",
                action="getBootstrapBrokers",
                parameters={"ClusterArn": self.cluster_arn},
                physical_resource_id=cr.PhysicalResourceId.of(f"{cluster_name}-bootstrap"),
                # The public string exists only while public access is on; asking for it otherwise
                # would fail the deploy.
                output_paths=[
                    "BootstrapBrokerStringSaslIam",
                    *(["BootstrapBrokerStringPublicSaslScram"] if public_access else []),
                ],
            ),
            policy=cr.AwsCustomResourcePolicy.from_statements(
                [iam.PolicyStatement(actions=["kafka:GetBootstrapBrokers"], resources=[self.cluster_arn])]
            ),
            install_latest_aws_sdk=False,
        )
        self.bootstrap_servers = lookup.get_response_field("BootstrapBrokerStringSaslIam")
        self.public_scram_bootstrap_servers = (
            lookup.get_response_field("BootstrapBrokerStringPublicSaslScram") if public_access else PUBLIC_ACCESS_OFF
        )
        # The SDK-call provider is a stack-wide singleton function that CDK ships and pins.
        provider = Stack.of(self).node.try_find_child(AWS_CUSTOM_RESOURCE_SINGLETON)
        if provider is not None:
            nag(
                provider,
                {
                    LAMBDA_BASIC: LAMBDA_BASIC_REASON,
                    "AwsSolutions-L1": "The AwsCustomResource provider's Node.js runtime is pinned by aws-cdk-lib.",
                },
            )
            checkov_skip(provider, CDK_PROVIDER_FUNCTION_SKIPS)

    # --- IAM resources (kafka-cluster actions are authorised per cluster, topic and group ARN) ----------
    @property
    def _cluster_uuid(self) -> str:
        return Fn.select(2, Fn.split("/", self.cluster_arn))

    def _arn(self, kind: str, name: str) -> str:
        return (
            f"arn:{Aws.PARTITION}:kafka:{Aws.REGION}:{Aws.ACCOUNT_ID}:{kind}/"
            f"{self.cluster_name}/{self._cluster_uuid}/{name}"
        )

    def topic_arn(self, topic: str) -> str:
        return self._arn("topic", topic)

    def group_arn(self, group: str) -> str:
        # The cluster UUID is wildcarded so the ARN is a plain string (the name is unique per region).
        return f"arn:{Aws.PARTITION}:kafka:{Aws.REGION}:{Aws.ACCOUNT_ID}:group/{self.cluster_name}/*/{group}"

    @property
    def group_arn_rendered(self) -> str:
        """`group_arn(CONSUMER_GROUPS)` as cdk-nag renders it in its findings."""
        return self.rendered_group_arn(CONSUMER_GROUPS)

    def rendered_group_arn(self, group: str) -> str:
        """`group_arn(group)` as cdk-nag renders it in its findings."""
        return f"arn:<AWS::Partition>:kafka:<AWS::Region>:<AWS::AccountId>:group/{self.cluster_name}/*/{group}"

    def grant_connect(self, grantee: iam.IGrantable) -> None:
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kafka-cluster:Connect", "kafka-cluster:DescribeCluster"],
            resource_arns=[self.cluster_arn],
        )

    def grant_produce(self, grantee: iam.IGrantable, topic: str) -> None:
        self.grant_connect(grantee)
        # Idempotent producers (the default of current Kafka clients) need this on the cluster.
        iam.Grant.add_to_principal(
            grantee=grantee, actions=["kafka-cluster:WriteDataIdempotently"], resource_arns=[self.cluster_arn]
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kafka-cluster:DescribeTopic", "kafka-cluster:WriteData"],
            resource_arns=[self.topic_arn(topic)],
        )

    def grant_consume(self, grantee: iam.IGrantable, topic: str, *, group: str) -> None:
        self.grant_connect(grantee)
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kafka-cluster:DescribeTopic", "kafka-cluster:ReadData"],
            resource_arns=[self.topic_arn(topic)],
        )
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["kafka-cluster:AlterGroup", "kafka-cluster:DescribeGroup"],
            resource_arns=[self.group_arn(group)],
        )
