"""Page cursors: the one codec of every list's `next_cursor`.

A cursor is where the next page starts, as URL-safe base64 of a small JSON object. It comes back from
the client, so it is untrusted input like any other: `decode_cursor` takes the exact fields the list
wrote, and each field's reader checks type and size before the value reaches a query. A garbled or
forged cursor is therefore a 400 problem, never a 500 (nor a query that fails in the database). A
forged cursor that passes only moves where a page starts, within what the caller may see anyway.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from cloudshop.errors import BadRequest

# Longer than any cursor a list writes (the API's query parameters are shorter still).
MAX_CURSOR_CHARS = 1000
_ALPHABET = re.compile(r"^[A-Za-z0-9_-]+$")

# A field's reader: the value as the list uses it, or ValueError/TypeError.
FieldReader = Callable[[Any], Any]


class InvalidCursor(BadRequest):
    title, slug = "Invalid cursor", "invalid-cursor"


def encode_cursor(fields: Mapping[str, Any]) -> str:
    raw = json.dumps(dict(fields), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, fields: Mapping[str, FieldReader]) -> dict[str, Any]:
    """The cursor's fields, each read by its reader; exactly `fields`, or `InvalidCursor`."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS or not _ALPHABET.match(cursor):
            raise ValueError("not a cursor")
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(data, dict) or set(data) != set(fields):
            raise ValueError("not this list's cursor")
        return {name: read(data[name]) for name, read in fields.items()}
    except (ValueError, TypeError, binascii.Error, RecursionError) as exc:
        raise InvalidCursor("The cursor is not valid for this list.") from exc


def text(*, max_length: int, min_length: int = 1) -> FieldReader:
    def read(value: Any) -> str:
        if not isinstance(value, str) or not min_length <= len(value) <= max_length:
            raise ValueError("not a string of the right length")
        return value

    return read


def integer(*, minimum: int, maximum: int) -> FieldReader:
    def read(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise ValueError("not an integer in range")
        return value

    return read


def timestamp(value: Any) -> datetime:
    """An ISO-8601 time with its offset (every stored time is UTC)."""
    if not isinstance(value, str) or len(value) > 40:
        raise ValueError("not a timestamp")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("a timestamp without its offset")
    return parsed


def exactly(expected: Any) -> FieldReader:
    def read(value: Any) -> Any:
        if value != expected or type(value) is not type(expected):
            raise ValueError("another list's cursor")
        return value

    return read
