"""Reading the analytics windows back: `GET /api/v1/analytics/windows` (mounted by the order service).

The job's `windows` sink writes one JSON object per window at
`s3://<ANALYTICS_RESULTS_BUCKET>/windows/<window_start>.json`, window_start being fixed-width UTC
ISO-8601 (`2025-01-01T10:00:00Z`), so key order is time order. S3 lists keys in ascending order
only; to serve newest first without listing a year of keys per request, the reader first lists the
*days* (`Delimiter="T"` groups the keys of a day under `windows/2025-01-01T`), then walks the days
from the newest, listing one day (at most 1,440 keys) at a time, until it has a page.

Pure boto3 and the standard library: the order service imports this without Spark.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

PREFIX = "windows/"
MAX_LIMIT = 100
_WINDOW_START = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_KEY = re.compile(r"^windows/(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)\.json$")


class InvalidCursorError(ValueError):
    """The cursor was not issued by `list_windows` (a 400 for the API)."""


def encode_cursor(window_start: str) -> str:
    raw = json.dumps({"before": window_start}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        before = json.loads(base64.urlsafe_b64decode(padded.encode()))["before"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise InvalidCursorError("invalid cursor") from exc
    if not isinstance(before, str) or not _WINDOW_START.match(before):
        raise InvalidCursorError("invalid cursor")
    return before


def _day_prefixes(s3_client: Any, bucket: str) -> list[str]:
    days: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=PREFIX, Delimiter="T"):
        days.extend(prefix["Prefix"] for prefix in page.get("CommonPrefixes", []))
    return sorted(days, reverse=True)


def _window_starts_of_day(s3_client: Any, bucket: str, day_prefix: str) -> list[str]:
    starts: list[str] = []
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=day_prefix):
        for item in page.get("Contents", []):
            match = _KEY.match(item["Key"])
            if match:
                starts.append(match.group(1))
    return sorted(starts, reverse=True)


def list_windows(
    s3_client: Any, bucket: str, *, limit: int = 20, cursor: str | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """The latest windows, newest first: `(items, next_cursor)`; `next_cursor` None on the last page.

    `limit` is 1..100. Each item is the window object as the job wrote it: window_start,
    window_end, unique_users, orders, revenue [{amount, currency}], items_sold, final.
    Raises `InvalidCursorError` (a ValueError) for a cursor it did not issue.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_LIMIT}")
    before = decode_cursor(cursor) if cursor else None
    wanted: list[str] = []
    for day in _day_prefixes(s3_client, bucket):
        if before is not None and day[len(PREFIX) :] > before[:11]:
            continue
        for start in _window_starts_of_day(s3_client, bucket, day):
            if before is None or start < before:
                wanted.append(start)
        if len(wanted) > limit:
            break
    page, more = wanted[:limit], len(wanted) > limit
    items = []
    for start in page:
        item = _read_window(s3_client, bucket, start)
        if item is not None:
            items.append(item)
    return items, (encode_cursor(page[-1]) if more and page else None)


def _read_window(s3_client: Any, bucket: str, window_start: str) -> dict[str, Any] | None:
    try:
        body = s3_client.get_object(Bucket=bucket, Key=f"{PREFIX}{window_start}.json")["Body"].read()
    except s3_client.exceptions.NoSuchKey:
        # Expired (bucket lifecycle) between the listing and the read.
        return None
    item: dict[str, Any] = json.loads(body)
    return item
