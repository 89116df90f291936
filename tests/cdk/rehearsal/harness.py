"""`Rehearsal`: one CDK environment deployed onto local servers and run, start to stop.

Start-up, in the order a real deploy and its first traffic follow:
1. moto (Secrets Manager, S3, SQS, SES) and dynalite (DynamoDB) start; Kafka is the caller's broker;
2. the stacks deploy in dependency order onto them (`estate.LocalEstate`): PostgreSQL starts when the
   RDS instance is created, and the custom resources (the JWT key pair, the schema migration) run
   their own handlers in their own Lambda processes;
3. the functions behind the HTTP API and the event source mappings start, then the API serves;
4. the cluster's pods start with the overlay's and CDK's configuration, and must pass their readiness
   probes; the event source mappings (SQS queues, MSK topics) start polling.
`stop()` undoes all of it; every process it started dies with it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import boto3
import httpx

from cloudshop.local.servers import DynaliteServer, KafkaServer, MotoServer, PostgresServer
from tests.cdk.generated import Templates
from tests.cdk.rehearsal.cloudformation import Deployment
from tests.cdk.rehearsal.cluster import Cluster
from tests.cdk.rehearsal.estate import DUMMY_CREDENTIALS, LocalEstate
from tests.cdk.rehearsal.event_sources import KafkaEventSource, SqsEventSource
from tests.cdk.rehearsal.gateway import HttpApi
from tests.cdk.rehearsal.lambdas import FunctionSpec, LambdaService
from tests.cdk.rehearsal.network import NetworkMap
from tests.cdk.rehearsal.processes import RehearsalError

# The account of the rehearsal; it appears only inside ARNs.
ACCOUNT = "111122223333"
CLI_TIMEOUT = 120.0


class Rehearsal:
    def __init__(
        self,
        templates: Templates,
        *,
        assets: Path,
        cluster_objects: list[dict[str, Any]],
        kafka: KafkaServer,
        work: Path,
    ) -> None:
        self.templates = templates
        self.assets = assets
        self.cluster_objects = cluster_objects
        self.kafka = kafka
        self.work = work
        self.region = templates.config.region
        self.network = NetworkMap()
        self.deployment = Deployment(templates, account=ACCOUNT)
        self.moto = MotoServer(data_dir=work / "moto")
        self.dynamodb = DynaliteServer(work / "dynalite")
        self._stack: contextlib.ExitStack = contextlib.ExitStack()
        self.estate: LocalEstate | None = None
        self.lambdas: LambdaService | None = None
        self.apis: list[HttpApi] = []
        self.cluster: Cluster | None = None
        self.event_sources: list[SqsEventSource | KafkaEventSource] = []

    # --- start and stop --------------------------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def local_env(self) -> dict[str, str]:
        """What every process gets besides its own environment: the local AWS APIs and dummy credentials
        (in the cloud, AWS's endpoints and the execution role / Pod Identity)."""
        return {
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto.endpoint_url,
            "AWS_ENDPOINT_URL_DYNAMODB": self.dynamodb.endpoint_url,
            # cloudshop's own setting for the same endpoint (`Settings.dynamodb_endpoint_url`).
            "DYNAMODB_ENDPOINT_URL": self.dynamodb.endpoint_url,
        }

    def start(self) -> None:
        for server in (self.moto, self.dynamodb):
            self._stack.callback(server.stop)
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(server.start) for server in (self.moto, self.dynamodb)]:
                future.result()

        self.lambdas = LambdaService(work=self.work, network=self.network, local_env=self.local_env, region=self.region)
        self._stack.callback(self.lambdas.stop)
        self.lambdas.serve()
        self.estate = LocalEstate(
            self.deployment,
            moto_url=self.moto.endpoint_url,
            dynamodb_url=self.dynamodb.endpoint_url,
            kafka=self.kafka,
            network=self.network,
            lambdas=self.lambdas,
            assets=self.assets,
            work=self.work,
        )
        self._stack.callback(self.estate.stop)
        self.deployment.deploy(self.estate.create)

        for api in self.deployment.of_type("AWS::ApiGatewayV2::Api"):
            http_api = HttpApi(
                self.deployment,
                api,
                lambdas=self.lambdas,
                listener_url=self.listener_url,
                port=self.estate.api_ports[api.logical_id],
            )
            self._stack.callback(http_api.stop)
            self.apis.append(http_api)
        # The functions traffic reaches, started together rather than on their first request.
        self.lambdas.start(self._traffic_functions())
        for http_api in self.apis:
            http_api.serve()

        objects = self.cluster_objects + [applied.object for applied in self.estate.applied]
        self.cluster = Cluster(objects, network=self.network, local_env=self.local_env, work=self.work)
        self._stack.callback(self.cluster.stop)
        self.cluster.start()

        sqs = boto3.session.Session(
            aws_access_key_id="rehearsal", aws_secret_access_key="rehearsal", region_name=self.region
        ).client("sqs", endpoint_url=self.moto.endpoint_url)
        for mapping in self.deployment.of_type("AWS::Lambda::EventSourceMapping"):
            source: SqsEventSource | KafkaEventSource
            if ":kafka:" in str(self.deployment.prop(mapping, "EventSourceArn")):
                source = KafkaEventSource(self.deployment, mapping, lambdas=self.lambdas, kafka=self.kafka)
            else:
                source = SqsEventSource(self.deployment, mapping, lambdas=self.lambdas, sqs=sqs)
            self._stack.callback(source.stop)
            self.event_sources.append(source.start())

    def stop(self) -> None:
        self._stack.close()

    def _traffic_functions(self) -> list[FunctionSpec]:
        assert self.lambdas is not None
        arns = {
            arn
            for api in self.apis
            for route in api.routes
            for arn in (route.integration.function_arn, route.authorizer.function_arn if route.authorizer else None)
            if arn
        }
        arns |= {
            str(self.deployment.prop(m, "FunctionName"))
            for m in self.deployment.of_type("AWS::Lambda::EventSourceMapping")
        }
        return list({self.lambdas.lookup(arn).name: self.lambdas.lookup(arn) for arn in arns}.values())

    def listener_url(self, listener_arn: str) -> str:
        """An HTTP_PROXY integration's listener -> its forward action's target group -> the pods behind it."""
        assert self.cluster is not None
        listener = self.deployment.by_physical_id("AWS::ElasticLoadBalancingV2::Listener", listener_arn)
        actions = self.deployment.prop(listener, "DefaultActions")
        forward = next((a for a in actions if a.get("Type") == "forward"), None)
        if forward is None:
            raise RehearsalError(f"{listener} forwards nowhere: {actions}")
        target_group = forward.get("TargetGroupArn") or forward["ForwardConfig"]["TargetGroups"][0]["TargetGroupArn"]
        return self.cluster.target_group_url(target_group)

    # --- for the test ----------------------------------------------------------------------------------
    @property
    def api(self) -> HttpApi:
        (api,) = self.apis
        return api

    @property
    def database(self) -> PostgresServer:
        """The cluster that stands in for the RDS instance."""
        assert self.estate is not None
        (database,) = self.estate.databases.values()
        return database

    def client(self) -> httpx.Client:
        """A client of the HTTP API, at the URL the stack outputs (through the network map)."""
        return httpx.Client(base_url=self.api.url, timeout=60.0)

    def cli(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`cloudshop <args>` as an operator runs it against the account: boto3 reaches Lambda at the
        rehearsal's Invoke API (`AWS_ENDPOINT_URL_LAMBDA`), everything else at moto."""
        assert self.lambdas is not None
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.work),
            "AWS_REGION": self.region,
            **DUMMY_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.moto.endpoint_url,
            "AWS_ENDPOINT_URL_LAMBDA": self.lambdas.endpoint_url,
        }
        try:
            return subprocess.run(
                [sys.executable, "-m", "cloudshop.cli", *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                cwd=self.work,
                timeout=CLI_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RehearsalError(
                f"`cloudshop {' '.join(args)}` took over {CLI_TIMEOUT:.0f}s\n{self.evidence()}"
            ) from exc

    def function(self, logical_suffix: str) -> FunctionSpec:
        assert self.lambdas is not None
        found = [s for s in self.lambdas.functions.values() if s.logical_id.startswith(logical_suffix)]
        if len(found) != 1:
            raise RehearsalError(f"expected one function {logical_suffix}*, found {[str(s) for s in found]}")
        return found[0]

    def evidence(self) -> str:
        """Everything that helps explain a failure: logs of every process, event source errors, the network map."""
        parts = [f"network map: {self.network.routes()}"]
        for source in self.event_sources:
            if source.errors:
                parts.append(f"event source {source.function}: {len(source.errors)} errors, last:\n{source.errors[-1]}")
        if self.lambdas is not None:
            parts.append(self.lambdas.logs())
        if self.cluster is not None:
            parts.append(self.cluster.evidence())
        return "\n".join(parts)
