"""Wait, on shared informers, until a Flux object reaches a verdict or the deadline passes.

Every waiting deploy registers a signal under the object's name; the informer sets it on each
change of that object, and the waiter judges the cached object again. No request per waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence

from relay.errors import Permanent
from relay.kube.base import Obj
from relay.kube.informer import Informer
from workers.reconcile.flux import Done, Failed, Verdict
from workers.waiting import check_access, late, until_synced, wait_signal

Judge = Callable[[Obj | None], Verdict]
Check = Callable[[], Awaitable[None]]


async def wait_for(
    informer: Informer,
    name: str,
    judge: Judge,
    *,
    deadline: float,
    what: str,
    also: Sequence[Informer] = (),
    check: Check | None = None,
) -> Done:
    """Judge the cached object on every change until Done (returned) or Failed (raised).

    ``check`` runs while the verdict is still Waiting, and on changes seen by the ``also``
    informers (under the same name) too; it raises to end the wait early.
    """
    await until_synced(informer, deadline=deadline, what=what)
    signal = asyncio.Event()
    with contextlib.ExitStack() as subscriptions:
        for source in (informer, *also):
            subscriptions.enter_context(source.subscribe(name, signal))
        while True:
            signal.clear()
            recheck = check_access(informer)
            verdict = judge(informer.get(name))
            if isinstance(verdict, Done):
                return verdict
            if isinstance(verdict, Failed):
                raise Permanent("flux_failed", verdict.message)
            if check is not None:
                await check()
            if time.monotonic() >= deadline:
                raise Permanent("timeout", late(f"{what}: {verdict.why}", informer))
            await wait_signal(signal, deadline, at_most=recheck)
