"""The Dataproc Terraform module, read with python-hcl2: inputs, secrets, IAM, network, and its fit
with the job and with the AWS side.

`terraform validate` needs the google provider from the Terraform registry, which this machine
cannot reach; `terraform fmt -check` needs no provider and runs when terraform is installed. The
module's `job_args` are evaluated in Python (`tests.analytics.terraform`) as the example calls it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import hcl2
import pytest

from analytics.job import build_parser
from analytics.transforms import RESULT_COLUMNS

pytestmark = pytest.mark.infra

TERRAFORM = Path(__file__).resolve().parents[2] / "analytics" / "terraform"
MODULE = TERRAFORM / "modules" / "dataproc-analytics"
EXAMPLE = TERRAFORM / "examples" / "basic"

# The Kafka side comes later (the second apply), the secrets are the module's own.
REQUIRED_INPUTS = {"project_id", "region", "package_path"}
PROJECT_ROLES = {
    "roles/dataproc.worker",
    "roles/bigquery.jobUser",
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
}


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def load(directory: Path) -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as handle:
            for key, blocks in hcl2.load(handle).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def named_blocks(blocks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {unquote(name): body for block in blocks for name, body in block.items()}


def resources(config: dict[str, list[Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for block in config.get("resource", []):
        for kind, named in block.items():
            for name, body in named.items():
                found[(unquote(kind), unquote(name))] = body
    return found


def locals_of(config: dict[str, list[Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block in config.get("locals", []):
        merged.update(block)
    return merged


@pytest.fixture(scope="module")
def module() -> dict[str, list[Any]]:
    return load(MODULE)


def test_the_module_requires_exactly_the_inputs_that_have_no_safe_default(module):
    variables = named_blocks(module["variable"])
    required = {name for name, body in variables.items() if "default" not in body}
    assert required == REQUIRED_INPUTS
    assert all(body.get("description") and body.get("type") for body in variables.values())


def test_no_secret_value_has_a_default_or_passes_through_terraform(module):
    variables = named_blocks(module["variable"])
    for name, body in variables.items():
        if re.search(r"password|token|credential|secret_id|private|api_key", name):
            assert "default" not in body, f"{name} must be required, never defaulted"
        assert body.get("sensitive") is not True or "default" not in body
    # Terraform makes the secrets but never writes or reads a version (so no value lands in the state);
    # outputs name the secrets by id only.
    text = "\n".join(path.read_text() for path in MODULE.glob("*.tf"))
    assert "google_secret_manager_secret_version" not in text and "secret_data" not in text
    for name, body in named_blocks(module["output"]).items():
        value = str(body.get("value"))
        assert "secret" not in value.lower() or (name == "kafka_secret_ids" and value.endswith(".secret_id}}"))


def test_the_service_account_gets_listed_least_privilege_roles(module):
    found = resources(module)
    local = locals_of(module)
    project_roles = set(re.findall(r'"(roles/[^"]+)"', local["project_roles"]))
    assert project_roles == PROJECT_ROLES
    assert found[("google_project_iam_member", "analytics")]["for_each"] == "${local.project_roles}"
    # Data access is scoped to the module's own bucket, dataset and the two secrets.
    assert unquote(found[("google_storage_bucket_iam_member", "analytics")]["role"]) == "roles/storage.objectAdmin"
    assert unquote(found[("google_bigquery_dataset_iam_member", "analytics")]["role"]) == "roles/bigquery.dataEditor"
    secret_binding = found[("google_secret_manager_secret_iam_member", "kafka")]
    assert unquote(secret_binding["role"]) == "roles/secretmanager.secretAccessor"
    assert secret_binding["for_each"] == "${google_secret_manager_secret.kafka}"
    every_role = set(project_roles) | {
        unquote(body["role"]) for (kind, _), body in found.items() if kind.endswith("_iam_member")
    }
    assert not every_role & {"roles/owner", "roles/editor", "roles/viewer"}
    assert not any(role.endswith(".admin") for role in every_role)


def test_the_cluster_runs_the_job_as_the_service_account_on_a_2_2_image(module):
    found = resources(module)
    variables = named_blocks(module["variable"])
    assert unquote(variables["image_version"]["default"]).startswith("2.2")
    config = found[("google_dataproc_cluster", "analytics")]["cluster_config"][0]
    gce = config["gce_cluster_config"][0]
    assert gce["service_account"] == "${google_service_account.analytics.email}"
    assert config["software_config"][0]["image_version"] == "${var.image_version}"
    # Spark 3.5 on the image: the Scala 2.12 connector of the same minor.
    assert re.fullmatch(
        r"org\.apache\.spark:spark-sql-kafka-0-10_2\.12:3\.5\.\d+", unquote(variables["spark_kafka_package"]["default"])
    )
    bucket = found[("google_storage_bucket", "analytics")]
    assert bucket["uniform_bucket_level_access"] is True
    assert unquote(bucket["public_access_prevention"]) == "enforced"


def test_every_flag_the_module_passes_is_a_flag_of_the_job(module):
    job_args = locals_of(module)["job_args"]
    flags = set(re.findall(r'\\?"(--[a-z-]+)\\?"', job_args))
    known = {option for action in build_parser()._actions for option in action.option_strings}
    assert flags, job_args
    assert flags <= known, flags - known
    assert {"--checkpoint-location", "--kafka-username-secret", "--kafka-password-secret"} <= flags


def test_the_bigquery_schema_is_the_result_schema_of_the_job():
    schema = json.loads((MODULE / "schema" / "order_windows.json").read_text())
    assert tuple(field["name"] for field in schema) == RESULT_COLUMNS
    revenue = next(field for field in schema if field["name"] == "revenue")
    assert (revenue["type"], revenue["mode"]) == ("RECORD", "REPEATED")
    assert [field["name"] for field in revenue["fields"]] == ["amount", "currency"]


def test_the_example_sets_every_required_input_of_the_module():
    example = load(EXAMPLE)
    (call,) = named_blocks(example["module"]).values()
    assert unquote(call["source"]) == "../../modules/dataproc-analytics"
    assert REQUIRED_INPUTS <= set(call)
    assert (EXAMPLE / "terraform.tfvars.example").exists()


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_terraform_files_are_formatted():
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(TERRAFORM)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the job's command line, evaluated -----------------------------------------------------------------

BOOTSTRAP = "b-1-public.cloudshopdevevents.abc123.c2.kafka.eu-west-1.amazonaws.com:9196"


def evaluated(**variables: Any) -> dict[str, Any]:
    from tests.analytics.terraform import module_locals

    return module_locals(EXAMPLE, variables=variables, names=("job_args", "link_ready", "secret_versions"))


def test_the_job_args_are_a_command_line_the_job_accepts():
    from analytics.job import validate

    args = evaluated(msk_scram_bootstrap_servers=BOOTSTRAP)["job_args"]
    parser = build_parser()
    parsed = parser.parse_args(args)
    validate(parsed, parser)  # exits on a command line the job refuses
    assert parsed.kafka_bootstrap_servers == BOOTSTRAP
    assert (parsed.kafka_security_protocol, parsed.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert parsed.sink == ["kafka", "parquet", "bigquery"]
    assert parsed.checkpoint_location.startswith("gs://my-gcp-project-cloudshop-analytics/")


def test_the_job_gets_secret_version_names_of_the_modules_own_secrets_never_values():
    values = evaluated(msk_scram_bootstrap_servers=BOOTSTRAP)
    args = values["job_args"]
    for key in ("username", "password"):
        name = args[args.index(f"--kafka-{key}-secret") + 1]
        assert name == f"projects/my-gcp-project/secrets/cloudshop-analytics-kafka-{key}/versions/latest"
        assert values["secret_versions"][key] == name
    found = resources(load(MODULE))
    assert unquote(found[("google_secret_manager_secret", "kafka")]["secret_id"]) == "${var.name}-kafka-${each.key}"


def test_the_cluster_and_job_wait_for_the_brokers_and_the_first_apply_makes_the_rest():
    assert evaluated()["link_ready"] is False
    assert evaluated(msk_scram_bootstrap_servers=BOOTSTRAP)["link_ready"] is True
    found = resources(load(MODULE))
    for kind in ("google_dataproc_cluster", "google_dataproc_job"):
        assert found[(kind, "analytics")]["count"] == "${local.link_ready ? 1 : 0}"
    # What the AWS side needs first exists from the first apply on.
    assert found[("google_compute_address", "nat")]["count"] == "${var.nat_ip_count}"
    for key in [("google_compute_router_nat", "analytics"), ("google_secret_manager_secret", "kafka")]:
        assert "count" not in found[key]


def test_the_cluster_has_no_external_ip_and_leaves_through_cloud_nat_on_reserved_addresses(module):
    found = resources(module)
    gce = found[("google_dataproc_cluster", "analytics")]["cluster_config"][0]["gce_cluster_config"][0]
    assert gce["internal_ip_only"] is True
    assert gce["subnetwork"] == "${google_compute_subnetwork.analytics.self_link}"
    assert found[("google_compute_subnetwork", "analytics")]["private_ip_google_access"] is True
    nat = found[("google_compute_router_nat", "analytics")]
    assert unquote(nat["nat_ip_allocate_option"]) == "MANUAL_ONLY"
    assert nat["nat_ips"] == "${google_compute_address.nat[*].self_link}"
    assert nat["subnetwork"][0]["name"] == "${google_compute_subnetwork.analytics.id}"
    outputs = named_blocks(module["output"])
    assert outputs["nat_ip_addresses"]["value"] == "${google_compute_address.nat[*].address}"


def test_egress_is_kafkas_public_scram_port_https_and_the_subnet_only(module):
    from cdk.streaming import PUBLIC_SCRAM_PORT

    found = resources(module)
    variables = named_blocks(module["variable"])
    assert variables["kafka_port"]["default"] == PUBLIC_SCRAM_PORT == 9196
    firewalls = {name: body for (kind, name), body in found.items() if kind == "google_compute_firewall"}
    allowed = {
        name: [(unquote(rule["protocol"]), [unquote(p) for p in rule.get("ports", [])]) for rule in body["allow"]]
        for name, body in firewalls.items()
        if unquote(body["direction"]) == "EGRESS" and "allow" in body
    }
    assert allowed == {
        "egress_internal": [("all", [])],
        "egress_kafka": [("tcp", ["${tostring(var.kafka_port)}"])],
        "egress_https": [("tcp", ["443"])],
    }
    deny = firewalls["deny_egress"]
    assert unquote(deny["direction"]) == "EGRESS" and unquote(deny["deny"][0]["protocol"]) == "all"
    assert deny["priority"] > max(body["priority"] for name, body in firewalls.items() if name != "deny_egress")
    ingress = [body for body in firewalls.values() if unquote(body["direction"]) == "INGRESS"]
    assert [body["source_ranges"] for body in ingress] == [["${var.subnet_cidr}"]]


def test_the_example_reaches_the_aws_side_through_the_cdk_outputs_and_back_through_the_nat_cidrs():
    example = load(EXAMPLE)
    outputs = named_blocks(example["output"])
    assert "analytics_client_cidrs" in outputs and "/32" in outputs["analytics_client_cidrs"]["value"]
    assert "gcloud secrets versions add" in outputs["copy_kafka_credentials"]["value"]
    (call,) = named_blocks(example["module"]).values()
    assert call["kafka_bootstrap_servers"] == "${var.msk_scram_bootstrap_servers}"
    assert call["deletion_protection"] == "${var.deletion_protection}"


def test_deletion_protection_guards_the_table_and_the_bucket_together(module):
    found = resources(module)
    assert found[("google_bigquery_table", "windows")]["deletion_protection"] == "${var.deletion_protection}"
    assert found[("google_storage_bucket", "analytics")]["force_destroy"] == "${!var.deletion_protection}"
