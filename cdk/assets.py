"""Lambda code and the shared dependency layer, from the directories `cloudshop.build` writes."""

from __future__ import annotations

from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from cloudshop.build import LambdaBuild

RUNTIME = lambda_.Runtime.PYTHON_3_11
ARCHITECTURE = lambda_.Architecture.X86_64

RUNTIME_REASON = (
    "The services target CPython 3.11 (pyproject requires-python, the wheels `make build` installs); "
    "moving the Lambda runtime is a project-wide upgrade, not an infrastructure setting."
)


class LambdaPackages:
    """Asset paths of one build: every `Code` and the dependency layer come from here."""

    def __init__(self, build: LambdaBuild) -> None:
        self.build = build

    def code(self, name: str) -> lambda_.Code:
        return lambda_.Code.from_asset(str(self.build.code(name)))

    def dependency_layer(self, scope: Construct, construct_id: str) -> lambda_.LayerVersion:
        """The runtime dependencies of pyproject.toml as a layer (one per stack that needs it)."""
        return lambda_.LayerVersion(
            scope,
            construct_id,
            code=lambda_.Code.from_asset(str(self.build.deps_layer)),
            compatible_runtimes=[RUNTIME],
            compatible_architectures=[ARCHITECTURE],
            description="cloudshop runtime dependencies ([project].dependencies)",
        )
