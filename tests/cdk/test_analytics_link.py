"""AnalyticsLink and WindowsConsumer: the AWS half of the link to Dataproc, and the windows' way back.

The dev synthesis (public access off, as on a cluster's first deploy), and one small app with
`client_cidrs` set (public access on), for what only a later deploy turns on. The outputs are held to
the Terraform example's variables, read with python-hcl2.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import hcl2
import pytest

from analytics.results_consumer import CONSUMER_GROUP
from cdk.analytics_link import SCRAM_SECRET_PREFIX, output_id
from cdk.streaming import PUBLIC_ACCESS_OFF, PUBLIC_SCRAM_PORT
from cloudshop.estate import ESTATE
from cloudshop.kafka_acls import bindings_for, from_json, principal_of

pytestmark = pytest.mark.infra

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "analytics" / "terraform" / "examples" / "basic"
(CLIENT,) = ESTATE.scram_clients


def one(synth: Any, resource_type: str, stack: str = "Streaming") -> dict[str, Any]:
    (resource,) = synth.resources(stack, resource_type).values()
    return resource


def example_variables() -> dict[str, dict[str, Any]]:
    with (EXAMPLE / "variables.tf").open() as handle:
        blocks = hcl2.load(handle)["variable"]
    return {name.strip('"'): body for block in blocks for name, body in block.items()}


# --- MSK: SCRAM beside IAM, ACLs enforced, public subnets, public access off until asked --------------


def test_the_brokers_take_scram_beside_iam_and_deny_scram_users_without_an_acl(synth) -> None:
    cluster = one(synth, "AWS::MSK::Cluster")["Properties"]
    assert cluster["ClientAuthentication"] == {
        "Sasl": {"Iam": {"Enabled": True}, "Scram": {"Enabled": True}},
        "Unauthenticated": {"Enabled": False},
    }
    assert cluster["EncryptionInfo"]["EncryptionInTransit"] == {"ClientBroker": "TLS", "InCluster": True}
    properties = one(synth, "AWS::MSK::Configuration")["Properties"]["ServerProperties"].splitlines()
    assert "allow.everyone.if.no.acl.found=false" in properties
    # The configuration's latest revision, so a change of the properties reaches the brokers.
    assert cluster["ConfigurationInfo"]["Revision"]["Fn::GetAtt"][1] == "LatestRevision.Revision"


def test_the_brokers_sit_in_the_public_subnets_with_public_access_off_on_a_first_deploy(synth) -> None:
    group = one(synth, "AWS::MSK::Cluster")["Properties"]["BrokerNodeGroupInfo"]
    subnets = [subnet["Fn::ImportValue"] for subnet in group["ClientSubnets"]]
    assert len(subnets) == 3 and all("publicSubnet" in subnet for subnet in subnets), subnets
    assert group["ConnectivityInfo"] == {"PublicAccess": {"Type": "DISABLED"}}
    # Nothing admits the public SCRAM port, and the output says what to do instead of an address.
    ingress = synth.resources("Streaming", "AWS::EC2::SecurityGroupIngress").values()
    assert not [rule for rule in ingress if rule["Properties"].get("FromPort") == PUBLIC_SCRAM_PORT]
    assert synth.templates["Streaming"]["Outputs"]["MskScramBootstrapServers"]["Value"] == PUBLIC_ACCESS_OFF


# --- the SCRAM secret, its association, the ACLs ----------------------------------------------------------


def test_the_scram_secret_is_named_for_msk_and_encrypted_with_its_own_rotating_key(synth) -> None:
    secret = one(synth, "AWS::SecretsManager::Secret")["Properties"]
    assert secret["Name"] == f"{SCRAM_SECRET_PREFIX}{synth.config.prefix}{CLIENT.name}"
    assert json.loads(secret["GenerateSecretString"]["SecretStringTemplate"]) == {"username": CLIENT.name}
    assert secret["GenerateSecretString"]["GenerateStringKey"] == "password"
    key_id = secret["KmsKeyId"]["Fn::GetAtt"][0]
    key = synth.resources("Streaming", "AWS::KMS::Key")[key_id]["Properties"]
    assert key["EnableKeyRotation"] is True


def test_the_secret_is_associated_with_the_cluster(synth) -> None:
    association = one(synth, "AWS::MSK::BatchScramSecret")["Properties"]
    (secret_id,) = synth.resources("Streaming", "AWS::SecretsManager::Secret")
    (cluster_id,) = synth.resources("Streaming", "AWS::MSK::Cluster")
    assert association == {"ClusterArn": {"Fn::GetAtt": [cluster_id, "Arn"]}, "SecretArnList": [{"Ref": secret_id}]}


def test_the_acls_let_the_job_read_orders_and_write_analytics_results_only(synth) -> None:
    acls = one(synth, "Custom::KafkaAcls")
    properties = acls["Properties"]
    assert properties["Principal"] == principal_of(CLIENT) == "User:analytics"
    bindings = from_json(properties["Acls"])
    assert bindings == bindings_for(CLIENT)
    assert {(b.resource_type, b.resource_name, b.operation) for b in bindings} == {
        ("TOPIC", "orders", "READ"),
        ("TOPIC", "analytics-results", "WRITE"),
        ("GROUP", CLIENT.group_prefix, "READ"),
    }
    # Set through the brokers' IAM listener, before the credentials are associated.
    assert properties["BootstrapServers"]["Fn::GetAtt"][1] == "BootstrapBrokerStringSaslIam"
    (acls_id,) = synth.resources("Streaming", "Custom::KafkaAcls")
    assert acls_id in one(synth, "AWS::MSK::BatchScramSecret").get("DependsOn", [])


def test_the_acl_function_may_alter_this_cluster_and_nothing_else(synth) -> None:
    functions = synth.resources("Streaming", "AWS::Lambda::Function")
    (function_id,) = [
        k for k, f in functions.items() if f["Properties"].get("Handler") == "cdk.runtime.kafka_acls.handler"
    ]
    role = functions[function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    statements = [
        statement
        for policy in synth.resources("Streaming", "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    (cluster_id,) = synth.resources("Streaming", "AWS::MSK::Cluster")
    assert statements == [
        {
            "Action": ["kafka-cluster:AlterCluster", "kafka-cluster:Connect", "kafka-cluster:DescribeCluster"],
            "Effect": "Allow",
            "Resource": {"Fn::GetAtt": [cluster_id, "Arn"]},
        }
    ]


# --- the windows consumer --------------------------------------------------------------------------------


def test_the_windows_consumer_reads_analytics_results_from_the_start_with_iam(synth) -> None:
    mapping = one(synth, "AWS::Lambda::EventSourceMapping")["Properties"]
    (cluster_id,) = synth.resources("Streaming", "AWS::MSK::Cluster")
    assert mapping["EventSourceArn"] == {"Fn::GetAtt": [cluster_id, "Arn"]}
    assert mapping["Topics"] == list(CLIENT.write_topics) == ["analytics-results"]
    assert mapping["StartingPosition"] == "TRIM_HORIZON"
    assert mapping["AmazonManagedKafkaEventSourceConfig"] == {"ConsumerGroupId": CONSUMER_GROUP}
    # IAM: no SCRAM secret in the mapping's access configuration.
    assert "SourceAccessConfigurations" not in mapping
    function = synth.resources("Streaming", "AWS::Lambda::Function")[mapping["FunctionName"]["Ref"]]["Properties"]
    assert function["Handler"] == "cdk.runtime.windows_consumer.handler"
    assert function["Environment"]["Variables"]["ANALYTICS_RESULTS_BUCKET"] == f"{synth.config.prefix}analytics-results"
    assert function["VpcConfig"]["SubnetIds"], "the consumer runs in the VPC"


def test_the_windows_consumer_writes_only_the_windows_and_dead_letters_of_its_bucket(synth) -> None:
    mapping = one(synth, "AWS::Lambda::EventSourceMapping")["Properties"]
    function = synth.resources("Streaming", "AWS::Lambda::Function")[mapping["FunctionName"]["Ref"]]["Properties"]
    role = function["Role"]["Fn::GetAtt"][0]
    statements = [
        statement
        for policy in synth.resources("Streaming", "AWS::IAM::Policy").values()
        if {"Ref": role} in policy["Properties"]["Roles"]
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    s3 = [
        s
        for s in statements
        if any(a.startswith("s3:") for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))
    ]
    resources = json.dumps([s["Resource"] for s in s3])
    bucket = f"{synth.config.prefix}analytics-results"
    assert f"{bucket}/windows/*" in resources and f"{bucket}/dead-letters/*" in resources
    assert f'{bucket}/*"' not in resources  # not the whole bucket
    assert not any("s3:DeleteObject" in json.dumps(s["Action"]) for s in s3)


# --- the outputs the Terraform example takes ---------------------------------------------------------------


def test_every_aws_value_the_terraform_example_takes_is_an_output_of_that_name(synth) -> None:
    variables = example_variables()
    from_aws = {name for name, body in variables.items() if "CDK output" in body.get("description", "")}
    assert from_aws == {"msk_scram_bootstrap_servers", "msk_scram_secret_name"}
    outputs = synth.templates["Streaming"]["Outputs"]
    for name in from_aws:
        assert output_id(name) in outputs, f"no output {output_id(name)} for the Terraform variable {name}"
        assert output_id(name) in variables[name]["description"]
    assert outputs["MskScramSecretName"]["Value"] == f"{SCRAM_SECRET_PREFIX}{synth.config.prefix}{CLIENT.name}"
    # And the module takes the bootstrap servers from that variable.
    with (EXAMPLE / "main.tf").open() as handle:
        (call,) = hcl2.load(handle)["module"]
    assert call['"analytics"']["kafka_bootstrap_servers"] == "${var.msk_scram_bootstrap_servers}"


def test_the_terraform_example_outputs_the_cidrs_cdk_takes(synth) -> None:
    with (EXAMPLE / "outputs.tf").open() as handle:
        outputs = {name for block in hcl2.load(handle)["output"] for name in block}
    assert '"analytics_client_cidrs"' in outputs or "analytics_client_cidrs" in outputs
    assert "analytics_client_cidrs" in {field for field in synth.config.__dataclass_fields__}
    assert "CLOUDSHOP_ANALYTICS_CLIENT_CIDRS" in (REPO / "app.py").read_text()


# --- a later deploy: public access on -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The Streaming constructs in a small app, with Cloud NAT's address as the one client CIDR."""
    from aws_cdk import App, Stack
    from aws_cdk import aws_logs as logs
    from aws_cdk.assertions import Template

    from cdk.analytics_link import AnalyticsLink
    from cdk.assets import LambdaPackages
    from cdk.encryption import DataKey
    from cdk.network import Network
    from cdk.streaming import EventStream
    from cloudshop.build import prepare

    packages = LambdaPackages(prepare(tmp_path_factory.mktemp("lambda-build"), allow_placeholder=True))
    stack = Stack(App(), "Public")
    network = Network(
        stack,
        "Network",
        cidr="10.10.0.0/16",
        availability_zones=["eu-west-1a", "eu-west-1b", "eu-west-1c"],
        nat_gateways=1,
        log_retention=logs.RetentionDays.ONE_MONTH,
    )
    stream = EventStream(
        stack,
        "EventStream",
        vpc=network.vpc,
        subnets=network.kafka_subnets,
        topics=ESTATE.topics,
        cluster_name="cloudshop-test-events",
        kafka_version="3.8.x",
        broker_instance_type="kafka.t3.small",
        broker_storage_gib=20,
        encryption_key=DataKey(stack, "Key", alias="alias/test").key,
        log_retention=logs.RetentionDays.ONE_MONTH,
        public_access=True,
    )
    AnalyticsLink(
        stack,
        "AnalyticsLink",
        stream=stream,
        clients=ESTATE.scram_clients,
        client_cidrs=("203.0.113.7/32",),
        name_prefix="cloudshop-test-",
        packages=packages,
        dependency_layer=packages.dependency_layer(stack, "Layer"),
        vpc=network.vpc,
        subnets=network.app_subnets,
        log_retention=logs.RetentionDays.ONE_MONTH,
    )
    return Template.from_stack(stack), stream


def test_public_access_admits_the_scram_port_from_the_nat_addresses_only(public) -> None:
    template, stream = public
    template.has_resource_properties(
        "AWS::MSK::Cluster",
        {"BrokerNodeGroupInfo": {"ConnectivityInfo": {"PublicAccess": {"Type": "SERVICE_PROVIDED_EIPS"}}}},
    )
    rules = [
        rule["Properties"]
        for rule in template.find_resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"].get("FromPort") == PUBLIC_SCRAM_PORT
    ]
    assert [(rule["CidrIp"], rule["ToPort"]) for rule in rules] == [("203.0.113.7/32", PUBLIC_SCRAM_PORT)]
    # The bootstrap string is looked up with the public SCRAM one.
    lookups = [json.dumps(r["Properties"]) for r in template.find_resources("Custom::AWS").values()]
    assert any("BootstrapBrokerStringPublicSaslScram" in lookup for lookup in lookups)
    assert stream.public_scram_bootstrap_servers != PUBLIC_ACCESS_OFF


@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "10.0.0.0/8", "not-a-cidr", "203.0.113.7/31x"])
def test_a_wide_or_malformed_client_cidr_is_refused(cidr: str) -> None:
    from cdk.config import preset

    with pytest.raises(ValueError):
        preset("dev", analytics_client_cidrs=(cidr,))
