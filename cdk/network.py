"""The network: a VPC over three AZs, flow logs, and gateway endpoints for DynamoDB and S3."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.nag import LOG_GROUP_KMS_REASON, checkov_skip


class Network(Construct):
    """Public subnets hold only the NAT gateways; everything else lives in private subnets.

    `app_subnets` (private, with egress) hold Lambdas, EKS nodes and MSK; `gateway_subnets` (small,
    private) hold only the internal ALB and the API Gateway VPC link, so the pods' network policies can
    admit gateway traffic by CIDR; `data_subnets` (isolated) hold RDS and reach nothing outside the VPC.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        cidr: str,
        availability_zones: list[str],
        nat_gateways: int,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(cidr),
            availability_zones=availability_zones,
            nat_gateways=nat_gateways,
            restrict_default_security_group=True,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=19),
                ec2.SubnetConfiguration(name="data", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
                ec2.SubnetConfiguration(name="gateway", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=24),
            ],
            gateway_endpoints={
                "DynamoDb": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
            },
        )
        self.flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=log_retention,
            removal_policy=RemovalPolicy.DESTROY,
        )
        checkov_skip(self.flow_log_group, {"CKV_AWS_158": LOG_GROUP_KMS_REASON})
        flow_log_role = iam.Role(self, "FlowLogRole", assumed_by=iam.ServicePrincipal("vpc-flow-logs.amazonaws.com"))
        self.flow_log = self.vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(self.flow_log_group, flow_log_role),
            traffic_type=ec2.FlowLogTrafficType.ALL,
        )

    @property
    def app_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnet_group_name="app")

    @property
    def gateway_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnet_group_name="gateway")

    @property
    def data_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnet_group_name="data")
