"""What each resource of the templates becomes on one machine, created from its own properties.

`LocalEstate.create` is the `create` of `Deployment.deploy`: it is called once per resource, in
dependency order, and records what CloudFormation would (physical id, `Fn::GetAtt` attributes).

- DynamoDB tables on dynalite; SQS queues, S3 buckets and Secrets Manager secrets on moto, with
  `GenerateSecretString` carried out by Secrets Manager's own GetRandomPassword.
- The RDS instance is a PostgreSQL cluster whose only user is the master user, with the password of
  the master secret (the template's dynamic reference), TLS only. RDS Proxy is an address: the
  network map sends its endpoint to the instance its target group names.
- MSK: the brokers are addresses of the local Kafka broker; topics are created on it.
- Custom resources run their own handler: CloudFormation's protocol (an event with a `ResponseURL`,
  answered by a PUT the harness receives) or, behind the CDK Provider framework, the user function
  invoked directly with the framework's event, its return value the answer. `Custom::AWS` (an SDK
  call) is answered from the local estate; the manifests CDK applies to the cluster are collected.
- Lambda functions and layers are registered with the `LambdaService`; API Gateway, load balancer and
  event source mapping resources get identifiers, and the harness serves them from the template.
"""

from __future__ import annotations

import fnmatch
import json
import mimetypes
import secrets
import string
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cloudshop.local.servers import KafkaServer, PostgresServer
from tests.cdk.rehearsal.cloudformation import Deployment, NotEmulated, Resource
from tests.cdk.rehearsal.lambdas import FunctionSpec, LambdaService, asset_directory
from tests.cdk.rehearsal.network import Destination, NetworkMap
from tests.cdk.rehearsal.processes import HOST, LoopbackServer, RehearsalError, free_port

KUBERNETES_RESOURCE = "Custom::AWSCDK-EKS-KubernetesResource"
HELM_CHART = "Custom::AWSCDK-EKS-HelmChart"
POSTGRES_PORT = 5432
MSK_IAM_PORT = 9098
SQS_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
)
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "rehearsal",
    "AWS_SECRET_ACCESS_KEY": "rehearsal",
    "AWS_SESSION_TOKEN": "rehearsal",
}


def _random_id(length: int = 10) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))


def _stringify(value: Any) -> Any:
    """CloudFormation hands custom resources every scalar property as a string."""
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stringify(v) for v in value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


@dataclass
class AppliedObject:
    """A Kubernetes object CDK applies (`Custom::AWSCDK-EKS-KubernetesResource`), evaluated."""

    resource: Resource
    object: dict[str, Any]


@dataclass
class ProxyLogin:
    """RDS Proxy admits only the database users of the secrets in its `Auth` list."""

    proxy: Resource
    endpoint: str
    secret_arns: set[str] = field(default_factory=set)


class CloudFormationResponses:
    """Receives the `PUT <ResponseURL>` answers of custom resource handlers (CloudFormation's side)."""

    def __init__(self) -> None:
        self._answers: dict[str, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        answers, arrived = self._answers, self._arrived

        class Receiver(BaseHTTPRequestHandler):
            def log_message(self, format: str, *values: Any) -> None:
                pass

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with arrived:
                    answers[self.path.strip("/")] = json.loads(body)
                    arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = LoopbackServer(Receiver).start()

    def url(self, token: str) -> str:
        return f"{self._server.url}/{token}"

    def wait(self, token: str, *, timeout: float, what: str, evidence: Callable[[], str]) -> dict[str, Any]:
        with self._arrived:
            if not self._arrived.wait_for(lambda: token in self._answers, timeout=timeout):
                raise RehearsalError(f"{what} never answered CloudFormation within {timeout:.0f}s\n{evidence()}")
            return self._answers.pop(token)

    def stop(self) -> None:
        self._server.stop()


class LocalEstate:
    def __init__(
        self,
        deployment: Deployment,
        *,
        moto_url: str,
        dynamodb_url: str,
        kafka: KafkaServer,
        network: NetworkMap,
        lambdas: LambdaService,
        assets: Path,
        work: Path,
    ) -> None:
        self.deployment = deployment
        self.region = deployment.region
        self.kafka = kafka
        self.network = network
        self.lambdas = lambdas
        self.assets = assets
        self.work = work
        session = boto3.session.Session(
            aws_access_key_id="rehearsal", aws_secret_access_key="rehearsal", region_name=self.region
        )
        config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=3, read_timeout=30)
        self.sqs = session.client("sqs", endpoint_url=moto_url, config=config)
        self.s3 = session.client("s3", endpoint_url=moto_url, config=config)
        self.secretsmanager = session.client("secretsmanager", endpoint_url=moto_url, config=config)
        self.dynamodb = session.client("dynamodb", endpoint_url=dynamodb_url, config=config)
        deployment.read_secret = lambda secret_id: str(
            self.secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"]
        )
        self.databases: dict[str, PostgresServer] = {}
        self.proxies: dict[str, ProxyLogin] = {}
        self.applied: list[AppliedObject] = []
        self.api_ports: dict[str, int] = {}
        self.responses = CloudFormationResponses()
        self.layers: dict[str, Path] = {}
        self._creators: dict[str, Callable[[Resource], None]] = {
            "AWS::KMS::Key": self._kms_key,
            "AWS::DynamoDB::Table": self._table,
            "AWS::SQS::Queue": self._queue,
            "AWS::S3::Bucket": self._bucket,
            "AWS::SecretsManager::Secret": self._secret,
            "AWS::SecretsManager::SecretTargetAttachment": self._secret_attachment,
            "AWS::RDS::DBInstance": self._database,
            "AWS::RDS::DBProxy": self._proxy,
            "AWS::RDS::DBProxyTargetGroup": self._proxy_target,
            "AWS::MSK::Cluster": self._kafka_cluster,
            "AWS::MSK::Topic": self._kafka_topic,
            "AWS::Lambda::LayerVersion": self._layer,
            "AWS::Lambda::Function": self._function,
            "AWS::ApiGatewayV2::Api": self._http_api,
            "AWS::ElasticLoadBalancingV2::LoadBalancer": self._load_balancer,
            "AWS::ElasticLoadBalancingV2::Listener": self._listener,
            "AWS::ElasticLoadBalancingV2::TargetGroup": self._target_group,
            "Custom::AWS": self._sdk_call,
            "Custom::KafkaAcls": self._kafka_acls,
            "Custom::CDKBucketDeployment": self._bucket_deployment,
            "Custom::AWSCDKCfnJson": self._cfn_json,
            KUBERNETES_RESOURCE: self._kubernetes_manifest,
            HELM_CHART: self._helm_chart,
        }
        # Identifiers API Gateway makes up for the resources it creates.
        for resource_type in ("Authorizer", "Integration", "Route", "Stage", "VpcLink"):
            self._creators[f"AWS::ApiGatewayV2::{resource_type}"] = self._api_gateway_child

    # --- dispatch ----------------------------------------------------------------------------------
    def create(self, resource: Resource) -> None:
        creator = self._creators.get(resource.type)
        if creator is not None:
            creator(resource)
        elif resource.type.startswith("Custom::") or resource.type == "AWS::CloudFormation::CustomResource":
            self._custom_resource(resource)

    def stop(self) -> None:
        self.responses.stop()
        for database in self.databases.values():
            database.stop()

    def _name(self, resource: Resource, prop: str, **limits: Any) -> str:
        name = self.deployment.prop(resource, prop, None)
        return str(name) if name is not None else self.deployment.generated_name(resource, **limits)

    # --- data ------------------------------------------------------------------------------------------
    def _kms_key(self, resource: Resource) -> None:
        resource.physical_id = str(uuid.uuid4())
        resource.attributes.update(
            Arn=self.deployment.arn("kms", f"key/{resource.physical_id}"), KeyId=resource.physical_id
        )

    def _table(self, resource: Resource) -> None:
        prop = self.deployment.prop
        name = self._name(resource, "TableName", max_length=255)
        definition: dict[str, Any] = {
            "TableName": name,
            "KeySchema": prop(resource, "KeySchema"),
            "AttributeDefinitions": prop(resource, "AttributeDefinitions"),
            "BillingMode": prop(resource, "BillingMode", "PROVISIONED"),
        }
        if definition["BillingMode"] == "PROVISIONED":
            definition["ProvisionedThroughput"] = prop(resource, "ProvisionedThroughput")
        for indexes in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
            found = prop(resource, indexes, None)
            if found:
                definition[indexes] = [
                    {
                        k: v
                        for k, v in index.items()
                        if k in ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput")
                    }
                    for index in found
                ]
        self.dynamodb.create_table(**definition)
        ttl = prop(resource, "TimeToLiveSpecification", None)
        if ttl and ttl.get("Enabled"):
            try:
                self.dynamodb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
            except ClientError as exc:
                # dynalite has no TTL expiry; sessions check their expiry on read (README).
                if exc.response["Error"]["Code"] != "UnknownOperationException":
                    raise
        resource.physical_id = name
        resource.attributes["Arn"] = self.deployment.arn("dynamodb", f"table/{name}")

    def _queue(self, resource: Resource) -> None:
        prop = self.deployment.prop
        fifo = bool(prop(resource, "FifoQueue", False))
        name = self._name(resource, "QueueName", max_length=75 if fifo else 80)
        if fifo and not name.endswith(".fifo"):
            name += ".fifo"
        attributes: dict[str, str] = {}
        for key in SQS_ATTRIBUTES:
            value = prop(resource, key, None)
            if value is not None:
                attributes[key] = _stringify(value)
        for policy in ("RedrivePolicy", "RedriveAllowPolicy"):
            value = prop(resource, policy, None)
            if value is not None:
                attributes[policy] = value if isinstance(value, str) else json.dumps(value)
        url = self.sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        resource.physical_id = url
        resource.attributes.update(Arn=arn, QueueName=name, QueueUrl=url)

    def _bucket(self, resource: Resource) -> None:
        name = self._name(resource, "BucketName", max_length=63, lowercase=True)
        self.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": self.region})
        versioning = self.deployment.prop(resource, "VersioningConfiguration", None)
        if versioning:
            self.s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": versioning["Status"]})
        resource.physical_id = name
        resource.attributes.update(
            Arn=f"arn:aws:s3:::{name}",
            DomainName=f"{name}.s3.amazonaws.com",
            RegionalDomainName=f"{name}.s3.{self.region}.amazonaws.com",
        )

    def _bucket_deployment(self, resource: Resource) -> None:
        """aws-cdk-lib's BucketDeployment (the storefront's upload). Its handler runs the AWS CLI from a
        layer that is not here, so the copy it makes is made here instead: every file of the source asset,
        filtered as `aws s3 sync` filters (excludes, then includes; the last match decides), into the
        destination bucket with the deployment's system metadata."""
        prop = self.deployment.prop
        bucket = str(prop(resource, "DestinationBucketName"))
        prefix = str(prop(resource, "DestinationBucketKeyPrefix", ""))
        filters = [(False, f) for f in prop(resource, "Exclude", [])] + [
            (True, f) for f in prop(resource, "Include", [])
        ]
        metadata = prop(resource, "SystemMetadata", {})
        extra = {"CacheControl": metadata["cache-control"]} if "cache-control" in metadata else {}
        for key in prop(resource, "SourceObjectKeys"):
            root = asset_directory(self.assets, str(key), work=self.work)
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                name = path.relative_to(root).as_posix()
                included = True
                for include, pattern in filters:
                    if fnmatch.fnmatchcase(name, pattern):
                        included = include
                if included:
                    content_type = mimetypes.guess_type(name)[0] or "binary/octet-stream"
                    self.s3.put_object(
                        Bucket=bucket, Key=prefix + name, Body=path.read_bytes(), ContentType=content_type, **extra
                    )
        resource.physical_id = f"aws.cdk.s3deployment.{uuid.uuid4()}"

    def _secret(self, resource: Resource) -> None:
        prop = self.deployment.prop
        name = self._name(resource, "Name", max_length=512)
        value = prop(resource, "SecretString", None)
        generate = prop(resource, "GenerateSecretString", None)
        if value is None and generate is not None:
            value = self._generate_secret_string(generate)
        if value is None:
            raise NotEmulated(f"{resource}: neither SecretString nor GenerateSecretString")
        arn = self.secretsmanager.create_secret(Name=name, SecretString=value)["ARN"]
        resource.physical_id = arn
        resource.attributes["Id"] = arn

    def _generate_secret_string(self, spec: dict[str, Any]) -> str:
        """`GenerateSecretString` as Secrets Manager does it: a random password (GetRandomPassword with
        the same options), alone or under `GenerateStringKey` in the `SecretStringTemplate` JSON."""
        options = {
            key: spec[key]
            for key in (
                "PasswordLength",
                "ExcludeCharacters",
                "ExcludeNumbers",
                "ExcludePunctuation",
                "ExcludeUppercase",
                "ExcludeLowercase",
                "IncludeSpace",
                "RequireEachIncludedType",
            )
            if key in spec
        }
        password = self.secretsmanager.get_random_password(**options)["RandomPassword"]
        template, key = spec.get("SecretStringTemplate"), spec.get("GenerateStringKey")
        if (template is None) != (key is None):
            raise RehearsalError(
                "GenerateSecretString needs both SecretStringTemplate and GenerateStringKey, or neither"
            )
        if template is None:
            return password
        document = json.loads(template)
        document[key] = password
        return json.dumps(document)

    def _secret_attachment(self, resource: Resource) -> None:
        """Secrets Manager adds the instance's connection details to the secret (what rotation logs in with)."""
        secret_id = self.deployment.prop(resource, "SecretId")
        target_type = self.deployment.prop(resource, "TargetType")
        if target_type != "AWS::RDS::DBInstance":
            raise NotEmulated(f"{resource}: target type {target_type}")
        instance = self.deployment.by_physical_id(target_type, self.deployment.prop(resource, "TargetId"))
        document = json.loads(self.secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"])
        document.update(
            engine="postgres",
            host=instance.attributes["Endpoint.Address"],
            port=int(instance.attributes["Endpoint.Port"]),
            dbInstanceIdentifier=instance.physical_id,
        )
        self.secretsmanager.put_secret_value(SecretId=secret_id, SecretString=json.dumps(document))
        # Ref of an attachment is the secret's ARN.
        resource.physical_id = secret_id

    def _database(self, resource: Resource) -> None:
        prop = self.deployment.prop
        engine = prop(resource, "Engine")
        if engine != "postgres":
            raise NotEmulated(f"{resource}: engine {engine}")
        if prop(resource, "ManageMasterUserPassword", False):
            raise NotEmulated(f"{resource}: an RDS-managed master password")
        identifier = self._name(resource, "DBInstanceIdentifier", max_length=63, lowercase=True)
        server = PostgresServer(
            self.work / "rds" / identifier,
            superuser=prop(resource, "MasterUsername"),
            # The template's `{{resolve:secretsmanager:...}}` reference: the master secret's password.
            password=prop(resource, "MasterUserPassword"),
            ssl=True,
            database=prop(resource, "DBName", "postgres"),
        )
        self.databases[resource.logical_id] = server
        server.start()
        port = int(prop(resource, "Port", POSTGRES_PORT))
        address = f"{identifier}.{_random_id(12)}.{self.region}.rds.amazonaws.com"
        self.network.add(address, port, Destination(HOST, server.port))
        resource.physical_id = identifier
        resource.attributes.update(
            {
                "Endpoint.Address": address,
                "Endpoint.Port": str(port),
                "DBInstanceArn": self.deployment.arn("rds", f"db:{identifier}"),
                "DbiResourceId": f"db-{_random_id(26).upper()}",
            }
        )

    def _proxy(self, resource: Resource) -> None:
        prop = self.deployment.prop
        name = str(prop(resource, "DBProxyName"))
        endpoint = f"{name.lower()}.proxy-{_random_id(12)}.{self.region}.rds.amazonaws.com"
        login = ProxyLogin(proxy=resource, endpoint=endpoint)
        for auth in prop(resource, "Auth"):
            if auth.get("AuthScheme", "SECRETS") == "SECRETS":
                login.secret_arns.add(auth["SecretArn"])
        self.proxies[endpoint] = login
        resource.physical_id = name
        resource.attributes.update(
            Endpoint=endpoint, DBProxyArn=self.deployment.arn("rds", f"db-proxy:prx-{_random_id(17)}")
        )

    def _proxy_target(self, resource: Resource) -> None:
        """The proxy's endpoint leads to the instance its target group names."""
        proxy = self.deployment.by_physical_id("AWS::RDS::DBProxy", self.deployment.prop(resource, "DBProxyName"))
        instances = self.deployment.prop(resource, "DBInstanceIdentifiers", [])
        if len(instances) != 1:
            raise NotEmulated(f"{resource}: {len(instances)} target instances")
        instance = self.deployment.by_physical_id("AWS::RDS::DBInstance", instances[0])
        server = self.databases[instance.logical_id]
        self.network.add(proxy.attributes["Endpoint"], POSTGRES_PORT, Destination(HOST, server.port))
        resource.physical_id = f"{proxy.physical_id}/default"

    # --- streaming ---------------------------------------------------------------------------------------
    def _kafka_cluster(self, resource: Resource) -> None:
        name = str(self.deployment.prop(resource, "ClusterName"))
        suffix = _random_id(6)
        brokers = [
            f"b-{n}.{name}.{suffix}.c2.kafka.{self.region}.amazonaws.com"
            for n in range(1, int(self.deployment.prop(resource, "NumberOfBrokerNodes")) + 1)
        ]
        for broker in brokers:
            # Every broker, on every listener port, is the one local broker.
            self.network.add(broker, None, Destination(HOST, self.kafka.port))
        resource.physical_id = self.deployment.arn("kafka", f"cluster/{name}/{uuid.uuid4()}-2")
        resource.attributes.update(Arn=resource.physical_id, Brokers=brokers)

    def _kafka_topic(self, resource: Resource) -> None:
        name = str(self.deployment.prop(resource, "TopicName"))
        # One local broker: replication factor 1 whatever the template asks.
        self.kafka.create_topics([name], partitions=int(self.deployment.prop(resource, "PartitionCount", 1)))
        cluster = str(self.deployment.prop(resource, "ClusterArn"))
        resource.physical_id = cluster.replace(":cluster/", ":topic/", 1) + f"/{name}"
        resource.attributes["TopicArn"] = resource.physical_id

    def _kafka_acls(self, resource: Resource) -> None:
        # Not run here: ACLs need a broker with an authorizer, and this one (shared by the test session)
        # has none. tests/analytics/test_cloud_link.py runs the same code (cloudshop.kafka_acls) against
        # a broker configured as MSK's SASL/SCRAM listener is, and holds the SCRAM user to them.
        resource.not_run = "Kafka ACLs need a broker with an authorizer (see tests/analytics/test_cloud_link.py)"
        resource.physical_id = f"kafka-acls-{self.deployment.prop(resource, 'Principal')}"

    def _sdk_call(self, resource: Resource) -> None:
        """`Custom::AWS` (AwsCustomResource): the SDK call of its `Create`, answered by the local estate."""
        call = json.loads(self.deployment.prop(resource, "Create"))
        service, action, parameters = call["service"], call["action"], call.get("parameters") or {}
        if (service, action) != ("Kafka", "getBootstrapBrokers"):
            resource.not_run = f"its SDK call {service}.{action} is not answered locally"
            return
        cluster = self.deployment.by_physical_id("AWS::MSK::Cluster", parameters["ClusterArn"])
        brokers = cluster.attributes["Brokers"]
        answer = {
            "BootstrapBrokerString": ",".join(f"{b}:9092" for b in brokers),
            "BootstrapBrokerStringTls": ",".join(f"{b}:9094" for b in brokers),
            "BootstrapBrokerStringSaslScram": ",".join(f"{b}:9096" for b in brokers),
            "BootstrapBrokerStringSaslIam": ",".join(f"{b}:{MSK_IAM_PORT}" for b in brokers),
        }
        wanted = call.get("outputPaths")
        resource.attributes.update({k: v for k, v in answer.items() if not wanted or k in wanted})
        resource.physical_id = (call.get("physicalResourceId") or {}).get("id") or str(uuid.uuid4())

    # --- compute ------------------------------------------------------------------------------------------
    def _layer(self, resource: Resource) -> None:
        name = self._name(resource, "LayerName", max_length=64)
        content = self.deployment.prop(resource, "Content")
        resource.physical_id = self.deployment.arn("lambda", f"layer:{name}:1")
        self.layers[resource.physical_id] = asset_directory(self.assets, content["S3Key"], work=self.work)

    def _function(self, resource: Resource) -> None:
        prop = self.deployment.prop
        name = self._name(resource, "FunctionName", max_length=64)
        arn = self.deployment.arn("lambda", f"function:{name}")
        code = prop(resource, "Code")
        if "S3Key" in code:
            directory: Path | None = asset_directory(self.assets, code["S3Key"], work=self.work)
        elif "ZipFile" in code:
            directory = self.work / "inline" / name
            directory.mkdir(parents=True, exist_ok=True)
            runtime = str(prop(resource, "Runtime", ""))
            (directory / ("index.py" if runtime.startswith("python") else "index.js")).write_text(code["ZipFile"])
        else:
            directory = None
        # Lambda's environment as the template evaluates it when the function is created.
        variables = (prop(resource, "Environment", None) or {}).get("Variables") or {}
        environment = {key: value if isinstance(value, str) else json.dumps(value) for key, value in variables.items()}
        spec = FunctionSpec(
            stack=resource.stack,
            logical_id=resource.logical_id,
            name=name,
            arn=arn,
            handler=str(prop(resource, "Handler", "")),
            runtime=str(prop(resource, "Runtime", "")),
            timeout=float(prop(resource, "Timeout", 3)),
            memory=int(prop(resource, "MemorySize", 128)),
            environment=environment,
            code=directory,
            layers=[self.layers[layer] for layer in prop(resource, "Layers", []) if layer in self.layers],
            tracing=(prop(resource, "TracingConfig", None) or {}).get("Mode") == "Active",
        )
        self.lambdas.register(spec)
        resource.physical_id = name
        resource.attributes["Arn"] = arn

    # --- API Gateway and the load balancer ---------------------------------------------------------------
    def _http_api(self, resource: Resource) -> None:
        api_id = _random_id(10)
        host = f"{api_id}.execute-api.{self.region}.amazonaws.com"
        port = self.api_ports.setdefault(resource.logical_id, free_port())
        # The HTTP API ends TLS; its local emulator speaks plain HTTP.
        self.network.add(host, 443, Destination(HOST, port, scheme="http"))
        resource.physical_id = api_id
        resource.attributes["ApiEndpoint"] = f"https://{host}"
        resource.attributes["ApiId"] = api_id

    def _api_gateway_child(self, resource: Resource) -> None:
        resource.physical_id = _random_id(7)

    def _load_balancer(self, resource: Resource) -> None:
        name = self._name(resource, "Name", max_length=32)
        resource.physical_id = self.deployment.arn(
            "elasticloadbalancing", f"loadbalancer/app/{name}/{secrets.token_hex(8)}"
        )
        resource.attributes.update(
            LoadBalancerArn=resource.physical_id,
            DNSName=f"internal-{name}-{secrets.randbelow(10**9)}.{self.region}.elb.amazonaws.com",
        )

    def _listener(self, resource: Resource) -> None:
        balancer = str(self.deployment.prop(resource, "LoadBalancerArn"))
        resource.physical_id = balancer.replace(":loadbalancer/", ":listener/", 1) + f"/{secrets.token_hex(8)}"
        resource.attributes["ListenerArn"] = resource.physical_id

    def _target_group(self, resource: Resource) -> None:
        name = self._name(resource, "Name", max_length=32)
        resource.physical_id = self.deployment.arn("elasticloadbalancing", f"targetgroup/{name}/{secrets.token_hex(8)}")
        resource.attributes.update(TargetGroupArn=resource.physical_id, TargetGroupName=name)

    # --- custom resources -------------------------------------------------------------------------------
    def _kubernetes_manifest(self, resource: Resource) -> None:
        """What CDK's kubectl provider would apply: collected for the cluster (`cluster.py`)."""
        manifest = self.deployment.prop(resource, "Manifest")
        try:
            # The kubectl provider's handler reads the property with json.loads (strict), as here.
            documents = json.loads(manifest) if isinstance(manifest, str) else manifest
        except json.JSONDecodeError as exc:
            near = manifest[max(0, exc.pos - 120) : exc.pos + 40]
            raise RehearsalError(
                f"its Manifest is not JSON once CloudFormation has put the deploy-time values in ({exc}); "
                f"CDK's kubectl handler parses it with json.loads, so the resource fails in the cloud too. "
                f"Near: {near!r}"
            ) from None
        for document in documents:
            self.applied.append(AppliedObject(resource=resource, object=document))
        resource.physical_id = f"{resource.logical_id}-{_random_id(6)}"

    def _helm_chart(self, resource: Resource) -> None:
        resource.not_run = "Helm charts are not installed locally"

    def _cfn_json(self, resource: Resource) -> None:
        resource.lazy["Value"] = lambda: json.loads(self.deployment.prop(resource, "Value"))

    def _custom_resource(self, resource: Resource) -> None:
        token = str(self.deployment.prop(resource, "ServiceToken"))
        try:
            spec = self.lambdas.lookup(token)
        except KeyError:
            resource.not_run = f"its ServiceToken {token} is no function of these stacks"
            return
        on_event, is_complete = spec.provider_targets
        if not (spec.hostable or on_event):
            # Not evaluated further: its properties may name what only AWS has (a VPC's default group).
            resource.not_run = f"its handler ({spec.runtime} {spec.handler}) does not run here"
            return
        properties = _stringify(self.deployment.properties(resource))
        event: dict[str, Any] = {
            "RequestType": "Create",
            "ServiceToken": token,
            "StackId": self.deployment.stack_ids[resource.stack],
            "RequestId": str(uuid.uuid4()),
            "LogicalResourceId": resource.logical_id,
            "ResourceType": resource.type,
            "ResourceProperties": properties,
        }
        if on_event is not None:
            if is_complete is not None:
                raise NotEmulated(f"{resource}: a Provider framework with an isComplete handler")
            self._run_provider_handler(resource, self.lambdas.lookup(on_event), event)
        elif spec.hostable:
            self._run_cloudformation_handler(resource, spec, event)
        else:
            resource.not_run = f"its handler ({spec.runtime} {spec.handler}) does not run here"

    def _run_provider_handler(self, resource: Resource, user: FunctionSpec, event: dict[str, Any]) -> None:
        """The CDK Provider framework calls the user's function with the event (ResponseURL redacted) and
        answers CloudFormation from its return value; an exception fails the resource."""
        if not user.hostable:
            resource.not_run = f"its Provider framework handler ({user.runtime} {user.handler}) does not run here"
            return
        result = self.lambdas.invoke(user.arn, {**event, "ResponseURL": "..."})
        if result.error:
            raise RehearsalError(f"{user} failed: {result.describe()}\n{self.lambdas.log(user.name)}")
        answer = result.payload if isinstance(result.payload, dict) else {}
        resource.physical_id = str(answer.get("PhysicalResourceId") or event["RequestId"])
        resource.attributes.update(answer.get("Data") or {})

    def _run_cloudformation_handler(self, resource: Resource, spec: FunctionSpec, event: dict[str, Any]) -> None:
        token = str(uuid.uuid4())
        result = self.lambdas.invoke(spec.arn, {**event, "ResponseURL": self.responses.url(token)})
        if result.error:
            raise RehearsalError(f"{spec} failed: {result.describe()}\n{self.lambdas.log(spec.name)}")
        answer = self.responses.wait(
            token, timeout=spec.timeout, what=str(spec), evidence=lambda: self.lambdas.log(spec.name)
        )
        if answer.get("Status") != "SUCCESS":
            raise RehearsalError(
                f"{spec} answered {answer.get('Status')}: {answer.get('Reason')}\n{self.lambdas.log(spec.name)}"
            )
        resource.physical_id = str(answer.get("PhysicalResourceId"))
        resource.attributes.update(answer.get("Data") or {})
