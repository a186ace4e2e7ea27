"""Wait, on a shared informer, until a Flux object reaches a verdict or the deadline passes.

Every waiting deploy registers a signal under the object's name; the informer sets it on each
change of that object, and the waiter judges the cached object again. No request per waiter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from relay.errors import Permanent
from relay.kube.base import Obj
from relay.kube.informer import Informer
from workers.reconcile.flux import Done, Failed, Verdict
from workers.waiting import check_access, late, until_synced, wait_signal

Judge = Callable[[Obj | None], Verdict]


async def wait_for(
    informer: Informer, name: str, judge: Judge, *, deadline: float, what: str
) -> Done:
    """Judge the cached object on every change until Done (returned) or Failed (raised)."""
    await until_synced(informer, deadline=deadline, what=what)
    signal = asyncio.Event()
    with informer.subscribe(name, signal):
        while True:
            signal.clear()
            recheck = check_access(informer)
            verdict = judge(informer.get(name))
            if isinstance(verdict, Done):
                return verdict
            if isinstance(verdict, Failed):
                raise Permanent("flux_failed", verdict.message)
            if time.monotonic() >= deadline:
                raise Permanent("timeout", late(f"{what}: {verdict.why}", informer))
            await wait_signal(signal, deadline, at_most=recheck)
