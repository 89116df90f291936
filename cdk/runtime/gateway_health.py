"""`GET /healthz` on the HTTP API: the gateway's own health, answered like the local gateway's.

The HTTP API has no mock integrations, so a tiny function (no VPC, no dependencies) answers; reaching
it proves the API, its stage and Lambda integrations work, as the local gateway's `/healthz` proves
the gateway process is up. The services' own health stays behind their `/readyz`.
"""

from __future__ import annotations

import json
from typing import Any

from cloudshop.estate import GATEWAY_HEALTH


def handler(_event: dict[str, Any], _context: Any) -> dict[str, Any]:
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json", "cache-control": "no-store"},
        "body": json.dumps(GATEWAY_HEALTH),
    }
