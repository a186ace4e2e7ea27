"""Registry authentication: Basic (htpasswd) and the Docker token flow, with a token cache.

A registry answers an anonymous request with ``401`` and a ``WWW-Authenticate`` challenge.
``Basic realm=…`` means: send the user and password with every request. ``Bearer realm=…,
service=…,scope=…`` means: fetch a token from ``realm`` (with Basic credentials when there are
any) for that service and scope, then send ``Authorization: Bearer <token>``. Tokens are cached
per host and scope until shortly before they expire. Credentials are only ever sent to the
configured registry host (and its token realm), and over plain HTTP only when it is ``insecure``.
"""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass, field

from pydantic import SecretStr

_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')
_EXPIRY_MARGIN = 10.0  # seconds before a token's expiry it is no longer used
_DEFAULT_TOKEN_SECONDS = 60.0  # the distribution spec's default when expires_in is absent


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower-cased
    params: dict[str, str]


def parse_challenge(header: str | None) -> Challenge | None:
    """The first challenge of a ``WWW-Authenticate`` header, or None when there is none."""
    if not header:
        return None
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): m.group(2) or m.group(3) or "" for m in _PARAM.finditer(rest)}
    return Challenge(scheme=scheme.lower(), params=params)


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """The registry account and the one host it may be sent to."""

    host: str
    username: str
    password: SecretStr = field(repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password.get_secret_value()}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def auth_config_entry(self) -> dict[str, str]:
        """The ``auths`` entry of a containers auth.json / docker config.json."""
        raw = f"{self.username}:{self.password.get_secret_value()}".encode()
        return {"auth": base64.b64encode(raw).decode()}


@dataclass
class TokenCache:
    """Bearer tokens by (host, scope), and hosts known to want Basic auth."""

    _tokens: dict[tuple[str, str], tuple[str, float]] = field(default_factory=dict)
    basic_hosts: set[str] = field(default_factory=set)

    def get(self, host: str, scope: str) -> str | None:
        found = self._tokens.get((host, scope))
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]

    def put(self, host: str, scope: str, token: str, expires_in: float | None) -> None:
        seconds = expires_in if expires_in and expires_in > 0 else _DEFAULT_TOKEN_SECONDS
        until = time.monotonic() + max(seconds - _EXPIRY_MARGIN, seconds / 2)
        self._tokens[(host, scope)] = (token, until)

    def forget(self, host: str, scope: str) -> None:
        self._tokens.pop((host, scope), None)
