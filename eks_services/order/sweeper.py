"""Finishes what requests left unfinished: an asyncio task in every order replica.

Each round it takes the next page of unfinished orders and the next page of expired reservations:

- A checkout that loses the payment service (or whose payment outcome the provider never gave)
  leaves its order PENDING_PAYMENT with its stock reserved. A client that retries with the same key
  resumes it; for one that never does, the sweeper charges it (idempotent per order: at most once,
  and a charge whose outcome was unknown is asked again) once it is old enough.
- A cancel claims the order (CANCELLING) before it refunds and releases; one whose process died after
  the claim is finished here.
- A reservation that outlived its expiry uncommitted belongs to a checkout that never wrote its
  order (or whose commit failed): committed when its order exists, released when it does not.

Every item gets a bounded time; one that raises or hangs is counted (`order_sweeper_items_total`,
outcome `failed`) and skipped, and the next round moves on to the next page, so poison orders cannot
stop the sweeper. Replicas may overlap, which is safe (idempotent charge, conditional transitions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from eks_services.order.service import CheckoutService, SweepRound

log = logging.getLogger("cloudshop.sweeper")


class AbandonedOrderSweeper:
    def __init__(self, *, checkout: CheckoutService, interval_seconds: float, older_than_seconds: float) -> None:
        self.checkout = checkout
        self.interval_seconds = interval_seconds
        self.older_than_seconds = older_than_seconds
        self._task: asyncio.Task[None] | None = None
        self._items_metric: Any = None

    def attach_metrics(self, metrics: Any) -> None:
        """Count into the app's Prometheus registry (`cloudshop.observability.Metrics`)."""
        self._items_metric = metrics.counter(
            "order_sweeper_items_total",
            "Orders and reservations the sweeper looked at, by kind and outcome",
            ("kind", "outcome"),
        )

    def _count(self, kind: str, round_: SweepRound) -> None:
        if self._items_metric is None:
            return
        for outcome in ("settled", "waiting", "failed"):
            if count := getattr(round_, outcome):
                self._items_metric.labels(kind, outcome).inc(count)

    async def sweep_once(self) -> tuple[SweepRound, SweepRound]:
        """One round: unfinished orders, then expired reservations. Each part's failure is its own."""
        orders = reservations = SweepRound()
        try:
            orders = await self.checkout.settle_abandoned(older_than_seconds=self.older_than_seconds)
            self._count("order", orders)
        except Exception as exc:  # the table itself failed: the next round tries again
            log.warning("order sweep failed", extra={"fields": {"error": repr(exc)}})
        try:
            reservations = await self.checkout.release_expired_reservations()
            self._count("reservation", reservations)
        except Exception as exc:  # the catalog is unreachable: the next round tries again
            log.warning("reservation sweep failed", extra={"fields": {"error": repr(exc)}})
        if orders.settled or orders.failed or reservations.settled or reservations.failed:
            log.info(
                "sweeper round",
                extra={
                    "fields": {
                        "orders_settled": orders.settled,
                        "orders_failed": orders.failed,
                        "reservations_settled": reservations.settled,
                        "reservations_failed": reservations.failed,
                    }
                },
            )
        return orders, reservations

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            await self.sweep_once()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="abandoned-order-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
