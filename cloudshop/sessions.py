"""Is a login session still alive? Read by everything that admits access tokens at the edge: the
local gateway and the cloud's Lambda authorizer. The user service owns the sessions themselves."""

from __future__ import annotations

import time
from typing import Any


def session_key(session_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"session#{session_id}"}}


def session_is_active(client: Any, *, table: str, session_id: str) -> bool:
    """False for an unknown, revoked or expired session (DynamoDB's TTL deletes lazily)."""
    if not session_id:
        return False
    item = client.get_item(TableName=table, Key=session_key(session_id), ConsistentRead=True).get("Item")
    if not item or item.get("revoked", {}).get("BOOL"):
        return False
    return int(item["expires_at"]["N"]) > time.time()
