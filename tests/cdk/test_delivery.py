"""GitHubDelivery: the GitHub OIDC provider and the three roles its workflows assume, as synthesised.

Each role trusts one subject of one repository, and may do one thing: the delivery role pushes to the
two ECR repositories, the deploy role assumes the CDK bootstrap roles, the diff role only the
read-only lookup role.
"""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk.assertions import Template

from cdk.delivery import (
    ECR_LOGIN_ACTION,
    ECR_PUSH_ACTIONS,
    GITHUB_OIDC_AUDIENCE,
    GITHUB_OIDC_URL,
    GitHubDelivery,
)
from cdk.nag import logical_id
from cloudshop.estate import WORKLOADS
from tests.infra.test_workflows import documented_variables

pytestmark = pytest.mark.infra

ISSUER = "token.actions.githubusercontent.com"
PROVIDER_ARN = f"arn:aws:iam::111122223333:oidc-provider/{ISSUER}"


def eks_resources(synth) -> dict[str, dict[str, Any]]:
    return synth.templates["Eks"]["Resources"]


def role_of(synth, name: str) -> tuple[str, dict[str, Any]]:
    role = getattr(synth.deployment.eks.delivery, name)
    role_id = logical_id(role.node.default_child)
    return role_id, eks_resources(synth)[role_id]


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for policy in role["Properties"].get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def bootstrap_arn(role: str) -> dict[str, str]:
    return {
        "Fn::Sub": (
            "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/"
            f"cdk-hnb659fds-{role}-${{AWS::AccountId}}-${{AWS::Region}}"
        )
    }


def test_the_account_gets_a_github_oidc_provider_for_sts(synth) -> None:
    providers = synth.resources("Eks", "AWS::IAM::OIDCProvider")

    github = [p for p in providers.values() if p["Properties"]["Url"] == GITHUB_OIDC_URL]
    assert len(github) == 1
    assert github[0]["Properties"]["ClientIdList"] == [GITHUB_OIDC_AUDIENCE]


def test_the_provider_keeps_its_logical_id(synth) -> None:
    # A new logical id would make CloudFormation create the replacement first, and IAM refuses a
    # second provider for the same URL in one account: the deploy would fail.
    provider = synth.deployment.eks.delivery.provider.node.default_child

    assert logical_id(provider) == "GitHubProviderE571E8F1"


@pytest.mark.parametrize(
    ("role", "subject"),
    [
        ("delivery_role", "repo:cloudshop/cloudshop:ref:refs/heads/main"),
        ("deploy_role", "repo:cloudshop/cloudshop:environment:dev"),
        ("diff_role", "repo:cloudshop/cloudshop:pull_request"),
    ],
)
def test_each_role_trusts_only_its_github_subject_through_the_provider(synth, role: str, subject: str) -> None:
    provider_id = logical_id(synth.deployment.eks.delivery.provider.node.default_child)
    _, resource = role_of(synth, role)

    assert resource["Properties"]["AssumeRolePolicyDocument"]["Statement"] == [
        {
            "Action": "sts:AssumeRoleWithWebIdentity",
            "Effect": "Allow",
            "Principal": {"Federated": {"Ref": provider_id}},
            "Condition": {"StringEquals": {f"{ISSUER}:aud": GITHUB_OIDC_AUDIENCE, f"{ISSUER}:sub": subject}},
        }
    ]


def test_the_repository_is_the_one_argocd_syncs(synth) -> None:
    from cdk.eks import argocd_bootstrap

    root = next(d for d in argocd_bootstrap(synth.config.argocd_bootstrap) if d["kind"] == "Application")

    assert root["spec"]["source"]["repoURL"] == f"https://github.com/{synth.config.github_repository}.git"


def test_the_delivery_role_pushes_to_the_two_repositories_and_nothing_else(synth) -> None:
    role_id, role = role_of(synth, "delivery_role")
    repositories = synth.deployment.eks.core.repositories
    repository_ids = sorted(logical_id(r.node.default_child) for r in repositories.values())

    assert sorted(repositories) == sorted(w.name for w in WORKLOADS) and len(repositories) == 2
    push, login = statements(role)
    assert sorted(as_list(push["Action"])) == sorted(ECR_PUSH_ACTIONS)
    assert sorted(r["Fn::GetAtt"][0] for r in as_list(push["Resource"])) == repository_ids
    assert all(r["Fn::GetAtt"][1] == "Arn" for r in as_list(push["Resource"]))
    assert login == {"Action": ECR_LOGIN_ACTION, "Effect": "Allow", "Resource": "*"}
    assert "ManagedPolicyArns" not in role["Properties"]
    assert attached_policies(synth, role_id) == []


def test_the_deploy_role_may_only_assume_the_cdk_bootstrap_roles(synth) -> None:
    role_id, role = role_of(synth, "deploy_role")

    assert statements(role) == [
        {
            "Action": ["sts:AssumeRole", "sts:TagSession"],
            "Effect": "Allow",
            "Resource": [bootstrap_arn(r) for r in ("deploy-role", "file-publishing-role", "lookup-role")],
        }
    ]
    assert "ManagedPolicyArns" not in role["Properties"]
    assert attached_policies(synth, role_id) == []
    # A first deployment takes about an hour: the session must outlive it.
    assert role["Properties"]["MaxSessionDuration"] >= 2 * 3600


def test_a_pull_request_diff_may_only_assume_the_read_only_lookup_role(synth) -> None:
    role_id, role = role_of(synth, "diff_role")

    assert statements(role) == [
        {"Action": ["sts:AssumeRole", "sts:TagSession"], "Effect": "Allow", "Resource": bootstrap_arn("lookup-role")}
    ]
    assert "ManagedPolicyArns" not in role["Properties"]
    assert attached_policies(synth, role_id) == []


def attached_policies(synth, role_id: str) -> list[str]:
    """Policies outside the role that name it (a grant elsewhere would add one)."""
    return [
        policy_id
        for stack in synth.templates.values()
        for policy_id, resource in stack["Resources"].items()
        if resource["Type"] in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"}
        and {"Ref": role_id} in resource["Properties"].get("Roles", [])
    ]


def test_every_role_variable_a_workflow_reads_is_an_output_of_its_role(synth) -> None:
    outputs = synth.templates["Eks"]["Outputs"]
    roles = {name: role_of(synth, name)[0] for name in ("delivery_role", "deploy_role", "diff_role")}
    role_variables = {v: row for v, row in documented_variables().items() if v.endswith("_ROLE_ARN")}

    assert set(role_variables) == {"AWS_DELIVER_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN", "AWS_DIFF_ROLE_ARN"}
    by_output = {row.output: variable for variable, row in role_variables.items()}
    assert by_output == {
        "DeliveryRoleArn": "AWS_DELIVER_ROLE_ARN",
        "DeployRoleArn": "AWS_DEPLOY_ROLE_ARN",
        "DiffRoleArn": "AWS_DIFF_ROLE_ARN",
    }
    for output, role in zip(("DeliveryRoleArn", "DeployRoleArn", "DiffRoleArn"), roles.values(), strict=True):
        assert outputs[output]["Value"] == {"Fn::GetAtt": [role, "Arn"]}
    assert all(row.stack == "Eks" for row in role_variables.values())


def small_stack(**props: Any) -> Template:
    app = App()
    stack = Stack(app, "Delivery")
    repositories = [ecr.Repository(stack, name, repository_name=f"cloudshop/{name}") for name in ("order", "payment")]
    GitHubDelivery(stack, "GitHub", repository="acme/shop", environment="prod", repositories=repositories, **props)
    return Template.from_stack(stack)


def test_a_second_environment_of_the_account_imports_the_provider_by_arn() -> None:
    template = small_stack(existing_provider_arn=PROVIDER_ARN)

    template.resource_count_is("AWS::IAM::OIDCProvider", 0)
    trusts = [
        statement["Principal"]["Federated"]
        for role in template.find_resources("AWS::IAM::Role").values()
        for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    ]
    assert trusts and set(trusts) == {PROVIDER_ARN}


def test_without_pull_request_diffs_there_is_no_diff_role() -> None:
    template = small_stack(pull_request_diff=False)

    subjects = sorted(
        statement["Condition"]["StringEquals"][f"{ISSUER}:sub"]
        for role in template.find_resources("AWS::IAM::Role").values()
        for statement in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    )
    assert subjects == ["repo:acme/shop:environment:prod", "repo:acme/shop:ref:refs/heads/main"]


@pytest.mark.parametrize("repository", ["shop", "acme/", "/shop", "acme/shop/x"])
def test_the_repository_must_be_owner_slash_name(repository: str) -> None:
    app = App()
    stack = Stack(app, "Delivery")
    repositories = [ecr.Repository(stack, "Order")]

    with pytest.raises(ValueError, match="owner/name"):
        GitHubDelivery(stack, "GitHub", repository=repository, environment="dev", repositories=repositories)
