"""Service settings as environment variables: the contract of `cloudshop.settings.Settings`.

Every name produced here is a Settings field (upper-cased) or a Powertools variable for Lambdas; the
tests check it against `Settings.model_fields`. Lambdas and the EKS ConfigMap get their values here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from cdk.access import DataResources, ServiceAccess, internal_token_arns
from cdk.config import DeploymentConfig
from cloudshop.estate import ESTATE, ServiceName
from cloudshop.settings import resource_settings


def service_settings(
    service: ServiceName,
    access: ServiceAccess,
    *,
    config: DeploymentConfig,
    data: DataResources,
    database_url: str | None,
    kafka_bootstrap_servers: str | None = None,
) -> dict[str, str]:
    """The settings one service needs. `database_url` is the proxy's for Lambdas, the instance's for pods."""
    env = {
        "SERVICE_NAME": service,
        "ENVIRONMENT": config.environment,
        "LOG_LEVEL": "INFO",
        **resource_settings(config.prefix),
        "JWT_PUBLIC_KEY": data.auth.public_key_pem,
        "TRACE_SAMPLE_RATIO": f"{config.trace_sample_ratio:g}",
    }
    if access.internal_token:
        env["INTERNAL_TOKEN_SECRET_ARNS"] = json.dumps(internal_token_arns(service, data=data), sort_keys=True)
    if access.send_email:
        env["SES_SENDER"] = config.ses_sender
    for name in dict.fromkeys(access.send_queues + access.consume_queues):
        env[ESTATE.queue(name).settings_field.upper()] = data.queues[name].queue_url
    if access.database:
        if database_url is None:
            raise ValueError(f"{service} needs the database but no DATABASE_URL was given")
        env["DATABASE_URL"] = database_url
        # The service's own role (created by the migration step), never the master user.
        env["DATABASE_SECRET_ARN"] = data.database.role_secrets[service].secret_arn
    if access.signing_key:
        env["JWT_PRIVATE_KEY_SECRET_ARN"] = data.auth.signing_key.secret_arn
    if access.produce_topics or access.consume_topics:
        if kafka_bootstrap_servers is None:
            raise ValueError(f"{service} uses Kafka but no bootstrap servers were given")
        env["KAFKA_BOOTSTRAP_SERVERS"] = kafka_bootstrap_servers
        env["KAFKA_SECURITY_PROTOCOL"] = "SASL_SSL"
        env["KAFKA_SASL_MECHANISM"] = "AWS_MSK_IAM"
    return env


# What each pod sets itself (its Deployment) or takes from git (the overlay), never from CDK.
POD_OWN_SETTINGS = frozenset({"SERVICE_NAME", "LOG_LEVEL"})
# What differs between the workloads of a namespace by design: each workload's own ConfigMap
# (`cloudshop-aws-<workload>`) carries it, so no pod finds the secrets of another's pairs.
WORKLOAD_OWN_SETTINGS = frozenset({"INTERNAL_TOKEN_SECRET_ARNS"})


def workload_pod_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """The `cloudshop-aws-<workload>` ConfigMap: the settings only this workload's pods may see."""
    return {name: value for name, value in settings.items() if name in WORKLOAD_OWN_SETTINGS}


def shared_pod_settings(per_workload: Mapping[str, Mapping[str, str]]) -> dict[str, str]:
    """The `cloudshop-aws` ConfigMap of one namespace: the union of its workloads' settings, less
    those each workload keeps to itself (`WORKLOAD_OWN_SETTINGS`, `workload_pod_settings`).

    Every pod of the namespace reads all of it, so a value must agree between workloads, and a secret
    named by ARN must be one every workload may read (`load_secrets` reads each ARN it finds at
    start-up, and a pod without the grant would fail to start).
    """
    shared: dict[str, str] = {}
    for workload, settings in per_workload.items():
        for name, value in settings.items():
            if name in POD_OWN_SETTINGS or name in WORKLOAD_OWN_SETTINGS:
                continue
            if name in shared and shared[name] != value:
                raise ValueError(f"{name} differs between the workloads of one namespace ({workload})")
            shared[name] = value
    for name in shared:
        if name.endswith("_SECRET_ARN"):
            lacking = sorted(w for w, settings in per_workload.items() if name not in settings)
            if lacking:
                raise ValueError(f"{name} would reach {lacking}, which may not read that secret")
    return shared
