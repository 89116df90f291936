"""The S3 layout of the analytics windows, both ways: `GET /api/v1/analytics/windows` reads it (the
order service mounts `list_windows`), and `WindowStore` writes it (the windows consumer of the
`analytics-results` topic, `analytics.results_consumer`, and the job's `windows` sink).

One JSON object per window at `s3://<ANALYTICS_RESULTS_BUCKET>/windows/<window_start>.json`,
window_start being fixed-width UTC ISO-8601 (`2025-01-01T10:00:00Z`), so key order is time order. S3
lists keys in ascending order only; to serve newest first without listing a year of keys per
request, the reader first lists the *days* (`Delimiter="T"` groups the keys of a day under
`windows/2025-01-01T`), then walks the days from the newest, listing one day (at most 1,440 keys) at
a time, until it has a page.

A window is written once: the key is the window's start, the first write is conditional on the key
being absent, a later copy of the same window changes nothing, and a final window is never replaced.
Only a `final: false` snapshot (from `--once`) gives way, to whatever comes after it.

Pure boto3 and the standard library: the order service and the consumer Lambda import this without
Spark.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

PREFIX = "windows/"
MAX_LIMIT = 100
WINDOW_LENGTH = timedelta(minutes=1)
# The fields of a window object, in the order the job writes them (`analytics.transforms.RESULT_COLUMNS`).
WINDOW_FIELDS = ("window_start", "window_end", "unique_users", "orders", "revenue", "items_sold", "final")
_WINDOW_START = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
_KEY = re.compile(r"^windows/(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z)\.json$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# A count beyond any real minute of sales: a bigger number is a corrupt record, not a busy minute.
_MAX_COUNT = 10**12
_MAX_AMOUNT = 10**18


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


# --- writing -----------------------------------------------------------------------------------------


class InvalidWindowError(ValueError):
    """A record that is not a window the job writes: the reason names what is wrong with it."""


class WindowConflictError(RuntimeError):
    """A final window arrived for a start that already has a different final window."""


class Outcome(enum.Enum):
    WRITTEN = "written"  # the first copy of the window
    REPLACED = "replaced"  # replaced a `final: false` snapshot
    DUPLICATE = "duplicate"  # the same window again: nothing written
    STALE = "stale"  # a `final: false` snapshot of a window already final: nothing written


def window_key(window_start: str, *, prefix: str = PREFIX) -> str:
    return f"{prefix}{window_start}.json"


def _timestamp(value: Any, field: str) -> datetime:
    if not isinstance(value, str) or not _WINDOW_START.match(value):
        raise InvalidWindowError(f"{field} must be UTC ISO-8601 like 2025-01-01T10:00:00Z, got {value!r}")
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidWindowError(f"{field} is not a date: {value!r}") from exc


def _count(value: Any, field: str, *, limit: int = _MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise InvalidWindowError(f"{field} must be a whole number from 0 to {limit}, got {value!r}")
    return value


def parse_window(value: bytes | str | None, *, key: bytes | str | None = None) -> dict[str, Any]:
    """The window a record carries, checked field by field; `InvalidWindowError` says what is wrong.

    `key` is the record's key, which the job sets to the window's start; a key that disagrees with the
    value is refused too.
    """
    if value is None:
        raise InvalidWindowError("the record has no value")
    try:
        text = value.decode("utf-8") if isinstance(value, bytes) else value
        item = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidWindowError(f"the value is not UTF-8 JSON: {exc}") from exc
    if not isinstance(item, dict):
        raise InvalidWindowError(f"the value is a JSON {type(item).__name__}, not an object")
    missing = [name for name in WINDOW_FIELDS if name not in item]
    unknown = sorted(set(item) - set(WINDOW_FIELDS))
    if missing or unknown:
        raise InvalidWindowError(f"fields missing {missing}, unknown {unknown}")
    start = _timestamp(item["window_start"], "window_start")
    if start.second:
        raise InvalidWindowError(f"window_start {item['window_start']} is not on a minute")
    if _timestamp(item["window_end"], "window_end") != start + WINDOW_LENGTH:
        raise InvalidWindowError(f"window_end {item['window_end']!r} is not one minute after window_start")
    revenue = item["revenue"]
    if not isinstance(revenue, list):
        raise InvalidWindowError("revenue must be a list of {amount, currency}")
    lines: list[dict[str, Any]] = []
    currencies: list[str] = []
    for line in revenue:
        if not isinstance(line, dict) or set(line) != {"amount", "currency"}:
            raise InvalidWindowError(f"a revenue line must be {{amount, currency}}, got {line!r}")
        if not isinstance(line["currency"], str) or not _CURRENCY.match(line["currency"]):
            raise InvalidWindowError(f"currency must be an ISO 4217 code, got {line['currency']!r}")
        lines.append(
            {"amount": _count(line["amount"], "revenue amount", limit=_MAX_AMOUNT), "currency": line["currency"]}
        )
        currencies.append(line["currency"])
    if currencies != sorted(set(currencies)):
        raise InvalidWindowError(f"revenue must hold each currency once, sorted: {currencies}")
    if not isinstance(item["final"], bool):
        raise InvalidWindowError(f"final must be true or false, got {item['final']!r}")
    if key is not None:
        key_text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        if key_text != item["window_start"]:
            raise InvalidWindowError(f"the record key {key_text!r} is not the window start {item['window_start']!r}")
    return {
        "window_start": item["window_start"],
        "window_end": item["window_end"],
        "unique_users": _count(item["unique_users"], "unique_users"),
        "orders": _count(item["orders"], "orders"),
        "revenue": lines,
        "items_sold": _count(item["items_sold"], "items_sold"),
        "final": item["final"],
    }


def window_body(window: dict[str, Any]) -> bytes:
    """The object's bytes: the job's own JSON form (fields in order, no spaces)."""
    return json.dumps({name: window[name] for name in WINDOW_FIELDS}, separators=(",", ":")).encode()


class WindowStore:
    """Writes windows into the layout `list_windows` reads, each one once (see the module docstring).

    Every write is conditional (`If-None-Match: *` for a new key, `If-Match: <etag>` to replace a
    snapshot), so two writers racing on one window cannot both win; the loser reads again and decides
    again. `s3_client` is a boto3 S3 client; S3 failures other than a lost race propagate, for the
    caller to retry the whole batch (a retry writes nothing twice).
    """

    ATTEMPTS = 5

    def __init__(self, s3_client: Any, bucket: str, *, prefix: str = PREFIX) -> None:
        self.s3 = s3_client
        self.bucket = bucket
        self.prefix = prefix

    def _read(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        try:
            answer = self.s3.get_object(Bucket=self.bucket, Key=key)
        except self.s3.exceptions.NoSuchKey:
            return None, None
        body = answer["Body"].read()
        try:
            existing = parse_window(body)
        except InvalidWindowError:
            # Not a window (written by hand?): a snapshot like any other, replaced by the real one.
            existing = {"final": False}
        return existing, str(answer["ETag"])

    def put(self, window: dict[str, Any]) -> Outcome:
        """Store `window` (as `parse_window` returns it) unless it is already there or final."""
        key = window_key(window["window_start"], prefix=self.prefix)
        for _ in range(self.ATTEMPTS):
            existing, etag = self._read(key)
            if existing == window:
                return Outcome.DUPLICATE
            if existing is not None and existing["final"]:
                if not window["final"]:
                    return Outcome.STALE
                raise WindowConflictError(
                    f"{key} already holds a different final window: {json.dumps(existing, sort_keys=True)}"
                )
            condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
            try:
                self.s3.put_object(
                    Bucket=self.bucket,
                    Key=key,
                    Body=window_body(window),
                    ContentType="application/json",
                    **condition,
                )
            except self.s3.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "ConditionalRequestConflict"):
                    continue  # another writer got there first: read again
                raise
            return Outcome.WRITTEN if etag is None else Outcome.REPLACED
        raise RuntimeError(f"{key}: still contended after {self.ATTEMPTS} conditional writes")
