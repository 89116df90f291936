"""Is a login session still alive? Read by everything that admits access tokens at the edge: the
local gateway and the cloud's Lambda authorizer. The user service owns the sessions themselves.

`session_is_active` is the sync read (boto3); `session_is_active_async` the same read on the async
`DynamoDB` client. `SessionStatusCache` keeps each answer for a short, stated time, so the edge does
not read DynamoDB on every request: a logout then stops the access token within that bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloudshop.dynamodb import DynamoDB


def session_key(session_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"session#{session_id}"}}


def session_is_active(client: Any, *, table: str, session_id: str) -> bool:
    """False for an unknown, revoked or expired session (DynamoDB's TTL deletes lazily)."""
    if not session_id:
        return False
    item = client.get_item(TableName=table, Key=session_key(session_id), ConsistentRead=True).get("Item")
    return _item_is_active(item)


async def session_is_active_async(dynamodb: DynamoDB, *, table: str, session_id: str) -> bool:
    """`session_is_active` on the async client: a slow DynamoDB costs a coroutine, not a thread."""
    if not session_id:
        return False
    answer = await dynamodb.call(
        "GetItem", {"TableName": table, "Key": session_key(session_id), "ConsistentRead": True}
    )
    return _item_is_active(answer.get("Item"))


def _item_is_active(item: dict[str, Any] | None) -> bool:
    if not item or item.get("revoked", {}).get("BOOL"):
        return False
    return int(item["expires_at"]["N"]) > time.time()


class SessionStatusCache:
    """A per-process memo of session status, each answer kept `ttl_seconds`.

    The bound: a session revoked at time T is refused by this process from T + `ttl_seconds` on
    (the answer read just before T is the newest that can still be served). Inactive answers are
    kept too, so a flood of dead tokens does not become a flood of reads. Concurrent misses for one
    session share one read. At most `max_entries` answers are kept (the oldest go first), so the
    memory is bounded whatever the number of sessions. `clock` is injectable for tests.
    """

    def __init__(
        self,
        lookup: Callable[[str], Awaitable[bool]],
        *,
        ttl_seconds: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._lookup = lookup
        self._clock = clock
        self._answers: dict[str, tuple[float, bool]] = {}
        self._reads: dict[str, asyncio.Future[bool]] = {}

    async def is_active(self, session_id: str) -> bool:
        now = self._clock()
        cached = self._answers.get(session_id)
        if cached is not None and now - cached[0] < self.ttl_seconds:
            return cached[1]
        pending = self._reads.get(session_id)
        if pending is not None:
            return await asyncio.shield(pending)
        # Shielded: a caller that goes away does not cancel the read the others wait on.
        read = asyncio.ensure_future(self._read(session_id, now))
        self._reads[session_id] = read
        return await asyncio.shield(read)

    async def _read(self, session_id: str, asked_at: float) -> bool:
        try:
            active = await self._lookup(session_id)
        finally:
            self._reads.pop(session_id, None)
        if self.ttl_seconds > 0:
            self._answers.pop(session_id, None)
            while len(self._answers) >= self.max_entries:
                self._answers.pop(next(iter(self._answers)))
            # Stamped with the time of asking, not of answering: the bound holds from the revocation.
            self._answers[session_id] = (asked_at, active)
        return active
