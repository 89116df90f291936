"""`AWS::Lambda::EventSourceMapping` on an SQS queue or an MSK topic, as the Lambda service runs it.

SQS: a poller receives up to `BatchSize` messages, hands them to the function as one SQS event, and
then deletes what succeeded: with `ReportBatchItemFailures` every message except the
`batchItemFailures` the function names; without it, the whole batch only if the function did not
fail. Messages that are not deleted come back after the queue's visibility timeout, and the queue's
redrive policy moves them to its DLQ, as in AWS (moto implements both).

MSK: a consumer of the mapping's `Topics` in its consumer group (`AmazonManagedKafkaEventSourceConfig`)
from its `StartingPosition` hands up to `BatchSize` records to the function as one MSK event (records
grouped by "topic-partition", key and value base64) and commits once the function succeeded; a
failed batch is delivered again. It reads the local broker through its PLAINTEXT listener, where
Lambda's pollers sign in with the function's role (IAM) on MSK.
"""

from __future__ import annotations

import base64
import threading
import traceback
import uuid
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


class KafkaEventSource:
    def __init__(self, deployment: Deployment, mapping: Resource, *, lambdas: LambdaService, kafka: Any) -> None:
        prop = deployment.prop
        self.mapping = mapping
        self.function = str(prop(mapping, "FunctionName"))
        self.source_arn = str(prop(mapping, "EventSourceArn"))
        if ":kafka:" not in self.source_arn:
            raise NotEmulated(f"{mapping}: event source {self.source_arn}")
        self.cluster = deployment.by_physical_id("AWS::MSK::Cluster", self.source_arn)
        self.topics = [str(topic) for topic in prop(mapping, "Topics")]
        config = prop(mapping, "AmazonManagedKafkaEventSourceConfig", {}) or {}
        self.group = str(config.get("ConsumerGroupId") or f"lambda-{uuid.uuid4()}")
        self.starting = {"TRIM_HORIZON": "earliest", "LATEST": "latest"}[str(prop(mapping, "StartingPosition"))]
        self.batch_size = int(prop(mapping, "BatchSize", 100))
        self.enabled = bool(prop(mapping, "Enabled", True))
        self.lambdas = lambdas
        self.kafka = kafka
        self.errors: list[str] = []
        self.delivered = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"esm-{self.function}", daemon=True)

    def start(self) -> KafkaEventSource:
        if self.enabled:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(
            *self.topics,
            bootstrap_servers=self.kafka.bootstrap_servers,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset=self.starting,
        )
        try:
            while not self._stop.is_set():
                try:
                    self.poll_once(consumer)
                except Exception:  # kept for the test's failure message; the poller keeps going
                    self.errors.append(traceback.format_exc())
                    self._stop.wait(1.0)
        finally:
            consumer.close()

    def poll_once(self, consumer: Any) -> None:
        from kafka import TopicPartition

        polled = consumer.poll(timeout_ms=500, max_records=self.batch_size)
        if not polled:
            return
        records: dict[str, list[dict[str, Any]]] = {}
        for partition, messages in sorted(polled.items(), key=lambda item: (item[0].topic, item[0].partition)):
            records[f"{partition.topic}-{partition.partition}"] = [self._record(m) for m in messages]
        event = {
            "eventSource": "aws:kafka",
            "eventSourceArn": self.source_arn,
            "bootstrapServers": ",".join(f"{b}:9098" for b in self.cluster.attributes["Brokers"]),
            "records": records,
        }
        result = self.lambdas.invoke(self.function, event)
        count = sum(len(batch) for batch in records.values())
        if result.error:
            self.errors.append(f"{self.function} failed on a batch of {count}: {result.describe()}")
            for partition, messages in polled.items():
                consumer.seek(TopicPartition(partition.topic, partition.partition), messages[0].offset)
            self._stop.wait(1.0)
            return
        consumer.commit()
        self.delivered += count

    @staticmethod
    def _record(message: Any) -> dict[str, Any]:
        record = {
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "timestamp": message.timestamp,
            "timestampType": "CREATE_TIME",
            "value": base64.b64encode(message.value).decode() if message.value is not None else None,
            "headers": [],
        }
        if message.key is not None:
            record["key"] = base64.b64encode(message.key).decode()
        return record
