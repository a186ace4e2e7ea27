"""The request error table: status, code, body and Retry-After of each as the middleware answers."""

from __future__ import annotations

import json

import pytest

from relay.gateway import errors
from relay.gateway.middleware import to_response

TABLE = [
    (errors.BadRequest, 400, "bad_request", None),
    (errors.Unauthorized, 401, "unauthorized", None),
    (errors.NotFound, 404, "not_found", None),
    (errors.RequestTimeout, 408, "request_timeout", None),
    (errors.Conflict, 409, "replayed_signature", None),
    (errors.TooLarge, 413, "body_too_large", None),
    (errors.UnsupportedMediaType, 415, "unsupported_media_type", None),
    (errors.Unprocessable, 422, "invalid_request", None),
    (errors.RateLimited, 429, "rate_limited", None),
    (errors.Unavailable, 503, "broker_unavailable", "5"),
]


@pytest.mark.parametrize(("kind", "status", "code", "retry_after"), TABLE)
def test_each_error_answers_its_status_and_code(
    kind: type[errors.RequestError], status: int, code: str, retry_after: str | None
) -> None:
    answer = to_response(kind("what went wrong"))
    assert answer.status == status
    assert answer.text is not None
    assert json.loads(answer.text) == {"error": code, "detail": "what went wrong"}
    assert answer.headers.get("Retry-After") == retry_after
    assert kind.__module__ == "relay.gateway.errors" and kind.__name__ in errors.__doc__


def test_a_raise_may_name_its_code_extra_fields_and_retry_after() -> None:
    raised = errors.RateLimited("slow down", code="too_fast", retry_after=3, extra={"ip": "x"})
    answer = to_response(raised)
    assert answer.status == 429 and answer.headers["Retry-After"] == "3"
    assert answer.text is not None
    assert json.loads(answer.text) == {"error": "too_fast", "detail": "slow down", "ip": "x"}
    assert to_response(errors.Unavailable("busy", retry_after=9)).headers["Retry-After"] == "9"
