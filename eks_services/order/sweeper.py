"""Settles orders whose checkout never finished: a background thread in every order replica.

A checkout that loses the payment service after its order is written answers 503 and leaves the
order PENDING_PAYMENT with its stock reserved. A client that retries with the same key resumes it;
one that never does would hold the stock forever. This sweeper settles such orders once they are
old enough; replicas may overlap, which is safe (idempotent charge, conditional transitions).
"""

from __future__ import annotations

import logging
import threading

from eks_services.order.service import CheckoutService

log = logging.getLogger("cloudshop.sweeper")


class AbandonedOrderSweeper:
    def __init__(self, *, checkout: CheckoutService, interval_seconds: float, older_than_seconds: float) -> None:
        self.checkout = checkout
        self.interval_seconds = interval_seconds
        self.older_than_seconds = older_than_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_seconds):
            try:
                settled = self.checkout.settle_abandoned(older_than_seconds=self.older_than_seconds)
                if settled:
                    log.info("settled abandoned orders", extra={"fields": {"count": settled}})
            except Exception as exc:  # a storage hiccup must not end the thread
                log.warning("sweep failed", extra={"fields": {"error": repr(exc)}})

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="abandoned-order-sweeper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
            self._thread = None
