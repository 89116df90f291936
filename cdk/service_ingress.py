"""The private integration: HTTP API -> VPC link -> internal ALB -> the EKS services' pods."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Duration
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_s3 as s3
from constructs import Construct

from cdk.eks import EksCore
from cdk.gateway import HttpGateway
from cdk.nag import checkov_skip
from cloudshop.estate import Route, Workload

FIRST_LISTENER_PORT = 8081
SERVICE_PORT = 80
HEALTH_PATH = "/healthz"
ALB_IDLE_TIMEOUT_SECONDS = 60

PLAIN_HTTP_REASON = (
    "Internal ALB reachable only from the API Gateway VPC link's security group inside the VPC; TLS "
    "ends at API Gateway. HTTPS here needs a private CA certificate and buys no new trust boundary."
)


def listener_port(index: int) -> int:
    """One listener per workload, in `cloudshop.estate.WORKLOADS` order: 8081, 8082, ..."""
    return FIRST_LISTENER_PORT + index


class PrivateIngress(Construct):
    """An internal ALB with one listener and one IP target group per workload.

    The AWS Load Balancer Controller keeps each target group's targets equal to the pods behind the
    workload's Service (`TargetGroupBinding`, applied here because it needs the target group ARN).
    The gateway reaches the ALB through a VPC link; every route of the route table whose service is a
    workload is added to the HTTP API on that workload's listener.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        core: EksCore,
        gateway: HttpGateway,
        routes: Iterable[Route],
        access_log_bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc_link_security_group = ec2.SecurityGroup(
            self, "VpcLinkSecurityGroup", vpc=vpc, description="cloudshop API Gateway VPC link"
        )
        self.security_group = ec2.SecurityGroup(
            self,
            "LoadBalancerSecurityGroup",
            vpc=vpc,
            description="cloudshop internal ALB",
            allow_all_outbound=False,
        )
        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            vpc_subnets=subnets,
            internet_facing=False,
            security_group=self.security_group,
            drop_invalid_header_fields=True,
            # Shorter than the pods' keep-alive (uvicorn --timeout-keep-alive 75 in the Dockerfiles), so
            # the ALB, not the pod, ends an idle connection: otherwise a request sent as the pod
            # closes it is a 502.
            idle_timeout=Duration.seconds(ALB_IDLE_TIMEOUT_SECONDS),
        )
        self.load_balancer.log_access_logs(access_log_bucket, prefix="alb")
        checkov_skip(
            self.load_balancer,
            {
                "CKV_AWS_150": (
                    "Stateless and internal; CloudFormation recreates it. Deletion protection would only "
                    "block `cdk destroy`."
                )
            },
        )
        self.vpc_link = apigw.VpcLink(
            self,
            "VpcLink",
            vpc=vpc,
            subnets=subnets,
            security_groups=[self.vpc_link_security_group],
        )
        all_routes = list(routes)
        self.target_groups: dict[str, elbv2.ApplicationTargetGroup] = {}
        self.listeners: dict[str, elbv2.ApplicationListener] = {}
        for index, workload in enumerate(core.workloads):
            self._add_workload(workload, listener_port(index), core=core, gateway=gateway, routes=all_routes)

    def _add_workload(
        self, workload: Workload, port: int, *, core: EksCore, gateway: HttpGateway, routes: list[Route]
    ) -> None:
        name = workload.name.capitalize()
        target_group = elbv2.ApplicationTargetGroup(
            self,
            f"{name}Targets",
            vpc=core.cluster.vpc,
            port=workload.port,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            deregistration_delay=Duration.seconds(30),
            health_check=elbv2.HealthCheck(path=HEALTH_PATH, healthy_http_codes="200"),
        )
        listener = self.load_balancer.add_listener(
            f"{name}Listener",
            port=port,
            protocol=elbv2.ApplicationProtocol.HTTP,
            default_target_groups=[target_group],
            open=False,
        )
        checkov_skip(listener, {"CKV_AWS_2": PLAIN_HTTP_REASON, "CKV_AWS_103": PLAIN_HTTP_REASON})
        self.security_group.add_ingress_rule(
            self.vpc_link_security_group, ec2.Port.tcp(port), f"API Gateway VPC link to {workload.name}"
        )
        # Pods take the node's (cluster) security group under the VPC CNI.
        self.security_group.add_egress_rule(
            core.cluster.cluster_security_group, ec2.Port.tcp(workload.port), f"ALB to {workload.name} pods"
        )
        core.cluster.cluster_security_group.add_ingress_rule(
            self.security_group, ec2.Port.tcp(workload.port), f"internal ALB to {workload.name} pods"
        )
        binding = core.cluster.add_manifest(
            f"{name}TargetGroupBinding",
            {
                "apiVersion": "elbv2.k8s.aws/v1beta1",
                "kind": "TargetGroupBinding",
                "metadata": {"name": workload.name, "namespace": workload.namespace},
                "spec": {
                    "serviceRef": {"name": workload.name, "port": SERVICE_PORT},
                    "targetGroupARN": target_group.target_group_arn,
                    "targetType": "ip",
                },
            },
        )
        binding.node.add_dependency(core.namespace_manifest)
        if core.cluster.alb_controller is not None:
            binding.node.add_dependency(core.cluster.alb_controller)
        integration = integrations.HttpAlbIntegration(f"{name}Integration", listener, vpc_link=self.vpc_link)
        gateway.add_routes(self, [r for r in routes if r.service == workload.name], integration)
        self.target_groups[workload.name] = target_group
        self.listeners[workload.name] = listener
