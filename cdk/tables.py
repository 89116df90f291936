"""DynamoDB tables, built from the estate declarations (`cloudshop.estate.TABLES`)."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct

from cdk.nag import checkov_skip, nag
from cloudshop.estate import Key, Table

_ATTRIBUTE_TYPES = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}

NON_CRITICAL_PITR_REASON = (
    "The estate declares this table non-critical (critical=False): its items expire by TTL or can be "
    "rebuilt (sessions, carts, delivered outbox events, notifications, idempotency records), so "
    "point-in-time recovery would pay for backups of data nobody restores."
)


def _attribute(key: Key) -> dynamodb.Attribute:
    return dynamodb.Attribute(name=key.name, type=_ATTRIBUTE_TYPES[key.type])


def construct_id(name: str) -> str:
    """`order-events` -> `OrderEvents`: the construct id, hence the logical id, of a declared resource."""
    return "".join(part.capitalize() for part in name.replace("_", "-").split("-"))


class EstateTables(Construct):
    """One on-demand table per declaration, named `<prefix><name>` like `resource_settings(prefix)` says.

    Critical tables get point-in-time recovery, deletion protection and are retained when the stack
    goes; the others are destroyed with it.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id_: str,
        *,
        tables: Iterable[Table],
        prefix: str,
        encryption_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id_)
        self.declarations: dict[str, Table] = {}
        self.tables: dict[str, dynamodb.Table] = {}
        for declaration in tables:
            table = dynamodb.Table(
                self,
                construct_id(declaration.name),
                table_name=f"{prefix}{declaration.name}",
                partition_key=_attribute(declaration.partition_key),
                sort_key=_attribute(declaration.sort_key) if declaration.sort_key else None,
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
                encryption_key=encryption_key,
                time_to_live_attribute=declaration.ttl_attribute,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=declaration.critical
                ),
                deletion_protection=declaration.critical,
                removal_policy=RemovalPolicy.RETAIN if declaration.critical else RemovalPolicy.DESTROY,
            )
            for index in declaration.indexes:
                table.add_global_secondary_index(
                    index_name=index.name,
                    partition_key=_attribute(index.partition_key),
                    sort_key=_attribute(index.sort_key) if index.sort_key else None,
                    projection_type=dynamodb.ProjectionType.ALL,
                )
            if not declaration.critical:
                nag(table, {"AwsSolutions-DDB3": NON_CRITICAL_PITR_REASON})
                checkov_skip(table, {"CKV_AWS_28": NON_CRITICAL_PITR_REASON})
            self.declarations[declaration.name] = declaration
            self.tables[declaration.name] = table

    def __getitem__(self, name: str) -> dynamodb.Table:
        return self.tables[name]

    def index_arns(self, name: str) -> list[str]:
        """The ARNs of the table's declared indexes, so grants never need `index/*`."""
        table = self.tables[name]
        return [f"{table.table_arn}/index/{index.name}" for index in self.declarations[name].indexes]
