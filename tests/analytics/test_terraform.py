"""The Dataproc Terraform module, read with python-hcl2: inputs, secrets, IAM, and its fit with the job.

`terraform validate` needs the google provider from the Terraform registry, which this machine
cannot reach; `terraform fmt -check` needs no provider and runs when terraform is installed.
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

REQUIRED_INPUTS = {
    "project_id",
    "region",
    "package_path",
    "kafka_bootstrap_servers",
    "kafka_username_secret_id",
    "kafka_password_secret_id",
}
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
    # Terraform names the secrets but never reads their payload (so no value lands in the state).
    text = "\n".join(path.read_text() for path in MODULE.glob("*.tf"))
    assert "google_secret_manager_secret_version" not in text
    for body in named_blocks(module["output"]).values():
        assert "secret" not in str(body.get("value")).lower()


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
    assert secret_binding["for_each"] == "${local.secret_ids}"
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
