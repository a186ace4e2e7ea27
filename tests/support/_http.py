"""A tiny HTTP client for the service harnesses (no third-party dependency): 4xx/5xx come back
as responses, not exceptions, and redirects are not followed."""

from __future__ import annotations

import base64
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def basic_auth(username: str, password: str) -> str:
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http_request(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpResponse:
    """One HTTP request; 4xx/5xx come back as responses, not exceptions; redirects not followed."""
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    try:
        with _OPENER.open(req, timeout=timeout) as resp:
            return HttpResponse(
                resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
            )
    except urllib.error.HTTPError as err:
        with err:
            body = err.read()
            return HttpResponse(err.code, {k.lower(): v for k, v in err.headers.items()}, body)


def http_status(url: str, headers: Mapping[str, str] | None = None, timeout: float = 1.0) -> int:
    """Status of a GET, or 0 while nothing answers."""
    try:
        return http_request("GET", url, headers=headers, timeout=timeout).status
    except (OSError, urllib.error.URLError):
        return 0
