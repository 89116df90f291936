"""Helpers to record why a cdk-nag rule or a checkov check does not apply to a resource.

Every suppression carries its reason next to the resource it concerns; the tests fail on any finding
that has none.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Acknowledgment, CfnElement, CfnResource, Stack, Validations
from constructs import IConstruct

LOG_GROUP_KMS_REASON = (
    "Log groups are encrypted at rest by CloudWatch Logs with AWS-owned keys; services log no secrets or "
    "card data (payment methods are tokens), so a customer-managed key would add key-policy coupling "
    "between every stack and the key without protecting anything more."
)


def nag(construct: IConstruct, rules: Mapping[str, str]) -> None:
    """Acknowledge cdk-nag findings on `construct` and below: {rule or `rule[finding]`: reason}."""
    validations = Validations.of(construct)
    for rule, reason in rules.items():
        validations.acknowledge(Acknowledgment(id=rule, reason=reason))


def managed_policy(name: str, *, service_role: bool = False) -> str:
    """The cdk-nag finding id for an AWS managed policy attached to a role."""
    path = f"service-role/{name}" if service_role else name
    return f"AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/{path}]"


LAMBDA_BASIC = managed_policy("AWSLambdaBasicExecutionRole", service_role=True)
LAMBDA_VPC = managed_policy("AWSLambdaVPCAccessExecutionRole", service_role=True)
LAMBDA_BASIC_REASON = "AWSLambdaBasicExecutionRole only lets the function write its own log streams."
LAMBDA_VPC_REASON = "AWSLambdaVPCAccessExecutionRole is the AWS-maintained minimum to place ENIs in the VPC."
XRAY = "AwsSolutions-IAM5[Resource::*]"
XRAY_REASON = (
    "Active tracing: xray:PutTraceSegments/PutTelemetryRecords do not support resource-level "
    "permissions, so CDK grants them on `*`; no data resource is involved."
)

CDK_PROVIDER_FUNCTION_SKIPS = {
    "CKV_AWS_116": "A CloudFormation custom-resource provider shipped by aws-cdk-lib, invoked synchronously.",
    "CKV_AWS_117": "A CloudFormation custom-resource provider shipped by aws-cdk-lib; it calls AWS APIs only.",
    "CKV_AWS_115": "A deploy-time provider shipped by aws-cdk-lib; it runs only during deployments.",
    "CKV_AWS_173": "A provider shipped by aws-cdk-lib; its environment holds no secrets.",
}


def checkov_skip(construct: IConstruct, checks: Mapping[str, str]) -> None:
    """Record checkov skips ({check id: reason}) in the resource's template metadata."""
    resource = construct if isinstance(construct, CfnResource) else construct.node.default_child
    if not isinstance(resource, CfnResource):
        raise TypeError(f"{construct.node.path} has no CloudFormation resource to annotate")
    metadata = resource.get_metadata("checkov") or {}
    skips = [s for s in metadata.get("skip", []) if s["id"] not in checks]
    skips += [{"id": check, "comment": reason} for check, reason in checks.items()]
    resource.add_metadata("checkov", {"skip": skips})


def checkov_skip_all(construct: IConstruct, checks: Mapping[str, str], *, resource_type: str) -> None:
    """`checkov_skip` on every resource of `resource_type` under `construct` (CDK-owned providers)."""
    for child in construct.node.find_all():
        if isinstance(child, CfnResource) and child.cfn_resource_type == resource_type:
            checkov_skip(child, checks)


def logical_id(element: CfnElement) -> str:
    """The element's logical id as a plain string (cdk-nag findings quote it)."""
    return str(Stack.of(element).resolve(Stack.of(element).get_logical_id(element)))


# Functions (and their log groups) that aws-cdk-lib adds by itself at stack level.
CDK_PROVIDER_IDS = (
    "Custom::VpcRestrictDefaultSGCustomResourceProvider",
    "AWSCDKCfnUtilsProviderCustomResourceProvider",
    "AWS679f53fac002430cb0da5b7982bd2287",
    "KubectlProvider",
)


def skip_cdk_providers(stack: Stack) -> None:
    """Record checkov skips on the provider functions aws-cdk-lib creates (called once all constructs exist)."""
    for child in stack.node.find_all():
        if child.node.id not in CDK_PROVIDER_IDS:
            continue
        checkov_skip_all(child, CDK_PROVIDER_FUNCTION_SKIPS, resource_type="AWS::Lambda::Function")
        checkov_skip_all(child, {"CKV_AWS_158": LOG_GROUP_KMS_REASON}, resource_type="AWS::Logs::LogGroup")
