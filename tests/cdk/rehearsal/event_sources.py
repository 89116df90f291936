"""`AWS::Lambda::EventSourceMapping` on an SQS queue, as the Lambda service runs it.

A poller receives up to `BatchSize` messages, hands them to the function as one SQS event, and then
deletes what succeeded: with `ReportBatchItemFailures` every message except the `batchItemFailures`
the function names; without it, the whole batch only if the function did not fail. Messages that
are not deleted come back after the queue's visibility timeout, and the queue's redrive policy moves
them to its DLQ, as in AWS (moto implements both).
"""

from __future__ import annotations

import threading
import traceback
from typing import Any

from tests.cdk.rehearsal.cloudformation import Deployment, NotEmulated, Resource
from tests.cdk.rehearsal.lambdas import LambdaService


class SqsEventSource:
    def __init__(self, deployment: Deployment, mapping: Resource, *, lambdas: LambdaService, sqs: Any) -> None:
        prop = deployment.prop
        self.mapping = mapping
        self.function = str(prop(mapping, "FunctionName"))
        self.source_arn = str(prop(mapping, "EventSourceArn"))
        if ":sqs:" not in self.source_arn:
            raise NotEmulated(f"{mapping}: event source {self.source_arn}")
        queue = deployment.by_physical_id("AWS::SQS::Queue", self.source_arn)
        self.queue_url = deployment.ref(queue)
        self.batch_size = int(prop(mapping, "BatchSize", 10))
        self.partial = "ReportBatchItemFailures" in prop(mapping, "FunctionResponseTypes", [])
        self.enabled = bool(prop(mapping, "Enabled", True))
        self.region = deployment.region
        self.lambdas = lambdas
        self.sqs = sqs
        self.errors: list[str] = []
        self.delivered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"esm-{self.function}", daemon=True)

    def start(self) -> SqsEventSource:
        if self.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # kept for the test's failure message; the poller keeps going, as Lambda's does
                self.errors.append(traceback.format_exc())
                self._stop.wait(1.0)

    def poll_once(self) -> None:
        answer = self.sqs.receive_message(
            QueueUrl=self.queue_url,
            MaxNumberOfMessages=min(self.batch_size, 10),
            # Short long-polls: a batch is handed over within a second, and stop() is never kept waiting.
            WaitTimeSeconds=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        )
        messages = answer.get("Messages") or []
        if not messages:
            return
        records = [self._record(message) for message in messages]
        result = self.lambdas.invoke(self.function, {"Records": records})
        if result.error:
            self.errors.append(f"{self.function} failed on a batch of {len(records)}: {result.describe()}")
            return
        failed: set[str] = set()
        if self.partial:
            report = result.payload if isinstance(result.payload, dict) else {}
            failures = report.get("batchItemFailures") or []
            ids = {m["MessageId"] for m in messages}
            failed = {str(f.get("itemIdentifier")) for f in failures if isinstance(f, dict)}
            if not failed <= ids:
                # An identifier that is not in the batch: Lambda treats the whole batch as failed.
                self.errors.append(f"{self.function} reported unknown batch items {sorted(failed - ids)}")
                return
        done = [m for m in messages if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(
                QueueUrl=self.queue_url,
                Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
            )
        self.delivered += len(done)

    def _record(self, message: dict[str, Any]) -> dict[str, Any]:
        attributes = {}
        for name, value in (message.get("MessageAttributes") or {}).items():
            attributes[name] = {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": value.get("StringListValues", []),
                "binaryListValues": value.get("BinaryListValues", []),
                "dataType": value.get("DataType"),
            }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": dict(message.get("Attributes") or {}),
            "messageAttributes": attributes,
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": self.source_arn,
            "awsRegion": self.region,
        }
