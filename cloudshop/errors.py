"""Domain errors, rendered once as RFC 9457 problem+json.

Domain and adapter code raise these; `cloudshop.web` maps them to HTTP in one exception handler.
Anything else that escapes is a real fault: logged with its stack trace, answered as a bare 500.
"""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://cloudshop.dev/problems/"

# Problem type slug -> the class that renders it; filled as the classes are defined.
ERRORS_BY_SLUG: dict[str, type[CloudshopError]] = {}


class CloudshopError(Exception):
    status: int = 400
    title: str = "Bad request"
    slug: str = "bad-request"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Every class that names its own problem type is found again by that type on the far side
        # of an HTTP call (`error_from_problem`), so `OutOfStock` stays `OutOfStock`, not `Conflict`.
        if "slug" in cls.__dict__:
            ERRORS_BY_SLUG.setdefault(cls.slug, cls)

    def __init__(self, detail: str | None = None, *, extra: dict[str, Any] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra or {}

    def problem(self) -> dict[str, Any]:
        return problem(self.status, self.title, self.detail, slug=self.slug, **self.extra)


class BadRequest(CloudshopError):
    pass


class ValidationFailed(CloudshopError):
    status, title, slug = 422, "Validation failed", "validation"


class Unauthorized(CloudshopError):
    status, title, slug = 401, "Unauthorized", "unauthorized"


class Forbidden(CloudshopError):
    status, title, slug = 403, "Forbidden", "forbidden"


class NotFound(CloudshopError):
    status, title, slug = 404, "Not found", "not-found"


class Conflict(CloudshopError):
    status, title, slug = 409, "Conflict", "conflict"


class OutOfStock(Conflict):
    title, slug = "Out of stock", "out-of-stock"


class IdempotencyKeyReused(CloudshopError):
    status, title, slug = 422, "Idempotency key reused", "idempotency-key-reused"


class PayloadTooLarge(CloudshopError):
    status, title, slug = 413, "Payload too large", "payload-too-large"


class RateLimited(CloudshopError):
    status, title, slug = 429, "Too many requests", "rate-limited"


class PaymentRequired(CloudshopError):
    status, title, slug = 402, "Payment failed", "payment-failed"


class DependencyUnavailable(CloudshopError):
    status, title, slug = 503, "Service unavailable", "dependency-unavailable"


def problem(status: int, title: str, detail: str, *, slug: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + slug if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    body.update(extra)
    return body


ERRORS_BY_STATUS: dict[int, type[CloudshopError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: PaymentRequired,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
    422: ValidationFailed,
    429: RateLimited,
    503: DependencyUnavailable,
}


def error_from_problem(status: int, body: dict[str, Any]) -> CloudshopError:
    """Rebuild a domain error from another service's problem answer, so it passes through unchanged.

    The problem `type` picks the class when this process knows it (an out-of-stock 409 becomes
    `OutOfStock`, not a plain `Conflict`); otherwise the status does, and the slug is kept as given.
    """
    slug = str(body.get("type", "")).removeprefix(PROBLEM_BASE)
    known = ERRORS_BY_SLUG.get(slug) if status < 500 else None
    cls = known if known is not None and known.status == status else None
    cls = cls or ERRORS_BY_STATUS.get(status, DependencyUnavailable if status >= 500 else BadRequest)
    extra = {k: v for k, v in body.items() if k not in {"type", "title", "status", "detail"}}
    error = cls(str(body.get("detail") or cls.title), extra=extra)
    if status < 500:
        error.status = status
        error.title = str(body.get("title") or cls.title)
        if slug and slug != "about:blank":
            error.slug = slug
    return error
