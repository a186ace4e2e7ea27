"""Per-source-IP token buckets, and the client address behind trusted proxies only.

A bucket holds ``requests`` tokens and refills at ``requests / per_seconds`` a second; an empty
bucket answers how long until the next token (``Retry-After``). The number of addresses
remembered is bounded, least recently seen first out. ``X-Forwarded-For`` and
``CF-Connecting-IP`` are believed only when the peer itself is a configured trusted proxy.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimiter:
    def __init__(self, *, requests: int, per_seconds: float, max_keys: int = 50_000) -> None:
        self._capacity = float(requests)
        self._rate = requests / per_seconds
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, *, now: float | None = None) -> int:
        """0 when a token was taken, else the whole seconds until one is available."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._rate)
        wait = 0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = max(1, math.ceil((1.0 - tokens) / self._rate))
        self._buckets[key] = (tokens, now)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait


def parse_networks(values: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(v.strip(), strict=False) for v in values)


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip())
    except ValueError:
        return None


def _trusted(address: str | None, networks: tuple[IPNetwork, ...]) -> bool:
    parsed = _address(address or "")
    return parsed is not None and any(parsed in net for net in networks)


def client_ip(peer: str | None, headers: Mapping[str, str], trusted: tuple[IPNetwork, ...]) -> str:
    """The client's address: the peer, or what a trusted proxy peer says it forwarded."""
    if not trusted or not _trusted(peer, trusted):
        return peer or "unknown"
    connecting = headers.get("CF-Connecting-IP", "")
    if _address(connecting) is not None:
        return connecting.strip()
    hops = [h.strip() for h in headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    for hop in reversed(hops):
        if _address(hop) is None:
            break
        if not _trusted(hop, trusted):
            return hop
    return peer or "unknown"
