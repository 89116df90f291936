"""Money rules every service shares (DESIGN.md §5: integer minor units plus an ISO 4217 code).

`AMOUNT_MAX` is the largest amount one payment may carry. The payment service refuses a charge
above it, and the order service refuses (before it reserves any stock) an order whose total is
above it: one number, so an order the order service accepts is always one the payment service can
charge. A cart can otherwise exceed it: 50 lines x 99 units x the catalog's highest price
(10^10 minor units) is about 5 x 10^13.
"""

from __future__ import annotations

AMOUNT_MAX = 10**12  # minor units; far above any real basket, low enough to stay exact everywhere
