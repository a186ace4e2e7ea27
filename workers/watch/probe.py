"""Optional last check before ``deploy.ready``: the app answers at its public URL.

A rollout can be complete while the route in front of it is not programmed yet; with
``kubernetes.probe_urls`` the watch worker GETs the app's URL about once a second until it
answers with anything but a server error or "not found" (the gateway's answers while the route
is missing), or the deadline passes.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp

from relay.errors import Permanent

READY_STATUSES = range(200, 400)
ALSO_READY = frozenset({401, 403})  # the app is there, it only wants credentials


async def probe(url: str, *, deadline: float, interval: float = 1.0) -> int:
    """GET ``url`` until it answers as ready; the status, or ``Permanent('timeout')``."""
    last = "no answer yet"
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in READY_STATUSES or response.status in ALSO_READY:
                        return response.status
                    last = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
    raise Permanent("timeout", f"{url} did not answer as ready before the deadline ({last})")
