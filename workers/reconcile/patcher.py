"""Ask Flux to reconcile an object: one merge patch of ``reconcile.fluxcd.io/requestedAt``,
retried through conflicts and server errors, and coalesced when requests come in bursts.

Coalescing keeps Flux from being asked twenty times for one burst of pushes without delaying a
lone push: the first request for a target is patched at once; requests arriving while that patch
is in flight, or within ``window`` seconds after it was sent, join one trailing patch sent when
the window closes, and share its result. (A request cannot simply reuse the patch in flight:
the push behind it may have landed after that patch, so Flux's fetch could miss it.)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import structlog

from relay.events.data import ObjectRef
from relay.kube.base import Cluster, Obj, Resource
from relay.kube.errors import RETRYABLE, Forbidden
from relay.kube.retry import Backoff, retrying
from workers.reconcile.flux import annotation_patch, requested_at_now

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Target:
    resource: Resource
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.resource.kind} {self.namespace}/{self.name}"

    def ref(self) -> ObjectRef:
        return ObjectRef(kind=self.resource.kind, name=self.name, namespace=self.namespace)


@dataclass(frozen=True)
class Patched:
    """The value set and the object as the server returned it."""

    value: str
    object: Obj
    coalesced: bool = False


@dataclass
class _State:
    last_sent: float = float("-inf")
    inflight: asyncio.Future[Patched] | None = None
    trailing: asyncio.Future[Patched] | None = None
    waiters: int = 0


@dataclass
class Patcher:
    """See the module docstring; one per process, shared by every handler."""

    cluster: Cluster
    window: float = 0.5
    attempts: int = 8
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.05, cap=2.0))
    _states: dict[Target, _State] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    sent: int = 0

    async def request(self, target: Target) -> Patched:
        """Patch ``target`` now or as part of the next coalesced patch; raises ``KubeError``."""
        state = self._states.setdefault(target, _State())
        state.waiters += 1
        try:
            if state.trailing is not None:
                return _shared(await asyncio.shield(state.trailing))
            busy = _pending(state) is not None
            if busy or time.monotonic() - state.last_sent < self.window:
                return _shared(await asyncio.shield(self._trail(target, state)))
            return await asyncio.shield(self._send(target, state))
        finally:
            state.waiters -= 1
            self._forget_later(target, state)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _trail(self, target: Target, state: _State) -> asyncio.Future[Patched]:
        future: asyncio.Future[Patched] = asyncio.get_running_loop().create_future()
        state.trailing = future
        task = asyncio.create_task(self._send_trailing(target, state, future))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return future

    async def _send_trailing(
        self, target: Target, state: _State, future: asyncio.Future[Patched]
    ) -> None:
        try:
            await asyncio.sleep(max(0.0, state.last_sent + self.window - time.monotonic()))
            while (inflight := _pending(state)) is not None:
                await asyncio.wait({inflight})  # its outcome is its own waiters' business
            state.trailing = None
            future.set_result(await self._send(target, state))
        except Exception as exc:
            state.trailing = None
            future.set_exception(exc)
        except asyncio.CancelledError:
            future.cancel()
            raise

    def _send(self, target: Target, state: _State) -> asyncio.Future[Patched]:
        state.last_sent = time.monotonic()
        state.inflight = asyncio.ensure_future(self._patch(target))
        return state.inflight

    async def _patch(self, target: Target) -> Patched:
        value = requested_at_now()
        obj = await retrying(
            lambda: self.cluster.patch_merge(
                target.resource, target.namespace, target.name, annotation_patch(value)
            ),
            attempts=self.attempts,
            backoff=Backoff(self.backoff.initial, self.backoff.factor, self.backoff.cap),
            # Forbidden too: a restarted API server refuses everyone until its RBAC cache fills.
            retry_on=(*RETRYABLE, Forbidden),
            what=f"patch {target}",
        )
        self.sent += 1
        log.info("reconcile requested", target=str(target), requested_at=value)
        return Patched(value=value, object=obj)

    def _forget_later(self, target: Target, state: _State) -> None:
        def forget() -> None:
            idle = state.waiters == 0 and _pending(state) is None and state.trailing is None
            quiet = time.monotonic() - state.last_sent >= self.window
            if idle and quiet and self._states.get(target) is state:
                del self._states[target]

        asyncio.get_running_loop().call_later(self.window + 0.01, forget)


def _pending(state: _State) -> asyncio.Future[Patched] | None:
    """The patch in flight, if one is. Read ``done()``, never a done-callback: a coroutine
    looping on a flag that only a callback clears would spin without ever letting it run."""
    inflight = state.inflight
    return inflight if inflight is not None and not inflight.done() else None


def _shared(result: Patched) -> Patched:
    return Patched(value=result.value, object=result.object, coalesced=True)
