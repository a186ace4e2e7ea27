"""Request errors: each one an HTTP status, a machine code and a sentence for a person.

Handlers raise these (or ``SignatureError``, ``PayloadError``, ``PublishError``); the one error
middleware (``middleware``) turns them into ``{"error": code, "detail": sentence}`` bodies, with
``Retry-After`` when the error carries a ``retry_after``.

RequestError            500 internal_error
├── BadRequest          400 bad_request
├── Unauthorized        401 unauthorized
├── NotFound            404 not_found
├── RequestTimeout      408 request_timeout
├── Conflict            409 replayed_signature
├── TooLarge            413 body_too_large
├── UnsupportedMediaType 415 unsupported_media_type
├── Unprocessable       422 invalid_request
├── RateLimited         429 rate_limited
└── Unavailable         503 broker_unavailable, Retry-After: 5 unless told otherwise

A raise may name a more precise ``code`` (``NotFound(..., code="unknown_receiver")``) and
``extra`` body fields (``Unprocessable(..., extra={"field": "app"})``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from relay.errors import RelayError

RETRY_AFTER_UNAVAILABLE = 5


class RequestError(RelayError):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    default_retry_after: ClassVar[int | None] = None

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        retry_after: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.error_code = code or self.code
        self.retry_after = self.default_retry_after if retry_after is None else retry_after
        self.extra = extra or {}


def _kind(
    name: str, status: int, code: str, *, retry_after: int | None = None
) -> type[RequestError]:
    """A ``RequestError`` subclass answering ``status`` with ``code``."""
    attrs = {
        "status": status,
        "code": code,
        "default_retry_after": retry_after,
        "__module__": __name__,
        "__doc__": f"{status} {code}",
    }
    return type(name, (RequestError,), attrs)


BadRequest = _kind("BadRequest", 400, "bad_request")
Unauthorized = _kind("Unauthorized", 401, "unauthorized")
NotFound = _kind("NotFound", 404, "not_found")
RequestTimeout = _kind("RequestTimeout", 408, "request_timeout")
Conflict = _kind("Conflict", 409, "replayed_signature")
TooLarge = _kind("TooLarge", 413, "body_too_large")
UnsupportedMediaType = _kind("UnsupportedMediaType", 415, "unsupported_media_type")
Unprocessable = _kind("Unprocessable", 422, "invalid_request")
RateLimited = _kind("RateLimited", 429, "rate_limited")
Unavailable = _kind("Unavailable", 503, "broker_unavailable", retry_after=RETRY_AFTER_UNAVAILABLE)
