"""Late events: counted per micro-batch from the query's progress, logged, and kept for callers.

An event whose `event_time` is at or behind the watermark when it arrives is dropped by the first
stateful operator (the `event_id` deduplication) and Spark counts it in that operator's
`numRowsDroppedByWatermark`. `LateEventsMonitor` listens to the progress of one query and reports,
for every batch, `late_events` (that count summed over the stateful operators) with the batch's
input rows and watermark, as one JSON log line `analytics.batch {...}`.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchReport:
    batch_id: int
    input_rows: int
    late_events: int
    watermark: str | None
    timestamp: str


def batch_report(progress: Any) -> BatchReport:
    """A `BatchReport` from a `StreamingQueryProgress` (the object or its JSON dict)."""
    if isinstance(progress, dict):
        operators = progress.get("stateOperators") or []
        dropped = sum(int(op.get("numRowsDroppedByWatermark", 0) or 0) for op in operators)
        return BatchReport(
            batch_id=int(progress["batchId"]),
            input_rows=int(progress.get("numInputRows", 0) or 0),
            late_events=dropped,
            watermark=(progress.get("eventTime") or {}).get("watermark"),
            timestamp=str(progress.get("timestamp")),
        )
    dropped = sum(int(op.numRowsDroppedByWatermark or 0) for op in progress.stateOperators)
    return BatchReport(
        batch_id=int(progress.batchId),
        input_rows=int(progress.numInputRows or 0),
        late_events=dropped,
        watermark=(progress.eventTime or {}).get("watermark"),
        timestamp=str(progress.timestamp),
    )


class LateEventsMonitor(StreamingQueryListener):
    """Collects a `BatchReport` per micro-batch of the queries named `query_name`."""

    def __init__(self, query_name: str) -> None:
        self.query_name = query_name
        self._reports: list[BatchReport] = []
        self._lock = threading.Lock()

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        progress = event.progress
        if progress.name != self.query_name:
            return
        report = batch_report(progress)
        with self._lock:
            self._reports.append(report)
        if report.input_rows or report.late_events:
            log.info("analytics.batch %s", json.dumps(asdict(report)))
        if report.late_events:
            log.warning("dropped %d late event(s) in batch %d", report.late_events, report.batch_id)

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        pass

    @property
    def reports(self) -> list[BatchReport]:
        with self._lock:
            return list(self._reports)

    @property
    def late_events(self) -> int:
        """Late events dropped since the monitor was attached."""
        with self._lock:
            return sum(report.late_events for report in self._reports)
