"""The built-in simulated card processor: deterministic by test token, so every outcome is testable.

`pm_card_unknown_then_ok` and `pm_card_unknown_then_declined` model a processor whose answer is lost:
the first charge of a payment gets no answer (`ProviderOutcomeUnknown`), and asking again about the
same payment id answers what really happened (captured, or declined). The simulator remembers which
payments it was asked about in this process.

A real processor plugs in behind the same `PaymentProvider` port (see `ports.py`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from cloudshop.errors import ValidationFailed
from eks_services.payment.model import (
    ChargeResult,
    ProviderError,
    ProviderOutcomeUnknown,
    RefundResult,
    check_payment_method,
)

CARD_OK = "pm_card_ok"
CARD_DECLINED = "pm_card_declined"
CARD_INSUFFICIENT_FUNDS = "pm_card_insufficient_funds"
CARD_ERROR = "pm_card_error"
CARD_SLOW = "pm_card_slow"
CARD_UNKNOWN_THEN_OK = "pm_card_unknown_then_ok"
CARD_UNKNOWN_THEN_DECLINED = "pm_card_unknown_then_declined"

# Declining tokens and their decline codes, as a processor would report them.
DECLINES = {CARD_DECLINED: "card_declined", CARD_INSUFFICIENT_FUNDS: "insufficient_funds"}
# Tokens whose first charge gets no answer, and the token whose outcome asking again reveals.
UNKNOWN_FIRST = {CARD_UNKNOWN_THEN_OK: CARD_OK, CARD_UNKNOWN_THEN_DECLINED: CARD_DECLINED}
TEST_TOKENS = frozenset({CARD_OK, CARD_ERROR, CARD_SLOW, *DECLINES, *UNKNOWN_FIRST})


class SimulatedProvider:
    def __init__(
        self, *, slow_charge_seconds: float, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    ) -> None:
        self.slow_charge_seconds = slow_charge_seconds
        self._sleep = sleep
        # Payments charged with an `UNKNOWN_FIRST` token whose first answer was already lost.
        self._asked: set[str] = set()

    async def verify(self, payment_method: str) -> None:
        if check_payment_method(payment_method) not in TEST_TOKENS:
            raise ValidationFailed("Unknown payment method.", extra={"payment_method": payment_method})

    async def charge(self, *, payment_id: str, amount: int, currency: str, payment_method: str) -> ChargeResult:
        await self.verify(payment_method)
        if payment_method == CARD_ERROR:
            raise ProviderError("The simulated processor is failing for pm_card_error.")
        if payment_method in UNKNOWN_FIRST:
            if payment_id not in self._asked:
                self._asked.add(payment_id)
                raise ProviderOutcomeUnknown(f"The simulated processor lost its answer for {payment_method}.")
            payment_method = UNKNOWN_FIRST[payment_method]
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
