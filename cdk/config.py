"""Deployment configuration: typed, built once in `app.py` from the environment and CDK context.

Nothing under `cdk/` reads the environment; constructs get what they need from a `DeploymentConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

EnvironmentName = Literal["dev", "staging", "prod"]


@dataclass(frozen=True, kw_only=True)
class DeploymentConfig:
    environment: EnvironmentName = "dev"
    account: str | None = None
    region: str = "eu-west-1"
    # Explicit AZ names: synth needs no context lookup (no credentials) and still spans three AZs.
    # Empty = `<region>a`, `<region>b`, `<region>c`.
    availability_zones: tuple[str, ...] = ()

    # --- network ---------------------------------------------------------------------------------
    max_azs: int = 3
    # One NAT gateway per AZ survives an AZ outage; dev saves ~$65/month with one.
    nat_gateways: int = 1
    vpc_cidr: str = "10.10.0.0/16"

    # --- data ------------------------------------------------------------------------------------
    db_instance_class: str = "t4g.medium"
    db_multi_az: bool = False
    db_allocated_storage_gib: int = 20
    db_max_allocated_storage_gib: int = 100
    db_backup_retention_days: int = 7
    db_name: str = "cloudshop"
    # Days between automatic rotations of the database master password.
    db_rotation_days: int = 30

    # --- streaming -------------------------------------------------------------------------------
    kafka_version: str = "3.8.x"
    kafka_broker_instance_type: str = "kafka.t3.small"
    kafka_broker_storage_gib: int = 20
    # Sources admitted to MSK's public SASL/SCRAM listener: the Dataproc cluster's Cloud NAT addresses
    # (Terraform output `analytics_client_cidrs`). Non-empty turns MSK public access on, which MSK
    # refuses at a cluster's creation: set it on a later deploy (analytics/README.md).
    analytics_client_cidrs: tuple[str, ...] = ()

    # --- serverless API ----------------------------------------------------------------------------
    api_throttle_rate: int = 100
    api_throttle_burst: int = 200
    lambda_memory_mib: int = 512
    log_retention_days: int = 30
    # Share of new traces the services keep (`TRACE_SAMPLE_RATIO` on every function and pod; a trace
    # started upstream keeps its caller's decision). Every one by default. Tracing each checkout costs
    # the four checkout services ~12 % of their CPU (`python -m cloudshop.bench --trace-sample-ratio`)
    # and X-Ray bills per trace recorded: a busy environment may keep fewer (X-Ray's own default rule
    # keeps 5 %).
    trace_sample_ratio: float = 1.0
    ses_sender: str = "orders@example.com"
    # Browser origins allowed by CORS; empty = no CORS configuration.
    cors_origins: tuple[str, ...] = ()

    # Bump to make the JwtKeyPair resource re-read the signing key (after you put a new one).
    jwt_key_generation: int = 1

    # --- EKS ----------------------------------------------------------------------------------------
    kubernetes_version: str = "1.35"
    node_instance_type: str = "m6i.large"
    # Nodes of the managed group, fixed (no cluster autoscaler): every pod of the environment at its
    # requests, each service at its HPA maximum plus a rollout's surge, packed onto the instance type's
    # allocatable CPU and memory, plus one spare node. Computed from the rendered overlay and the Helm
    # values by tests/cdk/test_eks_capacity.py, which fails when this is too small or too large.
    node_count: int = 6
    # The ArgoCD root applied at deploy: `eks_services/argocd/bootstrap/<argocd_bootstrap>.yaml`, as
    # committed (repository and revision are git's to say; a fork edits the ArgoCD files).
    argocd_bootstrap: str = "dev"
    argocd_chart_version: str = "8.1.1"
    # IAM role ARNs given cluster-admin through EKS access entries (operators, CI).
    cluster_admin_role_arns: tuple[str, ...] = ()

    # --- delivery (GitHub OIDC, cdk/delivery.py) ------------------------------------------------------
    # `owner/name` of the GitHub repository whose workflows may assume the delivery and deploy roles;
    # the same repository ArgoCD syncs (eks_services/argocd: repoURL).
    github_repository: str = "cloudshop/cloudshop"
    # The account has one GitHub OIDC provider: the first environment in an account creates it (None);
    # a second one in the same account imports it by this ARN.
    github_oidc_provider_arn: str | None = None
    # A read-only role for `cdk diff` on pull requests (any branch of the repository may assume it).
    github_diff_role: bool = True

    # --- monitoring ---------------------------------------------------------------------------------
    alarm_email: str | None = None

    tags: dict[str, str] = field(default_factory=dict)

    # Physical-name prefix of tables, buckets and queues; empty = `cloudshop-<environment>-`.
    resource_prefix: str = ""

    @property
    def prefix(self) -> str:
        """The `RESOURCE_PREFIX` setting: `resource_settings(prefix)` gives every table and bucket name."""
        return self.resource_prefix or f"cloudshop-{self.environment}-"

    @property
    def azs(self) -> list[str]:
        return list(self.availability_zones) or [f"{self.region}{suffix}" for suffix in "abc"][: self.max_azs]

    @property
    def stack_prefix(self) -> str:
        return f"Cloudshop-{self.environment.capitalize()}"

    @property
    def is_production(self) -> bool:
        return self.environment == "prod"

    @property
    def kafka_public_access(self) -> bool:
        return bool(self.analytics_client_cidrs)

    def __post_init__(self) -> None:
        import ipaddress

        if not 0 <= self.trace_sample_ratio <= 1:
            raise ValueError(f"trace_sample_ratio: {self.trace_sample_ratio} is not a share from 0 to 1")

        for cidr in self.analytics_client_cidrs:
            network = ipaddress.ip_network(cidr, strict=True)  # ValueError names a malformed one
            if network.prefixlen < 24:
                raise ValueError(f"analytics_client_cidrs: {cidr} admits more than a few NAT addresses")


_PRESETS: dict[EnvironmentName, DeploymentConfig] = {
    "dev": DeploymentConfig(environment="dev"),
    # Staging runs the `demo` GitOps overlay (the load-test HPA targets).
    "staging": DeploymentConfig(environment="staging", argocd_bootstrap="demo"),
    "prod": DeploymentConfig(
        environment="prod",
        nat_gateways=3,
        db_multi_az=True,
        db_instance_class="m7g.large",
        db_backup_retention_days=14,
        kafka_broker_instance_type="kafka.m7g.large",
        kafka_broker_storage_gib=100,
        api_throttle_rate=500,
        api_throttle_burst=1000,
        log_retention_days=90,
        argocd_bootstrap="prod",
        # The prod overlay requests twice the CPU per pod and spreads it over zones with DoNotSchedule.
        node_count=10,
        # Pull requests get no role in prod, even a read-only one: they diff against dev.
        github_diff_role=False,
    ),
}


def preset(environment: EnvironmentName, **overrides: object) -> DeploymentConfig:
    """The configuration of a named environment, with explicit overrides."""
    if environment not in _PRESETS:
        raise ValueError(f"unknown environment {environment!r}; expected one of {sorted(_PRESETS)}")
    return replace(_PRESETS[environment], **overrides)  # type: ignore[arg-type]
