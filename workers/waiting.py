"""Waiting on shared informers, as the reconcile and watch workers both do.

A waiter registers a signal with the informers it depends on, judges the cached objects, and
sleeps until the signal is set or its deadline passes (``time.monotonic()`` seconds). These
helpers keep the three failure modes uniform: the cache never filled, access is forbidden, the
deadline passed while the API server was away.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from relay.errors import Permanent
from relay.kube.errors import Forbidden
from relay.kube.informer import Informer
from relay.kube.retry import Backoff

T = TypeVar("T")


async def until_synced(informer: Informer, *, deadline: float, what: str) -> None:
    """Wait for the informer's first list, or fail saying why it has not come."""
    while not informer.synced.is_set():
        check_access(informer)
        if time.monotonic() >= deadline:
            raise Permanent("timeout", f"{what}: {informer.describe_outage() or 'no answer'}")
        await wait_signal(informer.synced, deadline, at_most=0.2)


# A restarted API server refuses everyone for a moment while its RBAC cache fills: a refusal
# counts only once it has lasted this long.
FORBIDDEN_GRACE = 5.0


async def permitted(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, made again while the API server refuses it for less than the grace: its first
    answers after a restart are 403 for everyone (up to about 60 ms on the test server), which
    must not fail a deploy as ``forbidden``. A refusal that lasts is raised."""
    backoff = Backoff(initial=0.05, cap=1.0)
    refused_since: float | None = None
    while True:
        try:
            return await call()
        except Forbidden:
            now = time.monotonic()
            refused_since = now if refused_since is None else refused_since
            if now - refused_since >= FORBIDDEN_GRACE:
                raise
            await asyncio.sleep(backoff.next())


def check_access(informer: Informer) -> float | None:
    """Fail when the API server has refused the relay's identity for longer than the grace;
    else the seconds until the grace ends (to look again then), or None when not refused."""
    if not isinstance(informer.error, Forbidden) or informer.error_since is None:
        return None
    left = FORBIDDEN_GRACE - (time.monotonic() - informer.error_since)
    if left <= 0:
        raise Permanent("forbidden", informer.error.message)
    return left


def late(what: str, informer: Informer) -> str:
    """A timeout's detail, with the API server outage when there is one."""
    outage = informer.describe_outage()
    return what + (f"; {outage}" if outage else "")


async def wait_signal(
    signal: asyncio.Event, deadline: float, *, at_most: float | None = None
) -> bool:
    """Wait for ``signal`` until the deadline (or ``at_most`` seconds); False when it timed out."""
    remaining = deadline - time.monotonic()
    if at_most is not None:
        remaining = min(remaining, at_most)
    if remaining <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(remaining):
            await signal.wait()
            return True
    return False
