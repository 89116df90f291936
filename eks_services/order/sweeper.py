"""Settles orders whose checkout never finished: an asyncio task in every order replica.

A checkout that loses the payment service after its order is written answers 503 and leaves the
order PENDING_PAYMENT with its stock reserved. A client that retries with the same key resumes it;
one that never does would hold the stock forever. This sweeper settles such orders once they are
old enough; replicas may overlap, which is safe (idempotent charge, conditional transitions).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from eks_services.order.service import CheckoutService

log = logging.getLogger("cloudshop.sweeper")


class AbandonedOrderSweeper:
    def __init__(self, *, checkout: CheckoutService, interval_seconds: float, older_than_seconds: float) -> None:
        self.checkout = checkout
        self.interval_seconds = interval_seconds
        self.older_than_seconds = older_than_seconds
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_seconds)
            try:
                settled = await self.checkout.settle_abandoned(older_than_seconds=self.older_than_seconds)
                if settled:
                    log.info("settled abandoned orders", extra={"fields": {"count": settled}})
            except Exception as exc:  # a storage hiccup must not end the task
                log.warning("sweep failed", extra={"fields": {"error": repr(exc)}})

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="abandoned-order-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
