"""What can go wrong talking to the Kubernetes API, as a small tree the workers can act on.

KubeError
├── NotFound      404: the object (or its kind) does not exist
├── Conflict      409: a concurrent write won; try again
├── Forbidden     401/403: the relay's identity may not do this (RBAC, bad token)
├── Invalid       400/415/422: the server refuses the request itself; trying again will not help
├── Gone          410: the resourceVersion a watch started from was compacted away; re-list
├── ServerError   5xx and 429: the server is there but failing or throttling; try again later
└── Unreachable   no answer at all (connection refused or reset, TLS, timeout)

Workers retry ``Conflict``, ``ServerError`` and ``Unreachable`` with back-off; ``Forbidden``,
``Invalid`` and ``NotFound`` are answers. Only ``relay.kube`` raises these.
"""

from __future__ import annotations

import json

from relay.errors import RelayError


class KubeError(RelayError):
    """A Kubernetes API call that did not succeed; ``status`` is the HTTP status (0: none)."""

    status: int = 0

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class NotFound(KubeError):
    status = 404


class Conflict(KubeError):
    status = 409


class Forbidden(KubeError):
    status = 403


class Invalid(KubeError):
    status = 422


class Gone(KubeError):
    status = 410


class ServerError(KubeError):
    status = 500


class Unreachable(KubeError):
    status = 0


RETRYABLE: tuple[type[KubeError], ...] = (Conflict, ServerError, Unreachable)


def from_status(status: int, body: bytes | str | None, *, what: str) -> KubeError:
    """The error for an HTTP status and the server's ``Status`` body, naming ``what`` was asked."""
    message = f"{what}: {status_message(body) or f'HTTP {status}'}"
    if status == 404:
        return NotFound(message)
    if status == 409:
        return Conflict(message)
    if status in (401, 403):
        return Forbidden(message, status=status)
    if status == 410:
        return Gone(message)
    if status == 429 or status >= 500:
        return ServerError(message, status=status)
    return Invalid(message, status=status)


def status_message(body: bytes | str | None) -> str:
    """The ``message`` of a Kubernetes ``Status`` object, or the body's start when it is not one."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        parsed = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        return str(parsed["message"])
    return text[:300]
