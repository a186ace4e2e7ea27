"""One shared list+watch per (resource, namespace, selector), serving every waiting task.

A deploy waiting for its rollout must not cost a watch connection of its own: thousands of
waits would mean thousands of streams on the API server. An ``Informer`` lists once, then
watches from the list's resourceVersion (with bookmarks), keeps the objects in memory and wakes
the waiters registered under an object's key (by default its name) on every change. When the
stream ends it resumes from the last resourceVersion it saw; after ``Gone`` (410, history
compacted) or any other refusal it lists again; while the API server is away it reconnects
with back-off, and ``error``/``outage_since`` tell waiters why nothing is moving, until a list
answers or a watch is accepted again (a quiet collection may send no event for minutes).

Its task runs in a context of its own: it serves every deploy, so its log lines must not carry
the deployment, app and event ids bound by whichever handler happened to start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from relay.kube.base import Cluster, Obj, Resource, WatchEvent, meta
from relay.kube.errors import Gone, KubeError, Unreachable
from relay.kube.retry import Backoff

log = structlog.get_logger(__name__)

KeyFunc = Callable[[Obj], str | None]


def by_name(obj: Obj) -> str | None:
    name = meta(obj).get("name")
    return str(name) if name else None


class Informer:
    """See the module docstring. ``start()`` once; ``stop()`` when done."""

    def __init__(
        self,
        cluster: Cluster,
        resource: Resource,
        namespace: str,
        *,
        label_selector: str | None = None,
        key: KeyFunc = by_name,
        watch_timeout: int = 300,
        backoff: Backoff | None = None,
    ) -> None:
        self.cluster = cluster
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self._key = key
        self._watch_timeout = watch_timeout
        self._backoff = backoff or Backoff(initial=0.2, cap=5.0)
        self.cache: dict[str, Obj] = {}
        self._index: dict[str, set[str]] = defaultdict(set)
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self.resource_version = ""
        self.synced = asyncio.Event()
        self.error: KubeError | None = None
        self.outage_since: float | None = None  # when the current outage began
        self.error_since: float | None = None  # when the current kind of error began
        self.lists = 0
        self.watches = 0
        self.gone = 0  # 410s seen (each followed by a list)
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Informer({self.resource.plural} in {self.namespace}, {self.label_selector or '-'})"

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=repr(self), context=contextvars.Context()
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- what waiters use -----------------------------------------------------------------
    def get(self, name: str) -> Obj | None:
        return self.cache.get(name)

    def objects_for(self, key: str) -> list[Obj]:
        """The cached objects whose key is ``key`` (e.g. the pods of one app)."""
        return [self.cache[name] for name in self._index.get(key, ()) if name in self.cache]

    @contextlib.contextmanager
    def subscribe(self, key: str, signal: asyncio.Event) -> Iterator[None]:
        """Set ``signal`` whenever an object with ``key`` changes (or everything may have)."""
        self._waiters[key].add(signal)
        try:
            yield
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(signal)
                if not waiters:
                    del self._waiters[key]

    @property
    def waiting(self) -> int:
        return sum(len(w) for w in self._waiters.values())

    def describe_outage(self) -> str | None:
        """A sentence about why this informer is not current, or None when it is."""
        if self.error is None or self.outage_since is None:
            return None
        seconds = time.monotonic() - self.outage_since
        return f"Kubernetes API not answering for {seconds:.0f}s: {self.error.message}"

    # --- the loop -----------------------------------------------------------------------------
    async def _run(self) -> None:
        relist = True
        while True:
            try:
                if relist:
                    await self._relist()
                    relist = False
                await self._follow()
            except Gone as exc:
                self.gone += 1
                log.info(
                    "watch history compacted, listing again", informer=repr(self), error=exc.message
                )
                relist = True
            except Unreachable as exc:
                self._failed(exc)  # resume from our resourceVersion once it answers again
                await asyncio.sleep(self._backoff.next())
            except KubeError as exc:
                # Refused or failing for this resourceVersion (a compacted previous version can
                # give 500 instead of 410): start over from a list, as client-go's reflector does.
                self._failed(exc)
                relist = True
                await asyncio.sleep(self._backoff.next())
            except Exception as exc:
                log.exception("informer failed unexpectedly", informer=repr(self))
                self._failed(KubeError(f"{type(exc).__name__}: {exc}"))
                relist = True
                await asyncio.sleep(self._backoff.next())

    async def _relist(self) -> None:
        listed = await self.cluster.list(
            self.resource, self.namespace, label_selector=self.label_selector
        )
        self.lists += 1
        self.cache = {}
        self._index = defaultdict(set)
        for obj in listed.items:
            self._put(obj)
        self.resource_version = listed.resource_version
        self._recovered()
        self.synced.set()
        self._notify_all()

    async def _follow(self) -> None:
        opened, seen = time.monotonic(), 0
        stream = self.cluster.watch(
            self.resource,
            self.namespace,
            resource_version=self.resource_version,
            label_selector=self.label_selector,
            timeout_seconds=self._watch_timeout,
            opened=self._watch_opened,
        )
        self.watches += 1
        async with contextlib.aclosing(stream):
            async for event in stream:
                if seen == 0:
                    self._recovered()
                seen += 1
                self._apply(event)
        if seen == 0 and time.monotonic() - opened < 1.0:
            # Closed at once with nothing said: do not spin on a server that does this.
            await asyncio.sleep(self._backoff.next())

    def _apply(self, event: WatchEvent) -> None:
        if event.resource_version:
            self.resource_version = event.resource_version
        if event.type == "BOOKMARK":
            return
        name = event.name
        old = self.cache.get(name)
        if event.type == "DELETED":
            self._drop(name)
        else:
            self._put(event.object)
        for key in {k for k in (self._key(event.object), old and self._key(old)) if k}:
            self._notify(key)

    def _put(self, obj: Obj) -> None:
        name = str(meta(obj).get("name", ""))
        self._drop(name)
        self.cache[name] = obj
        key = self._key(obj)
        if key:
            self._index[key].add(name)

    def _drop(self, name: str) -> None:
        old = self.cache.pop(name, None)
        key = self._key(old) if old is not None else None
        if key and key in self._index:
            self._index[key].discard(name)
            if not self._index[key]:
                del self._index[key]

    def _failed(self, exc: KubeError) -> None:
        first, changed = self.error is None, type(exc) is not type(self.error)
        self.error = exc
        if changed:
            self.error_since = time.monotonic()
        if first:
            self.outage_since = time.monotonic()
            log.warning("kubernetes watch interrupted", informer=repr(self), error=exc.message)
        if changed:
            self._notify_all()

    def _watch_opened(self) -> None:
        """The server accepted the watch: it answers again. The back-off is reset only once it
        says something (an event, a list), so a server that closes every watch at once is not
        asked again and again."""
        self._recovered(reset_backoff=False)

    def _recovered(self, *, reset_backoff: bool = True) -> None:
        if self.error is not None:
            log.info("kubernetes watch resumed", informer=repr(self))
        self.error = None
        self.outage_since = self.error_since = None
        if reset_backoff:
            self._backoff.reset()

    def _notify(self, key: str) -> None:
        for signal in self._waiters.get(key, ()):
            signal.set()

    def _notify_all(self) -> None:
        for waiters in self._waiters.values():
            for signal in waiters:
                signal.set()


@dataclass(frozen=True)
class _Spec:
    resource: Resource
    namespace: str
    label_selector: str | None


class Informers:
    """The process's informers, one per (resource, namespace, selector), started on first use."""

    def __init__(self, cluster: Cluster, *, watch_timeout: int = 300) -> None:
        self.cluster = cluster
        self._watch_timeout = watch_timeout
        self._running: dict[_Spec, Informer] = {}

    def get(
        self,
        resource: Resource,
        namespace: str,
        *,
        label_selector: str | None = None,
        key: KeyFunc = by_name,
    ) -> Informer:
        spec = _Spec(resource, namespace, label_selector)
        informer = self._running.get(spec)
        if informer is None:
            informer = Informer(
                self.cluster,
                resource,
                namespace,
                label_selector=label_selector,
                key=key,
                watch_timeout=self._watch_timeout,
            )
            self._running[spec] = informer
            informer.start()
        return informer

    def all(self) -> list[Informer]:
        return list(self._running.values())

    async def stop(self) -> None:
        running, self._running = list(self._running.values()), {}
        await asyncio.gather(*(informer.stop() for informer in running))
