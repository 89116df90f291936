#!/usr/bin/env python3
"""CDK app: `python app.py` (= `make synth`) or `cdk synth|deploy --all` through cdk.json.

This is the only place that reads the environment. Inputs:

- `CLOUDSHOP_ENV` (or context `env`): dev | staging | prod, the configuration preset.
- `CDK_DEFAULT_ACCOUNT` / `CDK_DEFAULT_REGION`: set by the CDK CLI from your AWS profile. Without an
  account the templates are account-agnostic; the region defaults to eu-west-1 (`CLOUDSHOP_REGION`
  overrides both) and the AZs to `<region>a,b,c` (`CLOUDSHOP_AZS=az1,az2,az3`), so synth needs no
  credentials and no context lookups.
- `CLOUDSHOP_RESOURCE_PREFIX`: physical-name prefix (default `cloudshop-<env>-`).
- `CLOUDSHOP_ALARM_EMAIL`: subscribed to the alarm topic. `CLOUDSHOP_SES_SENDER`: verified SES sender.
- `CLOUDSHOP_JWT_KEY_GENERATION`: bump after putting a new signing key (cdk/README.md, rotation).
- `CLOUDSHOP_TRACE_SAMPLE_RATIO`: share of new traces every function and pod keeps (default 1: all).
- `CLOUDSHOP_CLUSTER_ADMIN_ROLE_ARNS`: comma-separated IAM roles given cluster-admin on EKS.
- `CLOUDSHOP_ANALYTICS_CLIENT_CIDRS`: comma-separated sources of the analytics link (the Terraform
  output `analytics_client_cidrs`); set, it turns MSK public access on (never on the first deploy,
  analytics/README.md).
- `CLOUDSHOP_GITHUB_REPOSITORY`: `owner/name` whose workflows may assume the delivery and deploy roles
  (default `cloudshop/cloudshop`, the repository ArgoCD syncs). `CLOUDSHOP_GITHUB_OIDC_PROVIDER_ARN`:
  the account's existing GitHub OIDC provider, for a second environment in the same account (unset:
  the stack creates it). See cdk/README.md, "GitHub delivery".
- `CLOUDSHOP_LAMBDA_ASSETS=placeholder`: synthesise without `make build` and `make web` output (templates
  for inspection and tests only; the dependency layer is empty, the storefront one placeholder page, and
  neither must be deployed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import cast

from aws_cdk import App, Validations
from cdk_nag import AwsSolutionsChecks

from cdk.config import EnvironmentName, preset
from cdk.deployment import build_deployment
from cloudshop.build import BuildError, prepare, prepare_storefront


def _optional(name: str) -> str | None:
    return os.environ.get(name) or None


def _cdk_json_context() -> dict[str, object]:
    # `python app.py` does not get cdk.json's context (only the CDK CLI passes it): read the feature
    # flags here so both ways synthesise the same templates.
    with (Path(__file__).parent / "cdk.json").open() as handle:
        return dict(json.load(handle)["context"])


def main() -> None:
    app = App(outdir=os.environ.get("CDK_OUTDIR", "cdk.out"), context=_cdk_json_context())
    for retired in ("CLOUDSHOP_GIT_REPO_URL", "CLOUDSHOP_GIT_REVISION"):
        if _optional(retired):
            raise SystemExit(
                f"{retired} is no longer read: ArgoCD's root and child Applications all name the repository "
                "and revision in eks_services/argocd (bootstrap/, apps/); change them there (cdk/README.md)."
            )
    environment = os.environ.get("CLOUDSHOP_ENV") or app.node.try_get_context("env") or "dev"
    overrides: dict[str, object] = {"account": _optional("CDK_DEFAULT_ACCOUNT")}
    if region := _optional("CLOUDSHOP_REGION") or _optional("CDK_DEFAULT_REGION"):
        overrides["region"] = region
    if azs := _optional("CLOUDSHOP_AZS"):
        overrides["availability_zones"] = tuple(az.strip() for az in azs.split(",") if az.strip())
    for variable, field in (
        ("CLOUDSHOP_ALARM_EMAIL", "alarm_email"),
        ("CLOUDSHOP_SES_SENDER", "ses_sender"),
        ("CLOUDSHOP_RESOURCE_PREFIX", "resource_prefix"),
        ("CLOUDSHOP_GITHUB_REPOSITORY", "github_repository"),
        ("CLOUDSHOP_GITHUB_OIDC_PROVIDER_ARN", "github_oidc_provider_arn"),
    ):
        if value := _optional(variable):
            overrides[field] = value
    if generation := _optional("CLOUDSHOP_JWT_KEY_GENERATION"):
        overrides["jwt_key_generation"] = int(generation)
    if ratio := _optional("CLOUDSHOP_TRACE_SAMPLE_RATIO"):
        overrides["trace_sample_ratio"] = float(ratio)
    if admins := _optional("CLOUDSHOP_CLUSTER_ADMIN_ROLE_ARNS"):
        overrides["cluster_admin_role_arns"] = tuple(a.strip() for a in admins.split(",") if a.strip())
    if cidrs := _optional("CLOUDSHOP_ANALYTICS_CLIENT_CIDRS"):
        overrides["analytics_client_cidrs"] = tuple(c.strip() for c in cidrs.split(",") if c.strip())
    config = preset(cast(EnvironmentName, environment), **overrides)

    placeholder = os.environ.get("CLOUDSHOP_LAMBDA_ASSETS") == "placeholder"
    try:
        build = prepare(allow_placeholder=placeholder)
        storefront = prepare_storefront(allow_placeholder=placeholder)
    except BuildError as exc:
        raise SystemExit(str(exc)) from None
    build_deployment(app, config=config, build=build, storefront=storefront)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()


if __name__ == "__main__":
    main()
