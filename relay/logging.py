"""Structured logs: configured once in each entry point, context bound through contextvars.

Every line carries whatever of ``event_id``, ``deployment_id``, ``app``, ``stage``, ``worker``
and ``delivery`` is bound where it was written (``bind_context``). A redaction processor runs
last before rendering: it replaces every configured secret value and the values of
Authorization, token and signature fields, wherever in the event dict they appear.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger

REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"(authorization|token|signature|secret|password|passwd|cookie|api[-_]?key|x-hub-signature)",
    re.IGNORECASE,
)
# Credentials inside URLs: scheme://user:password@host
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_MIN_SECRET_LENGTH = 4


class Redactor:
    """A structlog processor that removes secrets from every value of the event dict."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        found = {s for s in secrets if len(s) >= _MIN_SECRET_LENGTH}
        self._secrets = sorted(set(self._secrets) | found, key=len, reverse=True)

    def __call__(self, logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
        return {k: self._clean(k, v) for k, v in event_dict.items()}

    def _clean(self, key: str, value: Any) -> Any:
        if isinstance(key, str) and _SENSITIVE_KEY.search(key) and key not in _SAFE_KEYS:
            return REDACTED if value not in (None, "", [], {}) else value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, Mapping):
            return {k: self._clean(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._clean("", v) for v in value]
        if isinstance(value, bytes):
            return self.scrub(value.decode("utf-8", "replace"))
        return value

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        text = _URL_CREDENTIALS.sub(r"\g<scheme>\g<user>:" + REDACTED + "@", text)
        return _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)


# Keys that name a signature or token without holding one.
_SAFE_KEYS = frozenset({"signature_valid", "token_bucket", "secret_count", "secrets_configured"})

_redactor = Redactor()


def redactor() -> Redactor:
    """The process-wide redactor (secrets are added as settings load)."""
    return _redactor


def _add_logger_name(logger: WrappedLogger, name: str, event_dict: EventDict) -> EventDict:
    """Like structlog's ``add_logger_name``, but also for ``PrintLogger`` (which has no name)."""
    record = event_dict.get("_record")
    found = record.name if record is not None else getattr(logger, "name", None)
    if found:
        event_dict["logger"] = found
    return event_dict


def configure(
    *,
    level: str = "info",
    fmt: str = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog and the standard library's logging for this process."""
    _redactor.add(secrets)
    out = stream or sys.stdout
    fmt = os.environ.get("RELAY_LOG_FORMAT", fmt)
    as_json = fmt == "json" or (fmt == "auto" and not out.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_logger_name,
        structlog.processors.format_exc_info,
    ]
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared, _redactor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    _route_stdlib(out, numeric, shared, renderer)


def _route_stdlib(out: TextIO, level: int, shared: list[Any], renderer: Any) -> None:
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _redactor,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(level, logging.INFO))
    for noisy in ("aiormq", "aio_pika", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@contextmanager
def bind_context(**values: Any) -> Iterator[None]:
    """Bind context (event_id, deployment_id, app, stage, worker…) for the enclosed code."""
    clean = {k: v for k, v in values.items() if v is not None}
    tokens = structlog.contextvars.bind_contextvars(**clean)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def redact_headers(headers: Mapping[str, str]) -> MutableMapping[str, str]:
    """A copy of HTTP headers safe to log."""
    return {k: (REDACTED if _SENSITIVE_KEY.search(k) else v) for k, v in headers.items()}
