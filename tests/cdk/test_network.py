"""Network: three AZs of private subnets, flow logs, gateway endpoints for DynamoDB and S3, interface
endpoints for Lambda and STS."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match

pytestmark = pytest.mark.infra


def subnet_azs(synth, group: str) -> set[str]:
    return {
        s["Properties"]["AvailabilityZone"]
        for s in synth.resources("Network", "AWS::EC2::Subnet").values()
        if {"Key": "aws-cdk:subnet-name", "Value": group} in s["Properties"].get("Tags", [])
    }


@pytest.mark.parametrize("group", ["public", "app", "data", "gateway"])
def test_each_subnet_group_spans_three_availability_zones(synth, group: str) -> None:
    assert subnet_azs(synth, group) == {"eu-west-1a", "eu-west-1b", "eu-west-1c"}


def test_private_subnets_do_not_map_public_ips(synth) -> None:
    for subnet in synth.resources("Network", "AWS::EC2::Subnet").values():
        tags = {t["Key"]: t["Value"] for t in subnet["Properties"]["Tags"]}
        if tags["aws-cdk:subnet-type"] != "Public":
            assert subnet["Properties"]["MapPublicIpOnLaunch"] is False


def test_flow_logs_capture_all_traffic_to_cloudwatch(synth) -> None:
    synth.template("Network").has_resource_properties(
        "AWS::EC2::FlowLog",
        {
            "ResourceType": "VPC",
            "TrafficType": "ALL",
            "LogDestinationType": "cloud-watch-logs",
            "LogGroupName": Match.any_value(),
        },
    )


@pytest.mark.parametrize("service", ["dynamodb", "s3"])
def test_gateway_endpoint_for(synth, service: str) -> None:
    synth.template("Network").has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Gateway",
            "ServiceName": {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, f".{service}"]]},
        },
    )


def test_gateway_subnet_cidrs_are_an_output_for_the_network_policies(synth) -> None:
    assert "GatewaySubnetCidrs" in synth.templates["Network"]["Outputs"]


@pytest.mark.parametrize("service", ["lambda", "sts"])
def test_interface_endpoint_for_the_msk_event_source_pollers(synth, service: str) -> None:
    # The pollers run in the brokers' public subnets, without a public address or a NAT route.
    synth.template("Network").has_resource_properties(
        "AWS::EC2::VPCEndpoint",
        {
            "VpcEndpointType": "Interface",
            "ServiceName": f"com.amazonaws.eu-west-1.{service}",
            "PrivateDnsEnabled": True,
        },
    )
    synth.template("Network").has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "GroupDescription": Match.string_like_regexp("interface endpoints"),
            "SecurityGroupIngress": [
                {
                    "CidrIp": synth.config.vpc_cidr,
                    "FromPort": 443,
                    "ToPort": 443,
                    "IpProtocol": "tcp",
                    "Description": Match.any_value(),
                }
            ],
        },
    )
