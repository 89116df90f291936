"""Event contract: the envelope and one versioned model per event type.

Every event travels as `{event_id, event_type, version, occurred_at, source, data}`, plus an optional
`traceparent` (W3C trace context, as in the CloudEvents distributed-tracing extension): the span that
wrote the event, captured when it was written, so the relay that publishes it later from the outbox
and every consumer continue the same trace (`cloudshop.tracing`). Events without it stay valid. Order events go
to the Kafka topic `orders` (key = order id) and to the SQS queue `order-events`; payment events go to
the SQS queue `payment-events` (the order service consumes them). The JSON Schemas under
`cloudshop/schemas/` are generated from these models (`cloudshop schemas`) and checked in CI, so a
change here that consumers have not seen fails the contract tests.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudshop import tracing

SCHEMA_DIR = Path(__file__).parent / "schemas"

OrderEventType = Literal[
    "order.created",
    "order.paid",
    "order.payment_failed",
    "order.cancelled",
    "order.refunded",
    "order.fulfilled",
]
ORDER_EVENT_TYPES: tuple[str, ...] = OrderEventType.__args__  # type: ignore[attr-defined]


# Lenient on purpose: a traceparent of a later W3C version must not make an event unreadable; one
# that does not parse only starts a new trace at the consumer.
TRACEPARENT_MAX = 512
TRACEPARENT_DOC = "W3C trace context of the span that wrote the event (optional)"


class Money(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: int = Field(ge=0, description="Integer minor units (paise, cents)")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 code")


class OrderLineV1(BaseModel):
    model_config = ConfigDict(extra="forbid")

    product_id: str
    name: str
    quantity: int = Field(ge=1)
    unit_price: Money


class OrderEventDataV1(BaseModel):
    """The data of every `order.*` event, version 1: a snapshot of the order after the change."""

    model_config = ConfigDict(extra="forbid")

    order_id: str
    user_id: str
    status: str
    total: Money
    items: int = Field(ge=0, description="Units in the order (sum of line quantities)")
    lines: list[OrderLineV1]
    payment_id: str | None = None
    refunded: Money | None = None
    # Where the notification service sends the order email; analytics ignores it.
    customer_email: str | None = None


class OrderEventV1(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str
    event_type: OrderEventType
    version: Literal[1] = 1
    occurred_at: datetime
    source: str = "order-service"
    data: OrderEventDataV1
    traceparent: str | None = Field(default=None, max_length=TRACEPARENT_MAX, description=TRACEPARENT_DOC)

    @classmethod
    def new(
        cls, event_type: OrderEventType, data: OrderEventDataV1, *, occurred_at: datetime | None = None
    ) -> OrderEventV1:
        """A new event, carrying the current trace context; the span writing it is tagged `order.id`."""
        tracing.tag_current("order.id", data.order_id)
        return cls(
            event_id=str(uuid.uuid4()),
            event_type=event_type,
            occurred_at=occurred_at or datetime.now(UTC),
            data=data,
            traceparent=tracing.current_traceparent(),
        )

    @property
    def key(self) -> str:
        return self.data.order_id

    def to_json(self) -> str:
        return self.model_dump_json()


class PaymentRefundedDataV1(BaseModel):
    """The data of `payment.refunded`, version 1: one refund that the provider has confirmed, and where
    the payment stands after it. Totals count confirmed refunds only, so `fully_refunded` is true only
    once all of the capture is back with the customer."""

    model_config = ConfigDict(extra="forbid")

    payment_id: str
    order_id: str
    user_id: str
    amount: Money = Field(description="This refund")
    refunded_total: Money = Field(description="Every confirmed refund of the payment, this one included")
    captured: Money = Field(description="What the charge captured")
    fully_refunded: bool


class PaymentRefundedV1(BaseModel):
    """`payment.refunded` on the SQS queue `payment-events`. The event id is derived from the refund id,
    so a refund announced twice (the relay is at least once) carries the same id both times."""

    model_config = ConfigDict(extra="forbid")

    event_id: str
    event_type: Literal["payment.refunded"] = "payment.refunded"
    version: Literal[1] = 1
    occurred_at: datetime
    source: str = "payment-service"
    data: PaymentRefundedDataV1
    traceparent: str | None = Field(default=None, max_length=TRACEPARENT_MAX, description=TRACEPARENT_DOC)

    @property
    def key(self) -> str:
        return self.data.order_id

    def to_json(self) -> str:
        return self.model_dump_json()


EVENT_MODELS: dict[str, type[BaseModel]] = {
    "order_event.v1": OrderEventV1,
    "payment_refunded.v1": PaymentRefundedV1,
}


def json_schemas() -> dict[str, dict[str, Any]]:
    return {name: model.model_json_schema() for name, model in EVENT_MODELS.items()}


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in json_schemas().items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
        written.append(path)
    return written
