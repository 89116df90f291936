"""SQS queues and their dead-letter queues, built from the estate declarations (`cloudshop.estate.QUEUES`)."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from cdk.tables import construct_id
from cloudshop.estate import Queue

DLQ_RETENTION = Duration.days(14)


class EstateQueues(Construct):
    """Each queue redrives to its declared DLQ after `max_receive_count` receives; both KMS-encrypted."""

    def __init__(
        self,
        scope: Construct,
        construct_id_: str,
        *,
        queues: Iterable[Queue],
        prefix: str,
        encryption_key: kms.IKey,
    ) -> None:
        super().__init__(scope, construct_id_)
        self.declarations: dict[str, Queue] = {}
        self.queues: dict[str, sqs.Queue] = {}
        self.dead_letter_queues: dict[str, sqs.Queue] = {}
        for declaration in queues:
            dlq = sqs.Queue(
                self,
                construct_id(declaration.dead_letter_queue),
                queue_name=f"{prefix}{declaration.dead_letter_queue}",
                retention_period=DLQ_RETENTION,
                encryption=sqs.QueueEncryption.KMS,
                encryption_master_key=encryption_key,
                enforce_ssl=True,
                removal_policy=RemovalPolicy.DESTROY,
            )
            queue = sqs.Queue(
                self,
                construct_id(declaration.name),
                queue_name=f"{prefix}{declaration.name}",
                visibility_timeout=Duration.seconds(declaration.visibility_timeout_seconds),
                dead_letter_queue=sqs.DeadLetterQueue(queue=dlq, max_receive_count=declaration.max_receive_count),
                encryption=sqs.QueueEncryption.KMS,
                encryption_master_key=encryption_key,
                enforce_ssl=True,
                removal_policy=RemovalPolicy.DESTROY,
            )
            self.declarations[declaration.name] = declaration
            self.queues[declaration.name] = queue
            self.dead_letter_queues[declaration.name] = dlq

    def __getitem__(self, name: str) -> sqs.Queue:
        return self.queues[name]
