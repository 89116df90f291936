"""Fixtures of the analytics tests: one SparkSession for the whole test session, event helpers.

The session is local, on loopback, UTC, with two shuffle partitions, and carries the Kafka connector
(from Maven Central through Ivy, cached under ~/.ivy2), so the batch, streaming and Kafka tests all
share one JVM.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from tests.analytics.helpers import SegmentWriter


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    from analytics.spark import build_session, kafka_package

    session = build_session("cloudshop-analytics-tests", master="local[2]", packages=[kafka_package()])
    session.sparkContext.setLogLevel("ERROR")
    yield session
    for query in session.streams.active:
        query.stop()
    session.stop()


@pytest.fixture
def segment_writer(tmp_path: Path) -> Callable[..., SegmentWriter]:
    """Writers of the file log's segment layout under a fresh EVENT_LOG_DIR."""

    def make(topic: str = "orders") -> SegmentWriter:
        return SegmentWriter(tmp_path / "events", topic)

    return make
