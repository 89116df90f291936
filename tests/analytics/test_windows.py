"""`analytics.windows.list_windows`: newest first, cursor pagination, on S3 (moto, in process)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from analytics.windows import InvalidCursorError, encode_cursor, list_windows, window_key

BUCKET = "cloudshop-analytics-results"


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="eu-west-1")
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        yield client


def put_windows(s3, starts: list[datetime]) -> list[str]:
    names = []
    for start in starts:
        name = start.strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "window_start": name,
            "window_end": (start + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "unique_users": 1,
            "orders": 1,
            "revenue": [{"amount": 100, "currency": "INR"}],
            "items_sold": 1,
            "final": True,
        }
        s3.put_object(Bucket=BUCKET, Key=window_key(name), Body=json.dumps(body).encode())
        names.append(name)
    return names


def test_an_empty_bucket_has_no_windows(s3):
    assert list_windows(s3, BUCKET, limit=10) == ([], None)


def test_windows_come_newest_first_across_days_and_pages(s3):
    # Given windows over three days, with a gap day, plus an object that is not a window
    base = datetime(2025, 1, 1, 23, 57, tzinfo=UTC)
    starts = [base + timedelta(minutes=i) for i in range(6)] + [datetime(2025, 1, 4, 8, 0, tzinfo=UTC)]
    names = put_windows(s3, starts)
    s3.put_object(Bucket=BUCKET, Key="windows/README.txt", Body=b"not a window")
    # When the pages are walked with limit 3
    seen, cursor, pages = [], None, 0
    while True:
        items, cursor = list_windows(s3, BUCKET, limit=3, cursor=cursor)
        seen.extend(item["window_start"] for item in items)
        pages += 1
        if cursor is None:
            break
    # Then every window comes once, newest first, and the last page says there is no more
    assert seen == sorted(names, reverse=True)
    assert pages == 3


def test_a_page_holds_the_whole_window_object(s3):
    put_windows(s3, [datetime(2025, 1, 1, 10, 0, tzinfo=UTC)])
    (item,), cursor = list_windows(s3, BUCKET, limit=1)
    assert cursor is None
    assert item["window_end"] == "2025-01-01T10:01:00Z" and item["revenue"] == [{"amount": 100, "currency": "INR"}]


def test_an_exact_page_has_no_next_cursor(s3):
    put_windows(s3, [datetime(2025, 1, 1, 10, m, tzinfo=UTC) for m in range(2)])
    items, cursor = list_windows(s3, BUCKET, limit=2)
    assert len(items) == 2 and cursor is None


@pytest.mark.parametrize("cursor", ["garbage", "e30", encode_cursor("2025-01-01")[:-2], "!!!"])
def test_a_forged_cursor_is_rejected(s3, cursor):
    with pytest.raises(InvalidCursorError):
        list_windows(s3, BUCKET, limit=5, cursor=cursor)


@pytest.mark.parametrize("limit", [0, -1, 101])
def test_limit_is_bounded(s3, limit):
    with pytest.raises(ValueError):
        list_windows(s3, BUCKET, limit=limit)
