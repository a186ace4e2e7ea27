"""Request errors: each one an HTTP status, a machine code and a sentence for a person.

Handlers raise these (or ``SignatureError``, ``PayloadError``, ``PublishError``); the one error
middleware (``middleware``) turns them into ``{"error": code, "detail": sentence}`` bodies.
"""

from __future__ import annotations

from typing import Any, ClassVar

from relay.errors import RelayError

RETRY_AFTER_UNAVAILABLE = 5


class RequestError(RelayError):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

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
        self.retry_after = retry_after
        self.extra = extra or {}


class BadRequest(RequestError):
    status, code = 400, "bad_request"


class Unauthorized(RequestError):
    status, code = 401, "unauthorized"


class NotFound(RequestError):
    status, code = 404, "not_found"


class RequestTimeout(RequestError):
    status, code = 408, "request_timeout"


class Conflict(RequestError):
    status, code = 409, "replayed_signature"


class TooLarge(RequestError):
    status, code = 413, "body_too_large"


class UnsupportedMediaType(RequestError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(RequestError):
    status, code = 422, "invalid_request"


class RateLimited(RequestError):
    status, code = 429, "rate_limited"


class Unavailable(RequestError):
    status, code = 503, "broker_unavailable"

    def __init__(self, detail: str, *, retry_after: int = RETRY_AFTER_UNAVAILABLE) -> None:
        super().__init__(detail, retry_after=retry_after)
