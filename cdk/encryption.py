"""The customer-managed KMS key that encrypts the estate's data at rest."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from constructs import Construct


class DataKey(Construct):
    """One rotating key for tables, buckets, queues, secrets, RDS and MSK: one key policy to audit.

    The key policy trusts the account (CDK's default), so access is granted by IAM policies on the
    principals, never by editing the key policy from other stacks.
    """

    def __init__(self, scope: Construct, construct_id: str, *, alias: str) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self,
            "Key",
            alias=alias,
            description="cloudshop data at rest",
            enable_key_rotation=True,
            pending_window=Duration.days(30),
            removal_policy=RemovalPolicy.RETAIN,
        )
