"""The one error middleware: every failure becomes ``{"error", "detail"}`` with its status.

It also counts every answer by receiver and status for ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

from relay.errors import PublishError
from relay.gateway.errors import RETRY_AFTER_UNAVAILABLE, RequestError
from relay.gateway.state import STATE
from relay.receivers import PayloadError
from relay.signing import SignatureError

log = structlog.get_logger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(
    status: int, code: str, detail: str, *, retry_after: int | None = None, **extra: object
) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body = {"error": code, "detail": detail, **extra}
    return web.json_response(body, status=status, headers=headers)


def to_response(exc: Exception) -> web.Response:
    match exc:
        case RequestError():
            return error_response(
                exc.status, exc.error_code, exc.detail, retry_after=exc.retry_after, **exc.extra
            )
        case SignatureError():
            return error_response(401, exc.reason, exc.detail)
        case PayloadError():
            return error_response(400, "malformed_payload", str(exc))
        case PublishError():
            return error_response(
                503, "broker_unavailable", str(exc), retry_after=RETRY_AFTER_UNAVAILABLE
            )
        case web.HTTPException():
            code = exc.reason.lower().replace(" ", "_")
            answer = error_response(exc.status, code, _sentence(exc))
            if "Allow" in exc.headers:
                answer.headers["Allow"] = exc.headers["Allow"]
            return answer
    log.exception("request failed", error=type(exc).__name__)
    return error_response(500, "internal_error", "the gateway failed; see its log")


def _sentence(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "there is nothing at this path"
    if exc.status == 405:
        return f"method not allowed here; allowed: {exc.headers.get('Allow', '')}"
    return exc.reason


def _label(request: web.Request) -> str:
    name = request.match_info.get("receiver")
    if name is not None:
        return name if name in request.app[STATE].receivers else "unknown"
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unknown"


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        response = await handler(request)
    except Exception as exc:
        response = to_response(exc)
        if isinstance(exc, SignatureError):
            state.metrics.signature_failures.labels(_label(request), exc.reason).inc()
    state.metrics.requests.labels(_label(request), str(response.status)).inc()
    return response
