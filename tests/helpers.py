"""Assertions shared by the API tests."""

from __future__ import annotations

from typing import Any


def assert_problem(answer: Any, status: int) -> dict[str, Any]:
    """An RFC 9457 problem answer with this status, and no stack trace in it."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert body["status"] == status and body["title"] and "detail" in body
    assert "Traceback" not in answer.text
    return body  # type: ignore[no-any-return]
