"""GitHub delivery: the account's GitHub OIDC provider and the roles the workflows assume.

Three roles, each trusted by one GitHub OIDC subject of one repository, so no workflow holds a key:

- `delivery_role` (`deliver.yml`, on main): pushes images to the ECR repositories it is given, and
  nothing else.
- `deploy_role` (`deploy.yml`, a job in the GitHub environment named like the CDK environment): may
  only assume the CDK bootstrap roles (deploy, file publishing, lookup); CloudFormation deploys with
  the bootstrap execution role, so this role itself changes nothing.
- `diff_role` (`deploy.yml` on pull requests, optional): may only assume the bootstrap lookup role,
  which is read-only, for `cdk diff`.

IAM reads a web identity's subject in the trust policy only, not in the permissions of the session,
which is why a pull request's diff and main's deploy are two roles rather than one role with two
branches of permissions.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import DefaultStackSynthesizer, Duration, Fn, Stack
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_iam as iam
from constructs import Construct

from cdk.nag import nag

GITHUB_OIDC_URL = "https://token.actions.githubusercontent.com"
GITHUB_OIDC_ISSUER = "token.actions.githubusercontent.com"
GITHUB_OIDC_AUDIENCE = "sts.amazonaws.com"
# The ECR user guide's minimum to push an image to one repository (`docker push` reads the manifest
# back, hence BatchGetImage). GetAuthorizationToken is account-wide and has no resource type.
ECR_PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability",
    "ecr:BatchGetImage",
    "ecr:CompleteLayerUpload",
    "ecr:InitiateLayerUpload",
    "ecr:PutImage",
    "ecr:UploadLayerPart",
)
ECR_LOGIN_ACTION = "ecr:GetAuthorizationToken"
BOOTSTRAP_ROLES = ("deploy-role", "file-publishing-role", "lookup-role")
READ_ONLY_BOOTSTRAP_ROLES = ("lookup-role",)
# The first deployment of an empty account takes about an hour (cdk/README.md); the CLI re-assumes
# the bootstrap roles from this session while CloudFormation works, so it must outlive the deploy.
DEPLOY_SESSION = Duration.hours(2)

ECR_LOGIN_REASON = (
    "ecr:GetAuthorizationToken has no resource type (it returns a login for the whole registry); the "
    "push actions themselves are granted on the two repository ARNs only."
)


def github_subject(repository: str, claim: str) -> str:
    """The `sub` claim GitHub's OIDC token carries for `repository` (`owner/name`), e.g.
    `ref:refs/heads/main`, `environment:prod` or `pull_request` (GitHub's default subject format)."""
    return f"repo:{repository}:{claim}"


def bootstrap_role_arn(role: str, *, qualifier: str) -> str:
    """The ARN of the CDK bootstrap role `cdk-<qualifier>-<role>-<account>-<region>` of this stack's
    account and region (the default synthesizer's naming)."""
    return Fn.sub(
        f"arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:role/cdk-{qualifier}-{role}-${{AWS::AccountId}}-${{AWS::Region}}"
    )


class GitHubDelivery(Construct):
    """The GitHub OIDC provider (created, or imported by ARN when another stack of the account owns
    it) and the delivery, deploy and (optional) diff roles of one GitHub repository."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        repository: str,
        environment: str,
        repositories: Sequence[ecr.IRepository],
        existing_provider_arn: str | None = None,
        pull_request_diff: bool = True,
        bootstrap_qualifier: str | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        owner, _, name = repository.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"github repository must be `owner/name`, got {repository!r}")
        if not repositories:
            raise ValueError("the delivery role needs at least one ECR repository to push to")
        self.repository = repository
        qualifier = bootstrap_qualifier or _synthesizer_qualifier(Stack.of(self))

        # One provider per URL per account: a second environment in the account imports the first's.
        self.provider: iam.IOidcProvider
        if existing_provider_arn:
            self.provider = iam.OidcProviderNative.from_oidc_provider_arn(self, "Provider", existing_provider_arn)
        else:
            # No thumbprint: IAM trusts GitHub's certificate through its own CA library.
            self.provider = iam.OidcProviderNative(
                self, "Provider", url=GITHUB_OIDC_URL, client_ids=[GITHUB_OIDC_AUDIENCE]
            )

        self.delivery_role = iam.Role(
            self,
            "DeliveryRole",
            assumed_by=self._github(github_subject(repository, "ref:refs/heads/main")),
            description=f"GitHub {repository} deliver workflow on main: push images to ECR",
            inline_policies={
                "PushImages": iam.PolicyDocument(
                    statements=[
                        iam.PolicyStatement(
                            actions=list(ECR_PUSH_ACTIONS),
                            resources=[r.repository_arn for r in repositories],
                        ),
                        iam.PolicyStatement(actions=[ECR_LOGIN_ACTION], resources=["*"]),
                    ]
                )
            },
        )
        # The repositories use ECR's AWS-managed key (aws/ecr): its key policy lets ECR use it for
        # any principal of the account, so a push needs no KMS permission here.
        nag(self.delivery_role, {"AwsSolutions-IAM5[Resource::*]": ECR_LOGIN_REASON})

        self.deploy_role = iam.Role(
            self,
            "DeployRole",
            assumed_by=self._github(github_subject(repository, f"environment:{environment}")),
            description=f"GitHub {repository} deploy workflow, environment {environment}: CDK bootstrap roles only",
            max_session_duration=DEPLOY_SESSION,
            inline_policies={"AssumeBootstrapRoles": _assume(BOOTSTRAP_ROLES, qualifier=qualifier)},
        )

        self.diff_role: iam.Role | None = None
        if pull_request_diff:
            self.diff_role = iam.Role(
                self,
                "DiffRole",
                assumed_by=self._github(github_subject(repository, "pull_request")),
                description=f"GitHub {repository} pull requests: cdk diff through the read-only lookup role",
                inline_policies={"AssumeLookupRole": _assume(READ_ONLY_BOOTSTRAP_ROLES, qualifier=qualifier)},
            )

    def _github(self, subject: str) -> iam.OpenIdConnectPrincipal:
        return iam.OpenIdConnectPrincipal(
            self.provider,
            conditions={
                "StringEquals": {
                    f"{GITHUB_OIDC_ISSUER}:aud": GITHUB_OIDC_AUDIENCE,
                    f"{GITHUB_OIDC_ISSUER}:sub": subject,
                }
            },
        )


def _assume(roles: Sequence[str], *, qualifier: str) -> iam.PolicyDocument:
    # sts:TagSession: the CLI passes session tags when a synthesizer's assume-role options name some,
    # and the bootstrap roles' trust policies allow it; it grants nothing by itself.
    return iam.PolicyDocument(
        statements=[
            iam.PolicyStatement(
                actions=["sts:AssumeRole", "sts:TagSession"],
                resources=[bootstrap_role_arn(role, qualifier=qualifier) for role in roles],
            )
        ]
    )


def _synthesizer_qualifier(stack: Stack) -> str:
    synthesizer = stack.synthesizer
    if isinstance(synthesizer, DefaultStackSynthesizer) and synthesizer.bootstrap_qualifier:
        return synthesizer.bootstrap_qualifier
    return DefaultStackSynthesizer.DEFAULT_QUALIFIER
