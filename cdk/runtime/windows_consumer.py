"""The windows consumer Lambda: MSK event source on `analytics-results` -> the windows objects in S3.

A thin host of `analytics.results_consumer.WindowsConsumer` (the code `python -m
analytics.results_consumer` runs locally): the event's records (grouped by topic-partition, key and
value base64) are stored in offset order, each window once. Bad records become dead letters and
count in the `WindowDeadLetters` metric (CloudWatch, embedded metric format); they never fail the
batch. Only a failure of S3 itself raises, and the event source mapping then delivers the batch
again, which writes nothing twice.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from analytics.results_consumer import WindowsConsumer, consumer_from_environment, records_from_msk_event

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

SERVICE = "analytics-windows"
# Outcome -> CloudWatch metric (namespace POWERTOOLS_METRICS_NAMESPACE, dimension service).
METRICS = {
    "written": "WindowsWritten",
    "replaced": "WindowsReplaced",
    "duplicate": "WindowDuplicates",
    "stale": "WindowsStale",
    "dead_letter": "WindowDeadLetters",
}

logger = Logger(service=SERVICE)
metrics = Metrics(service=SERVICE, namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "cloudshop"))


@cache
def _consumer() -> WindowsConsumer:
    # Built by the first batch, so importing the handler needs no AWS.
    return consumer_from_environment()


@metrics.log_metrics(raise_on_empty_metrics=False)
@logger.inject_lambda_context(clear_state=True)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    records = records_from_msk_event(event)
    batch = _consumer().handle(records)
    for outcome, count in batch.counts.items():
        metrics.add_metric(name=METRICS[outcome], unit=MetricUnit.Count, value=count)
    logger.info("batch stored", extra={"records": len(records), **batch.as_dict()})
    return {"records": len(records), **batch.as_dict()}
