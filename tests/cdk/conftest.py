"""One synthesis of the whole CDK app per test session, shared by every test module here.

The app is built exactly as `app.py` builds it (`cdk.deployment.build_deployment`, cdk.json's
context, cdk-nag's AwsSolutionsChecks), for the `dev` preset, with a placeholder dependency layer so
no test ever downloads wheels. Templates are read from the cloud assembly once and wrapped in
`aws_cdk.assertions.Template` per stack.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

REPO = Path(__file__).resolve().parents[2]
STACKS = ("Network", "Data", "Streaming", "Api", "Eks", "Monitoring")


@dataclass
class Synthesis:
    """The synthesised app: the Python constructs, the template dicts and the nag report."""

    deployment: Any
    config: Any
    outdir: Path
    templates: dict[str, dict[str, Any]]
    template_files: dict[str, Path]
    nag_violations: list[dict[str, Any]]
    seconds: float

    def template(self, stack: str) -> Any:
        from aws_cdk.assertions import Template

        cache = self.__dict__.setdefault("_assertions", {})
        if stack not in cache:
            cache[stack] = Template.from_json(self.templates[stack])
        return cache[stack]

    def resources(self, stack: str, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.templates[stack]["Resources"].items()
            if resource["Type"] == resource_type
        }

    def all_resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for stack in STACKS:
            found.update({f"{stack}/{k}": v for k, v in self.resources(stack, resource_type).items()})
        return found


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesis:
    from aws_cdk import App, Validations
    from cdk_nag import AwsSolutionsChecks

    from cdk.config import preset
    from cdk.deployment import build_deployment
    from cloudshop.build import prepare, prepare_storefront

    started = time.monotonic()
    outdir = tmp_path_factory.mktemp("cdk.out")
    build = prepare(tmp_path_factory.mktemp("lambda-build"), allow_placeholder=True)
    storefront = prepare_storefront(tmp_path_factory.mktemp("storefront-build"), allow_placeholder=True)
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    app = App(outdir=str(outdir), context=context)
    config = preset("dev")
    deployment = build_deployment(app, config=config, build=build, storefront=storefront)
    Validations.of(app).add_plugins(AwsSolutionsChecks(app, write_suppressions_to_cloud_formation=True))
    try:
        app.synth()
    except RuntimeError as exc:
        # cdk-nag findings fail synth; the report says which, and test_nag asserts on it.
        if "ValidationFailed" not in str(exc):
            raise
    report_file = outdir / "validation-report.json"
    violations: list[dict[str, Any]] = []
    if report_file.exists():
        for plugin in json.loads(report_file.read_text())["pluginReports"]:
            if plugin["pluginName"] == "AwsSolutions":
                violations += plugin["violations"]
    files = {name: outdir / f"{config.stack_prefix}-{name}.template.json" for name in STACKS}
    templates = {name: json.loads(path.read_text()) for name, path in files.items()}
    return Synthesis(
        deployment=deployment,
        config=config,
        outdir=outdir,
        templates=templates,
        template_files=files,
        nag_violations=violations,
        seconds=time.monotonic() - started,
    )


@pytest.fixture(scope="session")
def find(synth: Synthesis) -> Callable[[str, str, dict[str, Any]], list[dict[str, Any]]]:
    """`find(stack, type, props)`: the resources of `type` whose Properties contain `props` (shallow)."""

    def finder(stack: str, resource_type: str, props: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            r
            for r in synth.resources(stack, resource_type).values()
            if all(r.get("Properties", {}).get(k) == v for k, v in props.items())
        ]

    return finder
