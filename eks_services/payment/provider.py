"""The built-in simulated card processor: deterministic by test token, so every outcome is testable.

A real processor plugs in behind the same `PaymentProvider` port (see `ports.py`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from cloudshop.errors import ValidationFailed
from eks_services.payment.model import ChargeResult, ProviderError, RefundResult, check_payment_method

CARD_OK = "pm_card_ok"
CARD_DECLINED = "pm_card_declined"
CARD_INSUFFICIENT_FUNDS = "pm_card_insufficient_funds"
CARD_ERROR = "pm_card_error"
CARD_SLOW = "pm_card_slow"

# Declining tokens and their decline codes, as a processor would report them.
DECLINES = {CARD_DECLINED: "card_declined", CARD_INSUFFICIENT_FUNDS: "insufficient_funds"}
TEST_TOKENS = frozenset({CARD_OK, CARD_ERROR, CARD_SLOW, *DECLINES})


class SimulatedProvider:
    def __init__(
        self, *, slow_charge_seconds: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self.slow_charge_seconds = slow_charge_seconds
        self._sleep = sleep

    async def verify(self, payment_method: str) -> None:
        if check_payment_method(payment_method) not in TEST_TOKENS:
            raise ValidationFailed("Unknown payment method.", extra={"payment_method": payment_method})

    async def charge(self, *, payment_id: str, amount: int, currency: str, payment_method: str) -> ChargeResult:
        await self.verify(payment_method)
        if payment_method == CARD_ERROR:
            raise ProviderError("The simulated processor is failing for pm_card_error.")
        if payment_method == CARD_SLOW:
            # Awaited, never blocking: a slow processor must not hold up the other requests.
            await self._sleep(self.slow_charge_seconds)
        # The reference is derived from the payment id: charging twice gives the same capture.
        reference = "sim_ch_" + uuid.uuid5(uuid.NAMESPACE_URL, payment_id).hex
        if payment_method in DECLINES:
            return ChargeResult(captured=False, reference=reference, decline_code=DECLINES[payment_method])
        return ChargeResult(captured=True, reference=reference)

    async def refund(self, *, payment_id: str, refund_id: str, amount: int) -> RefundResult:
        return RefundResult(reference="sim_re_" + uuid.uuid5(uuid.NAMESPACE_URL, refund_id).hex)
