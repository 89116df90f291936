"""Helpers of the analytics tests: a plain-Python reference of the metrics, a segment writer."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from analytics.eventgen import to_line

WINDOW = timedelta(minutes=1)


def event_time(event: dict[str, Any]) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(event["occurred_at"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def is_valid(event: Any) -> bool:
    if not isinstance(event, dict) or event.get("version") != 1:
        return False
    data = event.get("data") or {}
    return bool(
        event.get("event_id")
        and event.get("event_type")
        and event_time(event) is not None
        and data.get("order_id")
        and data.get("user_id")
    )


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def window_start(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def reference_windows(sales: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Window metrics of already-accepted events, keyed by window start: the specification, in Python.

    Only `order.paid` counts; an event_id counts once; users and orders are exact distinct counts.
    """
    seen: set[str] = set()
    users: dict[datetime, set[str]] = defaultdict(set)
    orders: dict[datetime, set[str]] = defaultdict(set)
    revenue: dict[datetime, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    items: dict[datetime, int] = defaultdict(int)
    for event in sales:
        if event["event_type"] != "order.paid" or event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        start = window_start(event_time(event))  # type: ignore[arg-type]
        data = event["data"]
        users[start].add(data["user_id"])
        orders[start].add(data["order_id"])
        revenue[start][data["total"]["currency"]] += data["total"]["amount"]
        items[start] += data["items"]
    return {
        iso(start): {
            "window_start": iso(start),
            "window_end": iso(start + WINDOW),
            "unique_users": len(users[start]),
            "orders": len(orders[start]),
            "revenue": [
                {"amount": amount, "currency": currency} for currency, amount in sorted(revenue[start].items())
            ],
            "items_sold": items[start],
        }
        for start in users
    }


def reference_batch(events: Iterable[Any], *, watermark: timedelta) -> list[dict[str, Any]]:
    """What `--once` must produce: every window, final when `max event time - watermark` passed it."""
    valid = [event for event in events if is_valid(event)]
    sales = [event for event in valid if event["event_type"] == "order.paid"]
    if not sales:
        return []
    horizon = max(event_time(event) for event in sales) - watermark  # type: ignore[type-var,operator]
    windows = reference_windows(valid)
    for record in windows.values():
        record["final"] = event_time({"occurred_at": record["window_end"]}) <= horizon  # type: ignore[operator]
    return [windows[key] for key in sorted(windows)]


def reference_stream(batches: Sequence[Sequence[Any]], *, watermark: timedelta) -> tuple[list[dict[str, Any]], int]:
    """What the stream must emit after the micro-batches `batches`, and how many sales it drops late.

    Spark's rule: batch N filters with the watermark computed after batch N-1 (max event time of the
    sales so far minus the delay); a sale at or behind it is dropped. Windows whose end the final
    watermark has reached are emitted, once, as final.
    """
    accepted: list[dict[str, Any]] = []
    late = 0
    max_time: datetime | None = None
    for batch in batches:
        current = max_time - watermark if max_time else None
        sales = [event for event in batch if is_valid(event) and event["event_type"] == "order.paid"]
        for event in sales:
            if current is not None and event_time(event) <= current:  # type: ignore[operator]
                late += 1
                continue
            accepted.append(event)
        times = [event_time(event) for event in sales]
        if times:
            max_time = max([*times, *([max_time] if max_time else [])])  # type: ignore[type-var]
    final = max_time - watermark if max_time else None
    windows = reference_windows(accepted)
    emitted = []
    for key in sorted(windows):
        record = windows[key]
        if final is not None and event_time({"occurred_at": record["window_end"]}) <= final:  # type: ignore[operator]
            emitted.append({**record, "final": True})
    return emitted, late


class SegmentWriter:
    """Writes the file log layout analytics reads (analytics/README.md, "File log layout").

    `<event_log_dir>/<topic>/<20-digit first offset>.jsonl.open` is appended to, then renamed to
    `<...>.jsonl` when sealed; the next segment starts at the next offset.
    """

    def __init__(self, event_log_dir: Path, topic: str = "orders") -> None:
        self.event_log_dir = event_log_dir
        self.directory = event_log_dir / topic
        self.directory.mkdir(parents=True, exist_ok=True)
        self.offset = 0
        self._active: Path | None = None
        self._active_lines = 0

    def append(self, records: Iterable[Any]) -> None:
        if self._active is None:
            self._active = self.directory / f"{self.offset:020d}.jsonl.open"
        with self._active.open("a") as handle:
            for record in records:
                handle.write((record if isinstance(record, str) else to_line(record)) + "\n")
                self._active_lines += 1

    def seal(self) -> Path | None:
        if self._active is None:
            return None
        sealed = self._active.with_name(self._active.name.removesuffix(".open"))
        self._active.rename(sealed)
        self.offset += self._active_lines
        self._active, self._active_lines = None, 0
        return sealed

    def write_segment(self, records: Iterable[Any]) -> Path:
        self.append(records)
        sealed = self.seal()
        assert sealed is not None
        return sealed


def records_by_window(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {record["window_start"]: record for record in records}


def dumps(records: Any) -> str:
    return json.dumps(records, indent=1, sort_keys=True)
