"""Pure transforms of the analytics job: `DataFrame -> DataFrame`, no sources, no sinks.

The same functions run on a streaming frame (the job), on a batch frame (`--once`, the tests, the
benchmark) and on Spark 3.5 (Dataproc 2.2) as on the local pyspark 4.x, so they use only API that
both have: no `dropDuplicatesWithinWatermark`, no 4.x-only functions, `try_cast` through SQL.

Pipeline (`window_metrics_from_json`):

    raw JSON lines  --parse_events-->  typed events  --window_metrics-->  one row per 1-minute window

`window_metrics` keeps the `order.paid` events (a sale), sets the event-time watermark on them (the
watermark follows the latest sale: Spark's optimizer would push the event-type filter below the
watermark anyway, so that is what any order of the two calls means), drops duplicate deliveries by
`event_id` (the key includes `event_time`, so Spark can forget an id once the watermark has passed
it), then aggregates per tumbling window. Distinct counts are exact: the sizes of `collect_set`s, never `countDistinct`
(unsupported on streams) nor `approx_count_distinct`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import (
    ArrayType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
)

WINDOW_DURATION = "1 minute"
SALE_EVENT_TYPE = "order.paid"
# The event version this job understands; a new version must be taught here explicitly rather than
# be read with the meaning of v1.
EVENT_VERSION = 1
# ISO-8601 with offset; renders `Z` for UTC, which is what the job's session time zone is.
ISO_FORMAT = "yyyy-MM-dd'T'HH:mm:ssXXX"

_MONEY = StructType([StructField("amount", LongType()), StructField("currency", StringType())])

# The fields of the envelope and of `OrderEventDataV1` that the analytics read. JSON parsing ignores
# every other field, so additions to the event do not break the job.
EVENT_SCHEMA = StructType(
    [
        StructField("event_id", StringType()),
        StructField("event_type", StringType()),
        StructField("version", IntegerType()),
        StructField("occurred_at", StringType()),
        StructField("source", StringType()),
        StructField(
            "data",
            StructType(
                [
                    StructField("order_id", StringType()),
                    StructField("user_id", StringType()),
                    StructField("status", StringType()),
                    StructField("total", _MONEY),
                    StructField("items", LongType()),
                    StructField("payment_id", StringType()),
                ]
            ),
        ),
    ]
)

REVENUE_TYPE = ArrayType(_MONEY)

# Column order of every result frame (and of the BigQuery table in analytics/terraform).
RESULT_COLUMNS = (
    "window_start",
    "window_end",
    "unique_users",
    "orders",
    "revenue",
    "items_sold",
    "final",
)


def parse_events(raw: DataFrame) -> DataFrame:
    """JSON envelopes in a string column `value` -> one typed row per valid order event.

    Lines that are not JSON, lack an id, a time, an order or a user, or carry another version are
    dropped: one bad record must not stop the stream. `occurred_at` (ISO-8601 with offset) becomes
    the `event_time` timestamp; the broker's timestamp is never used.
    """
    envelope = F.from_json(F.col("value").cast("string"), EVENT_SCHEMA).alias("e")
    return (
        raw.select(envelope)
        .select(
            F.col("e.event_id").alias("event_id"),
            F.col("e.event_type").alias("event_type"),
            F.col("e.version").alias("version"),
            # try_cast: an unparseable time is a bad record, not a failed query (ANSI mode in 4.x).
            F.expr("try_cast(e.occurred_at AS TIMESTAMP)").alias("event_time"),
            F.col("e.data.order_id").alias("order_id"),
            F.col("e.data.user_id").alias("user_id"),
            F.coalesce(F.col("e.data.items"), F.lit(0).cast("long")).alias("items"),
            F.col("e.data.total.amount").alias("amount"),
            F.col("e.data.total.currency").alias("currency"),
        )
        .where(
            F.col("event_id").isNotNull()
            & F.col("event_type").isNotNull()
            & F.col("event_time").isNotNull()
            & F.col("order_id").isNotNull()
            & F.col("user_id").isNotNull()
            & (F.col("version") == EVENT_VERSION)
        )
    )


def window_metrics(events: DataFrame, *, watermark: str, window: str = WINDOW_DURATION) -> DataFrame:
    """Typed order events -> one row per tumbling window of sales.

    Columns: window_start, window_end (timestamps), unique_users, orders, items_sold (longs),
    revenue (array of {amount, currency}, one entry per currency, sorted by currency). On a stream
    in append mode a row is emitted once, when the watermark passes the window's end, and events
    at or behind the watermark are dropped (counted by `analytics.monitor`). On a batch frame the
    watermark is a no-op and every event counts.
    """
    sales = (
        events.where(F.col("event_type") == SALE_EVENT_TYPE)
        .withWatermark("event_time", watermark)
        # At-least-once delivery: the same event_id may arrive twice. A duplicate carries the same
        # occurred_at, so including event_time changes nothing but lets the state expire.
        .dropDuplicates(["event_id", "event_time"])
    )
    aggregated = sales.groupBy(F.window("event_time", window).alias("window")).agg(
        F.collect_set("user_id").alias("_users"),
        F.collect_set("order_id").alias("_orders"),
        # collect_list skips nulls: a sale without a total counts as an order, not as revenue.
        F.collect_list(F.when(F.col("currency").isNotNull(), F.struct(F.col("currency"), F.col("amount")))).alias(
            "_sales"
        ),
        F.sum("items").alias("_items"),
    )
    return aggregated.select(
        F.col("window.start").alias("window_start"),
        F.col("window.end").alias("window_end"),
        F.size("_users").cast("long").alias("unique_users"),
        F.size("_orders").cast("long").alias("orders"),
        _revenue_per_currency(F.col("_sales")).alias("revenue"),
        F.coalesce(F.col("_items"), F.lit(0)).cast("long").alias("items_sold"),
    )


def _revenue_per_currency(sales: Column) -> Column:
    """array<{currency, amount}> -> array<{amount, currency}> summed per currency, sorted by currency."""
    currencies = F.array_sort(F.array_distinct(F.transform(sales, lambda sale: sale["currency"])))
    return F.transform(
        currencies,
        lambda currency: F.struct(
            F.aggregate(
                F.filter(sales, lambda sale: sale["currency"] == currency),
                F.lit(0).cast("long"),
                lambda total, sale: total + F.coalesce(sale["amount"], F.lit(0).cast("long")),
            ).alias("amount"),
            currency.alias("currency"),
        ),
    ).cast(REVENUE_TYPE)


def mark_final(metrics: DataFrame, *, final: bool | Column) -> DataFrame:
    """Add the `final` flag and put the columns in `RESULT_COLUMNS` order."""
    flag = final if isinstance(final, Column) else F.lit(final)
    return metrics.withColumn("final", flag.cast("boolean")).select(*RESULT_COLUMNS)


def mark_final_at(metrics: DataFrame, *, max_event_time: Column, watermark: str) -> DataFrame:
    """For a batch over every event so far: a window is final once the watermark that a stream would
    have (`max_event_time - watermark`, max over the sales) has reached its end; later ones are open."""
    closed = F.col("window_end") <= max_event_time - F.expr(f"INTERVAL {watermark}")
    return mark_final(metrics, final=F.coalesce(closed, F.lit(False)))


def to_records(results: DataFrame) -> DataFrame:
    """Result rows -> (key, value) JSON strings with explicit field names, for Kafka and S3.

    `key` is the window start (ISO-8601), so a window's records stay in one partition and the S3
    object of a window is overwritten, not duplicated, when it is written again.
    """
    start = F.date_format("window_start", ISO_FORMAT)
    payload = F.struct(
        start.alias("window_start"),
        F.date_format("window_end", ISO_FORMAT).alias("window_end"),
        F.col("unique_users"),
        F.col("orders"),
        F.col("revenue"),
        F.col("items_sold"),
        F.col("final"),
    )
    return results.select(start.alias("key"), F.to_json(payload).alias("value"))


def max_sale_time(events: DataFrame) -> Column:
    """An aggregate expression: the latest sale's event time, what the stream's watermark follows."""
    return F.max(F.when(F.col("event_type") == SALE_EVENT_TYPE, F.col("event_time")))


def window_metrics_from_json(raw: DataFrame, *, watermark: str, window: str = WINDOW_DURATION) -> DataFrame:
    """JSON lines -> window metrics (without the `final` flag): parse, then aggregate."""
    return window_metrics(parse_events(raw), watermark=watermark, window=window)
