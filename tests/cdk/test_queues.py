"""EstateQueues: each declared queue, its DLQ and redrive, KMS encryption and TLS-only access."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Capture, Match

from cloudshop.estate import ESTATE, Queue

pytestmark = pytest.mark.infra


@pytest.mark.parametrize("queue", ESTATE.queues, ids=lambda q: q.name)
def test_queue_redrives_to_its_declared_dead_letter_queue(synth, queue: Queue) -> None:
    template = synth.template("Data")
    dlq_arn = Capture()
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "QueueName": f"{synth.config.prefix}{queue.name}",
            "VisibilityTimeout": queue.visibility_timeout_seconds,
            "KmsMasterKeyId": Match.any_value(),
            "RedrivePolicy": {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": queue.max_receive_count},
        },
    )
    dlq_logical_id = dlq_arn.as_object()["Fn::GetAtt"][0]
    dlq = synth.templates["Data"]["Resources"][dlq_logical_id]
    assert dlq["Properties"]["QueueName"] == f"{synth.config.prefix}{queue.dead_letter_queue}"
    assert dlq["Properties"]["MessageRetentionPeriod"] == 14 * 86400
    assert "KmsMasterKeyId" in dlq["Properties"]


def test_every_queue_policy_denies_plain_http(synth) -> None:
    policies = synth.resources("Data", "AWS::SQS::QueuePolicy").values()
    covered = {ref["Ref"] for p in policies for ref in p["Properties"]["Queues"]}
    assert covered == set(synth.resources("Data", "AWS::SQS::Queue"))
    synth.template("Data").all_resources_properties(
        "AWS::SQS::QueuePolicy",
        {
            "PolicyDocument": Match.object_like(
                {
                    "Statement": [
                        Match.object_like({"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}})
                    ]
                }
            )
        },
    )
