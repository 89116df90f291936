"""The network: a VPC over three AZs, flow logs, gateway endpoints for DynamoDB and S3, and interface
endpoints for Lambda and STS (what the MSK event source's pollers call from the brokers' subnets)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from constructs import Construct

from cdk.nag import LOG_GROUP_KMS_REASON, checkov_skip


class Network(Construct):
    """Public subnets hold the NAT gateways and the MSK brokers; everything else lives in private subnets.

    `app_subnets` (private, with egress) hold Lambdas and EKS nodes; `gateway_subnets` (small,
    private) hold only the internal ALB and the API Gateway VPC link, so the pods' network policies can
    admit gateway traffic by CIDR; `data_subnets` (isolated) hold RDS and reach nothing outside the VPC.
    `kafka_subnets` are the public ones: MSK turns on public access (the SASL/SCRAM link to Dataproc)
    only for brokers in subnets routed to an internet gateway. The brokers get public addresses only
    then, and their security group admits only the declared sources (cdk/analytics_link.py).

    The Lambda event source mapping of an MSK topic runs its pollers in the brokers' subnets; in a
    public subnet they have no public address and no NAT, so they reach Lambda and STS through
    interface endpoints (private DNS), which every subnet of the VPC then uses.
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
        self.endpoint_security_group = ec2.SecurityGroup(
            self,
            "InterfaceEndpoints",
            vpc=self.vpc,
            description="cloudshop interface endpoints: HTTPS from the VPC",
            allow_all_outbound=False,
        )
        self.endpoint_security_group.add_ingress_rule(
            ec2.Peer.ipv4(cidr), ec2.Port.tcp(443), "AWS API calls from inside the VPC"
        )
        self.interface_endpoints = {
            name: self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=self.app_subnets,
                security_groups=[self.endpoint_security_group],
                private_dns_enabled=True,
                # The rule above admits the VPC by its literal CIDR (cdk-nag cannot read a token).
                open=False,
            )
            for name, service in (
                ("Lambda", ec2.InterfaceVpcEndpointAwsService.LAMBDA_),
                ("Sts", ec2.InterfaceVpcEndpointAwsService.STS),
            )
        }
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

    @property
    def kafka_subnets(self) -> ec2.SubnetSelection:
        return ec2.SubnetSelection(subnet_group_name="public")
