"""An in-process API server for fast tests: the ``Cluster`` interface over a dict.

It keeps what the workers depend on from a real server: resourceVersions that grow, watches that
replay from a resourceVersion and then follow live changes, ``Gone`` for a compacted one, JSON
merge patches, generation bumped only by spec changes, and label and field selectors. Test code
plays the controllers with ``create``/``update_status``/``delete`` and injects faults with
``fail_next``, ``go_away``/``come_back``, ``compact`` and ``end_watches``. Every patch is recorded.
The real server shows the same behaviours in ``tests/kube/``.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import itertools
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay.kube.base import Obj, ObjectList, Resource, WatchEvent, WatchType, meta
from relay.kube.errors import Gone, KubeError, NotFound, Unreachable

Key = tuple[Resource, str]


@dataclass(frozen=True)
class PatchRecord:
    resource: Resource
    namespace: str
    name: str
    patch: dict[str, Any]
    content_type: str
    at: float


@dataclass(eq=False)
class _Stream:
    resource: Resource
    namespace: str
    selector: str | None
    queue: asyncio.Queue[WatchEvent | KubeError | None] = field(default_factory=asyncio.Queue)


class FakeCluster:
    """The ``Cluster`` interface in memory; see the module docstring."""

    def __init__(self) -> None:
        self._objects: dict[Key, dict[str, Obj]] = defaultdict(dict)
        self._rv = itertools.count(1000)
        self._last_rv = 999
        self._history: deque[tuple[int, Key, WatchEvent]] = deque(maxlen=100_000)
        self._compacted = 0
        self._streams: set[_Stream] = set()
        self._faults: dict[str, deque[KubeError]] = defaultdict(deque)
        self.reachable = True
        self.patches: list[PatchRecord] = []
        self.calls: dict[str, int] = defaultdict(int)
        self.watches_opened = 0
        self.latency = 0.0

    # --- the Cluster interface -------------------------------------------------------------
    async def get(self, resource: Resource, namespace: str, name: str) -> Obj:
        await self._enter("get")
        return copy.deepcopy(self._find(resource, namespace, name))

    async def patch_merge(
        self, resource: Resource, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Obj:
        await self._enter("patch")
        current = self._find(resource, namespace, name)
        updated = merge_patch(copy.deepcopy(current), copy.deepcopy(dict(patch)))
        self.patches.append(
            PatchRecord(
                resource,
                namespace,
                name,
                copy.deepcopy(dict(patch)),
                "application/merge-patch+json",
                time.monotonic(),
            )
        )
        return copy.deepcopy(self._store(resource, updated, "MODIFIED", previous=current))

    async def list(
        self,
        resource: Resource,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjectList:
        await self._enter("list")
        items = [
            copy.deepcopy(obj)
            for obj in self._objects[(resource, namespace)].values()
            if matches_labels(obj, label_selector) and matches_fields(obj, field_selector)
        ]
        return ObjectList(items=items, resource_version=str(self._last_rv))

    async def watch(
        self,
        resource: Resource,
        namespace: str,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        opened: Callable[[], None] | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        await self._enter("watch")
        start = int(resource_version or self._last_rv)
        if start < self._compacted:
            raise Gone(f"too old resource version: {start} ({self._compacted})")
        if opened is not None:
            opened()
        stream = _Stream(resource, namespace, label_selector)
        self._streams.add(stream)
        self.watches_opened += 1
        for event in self._replay(stream, start):
            stream.queue.put_nowait(event)
        try:
            async with asyncio.timeout(timeout_seconds):
                while (item := await stream.queue.get()) is not None:
                    if isinstance(item, KubeError):
                        raise item
                    yield item
        except TimeoutError:
            return
        finally:
            self._streams.discard(stream)

    async def close(self) -> None:
        self.end_watches()

    # --- what tests (the stand-in controllers) do ---------------------------------------------
    @property
    def open_watches(self) -> int:
        return len(self._streams)

    def create(self, resource: Resource, obj: Obj) -> Obj:
        body = copy.deepcopy(obj)
        body.setdefault("apiVersion", resource.api_version)
        body.setdefault("kind", resource.kind)
        md = body.setdefault("metadata", {})
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        md["generation"] = 1
        if md["name"] in self._objects[(resource, md["namespace"])]:
            raise KubeError(f"{resource.kind} {md['name']} already exists", status=409)
        return copy.deepcopy(self._store(resource, body, "ADDED"))

    def update_status(self, resource: Resource, namespace: str, name: str, status: Obj) -> Obj:
        """Merge ``status`` into the object's status, as a controller's status update does."""
        current = self._find(resource, namespace, name)
        updated = merge_patch(copy.deepcopy(current), {"status": copy.deepcopy(status)})
        return copy.deepcopy(self._store(resource, updated, "MODIFIED", previous=current))

    def update(self, resource: Resource, namespace: str, name: str, patch: Obj) -> Obj:
        """A merge patch that is not recorded as the relay's (someone else's edit)."""
        current = self._find(resource, namespace, name)
        updated = merge_patch(copy.deepcopy(current), copy.deepcopy(patch))
        return copy.deepcopy(self._store(resource, updated, "MODIFIED", previous=current))

    def delete(self, resource: Resource, namespace: str, name: str) -> None:
        obj = self._objects[(resource, namespace)].pop(name)
        obj["metadata"]["resourceVersion"] = str(self._next_rv())
        self._emit(resource, namespace, "DELETED", obj)

    def stored(self, resource: Resource, namespace: str, name: str) -> Obj | None:
        found = self._objects[(resource, namespace)].get(name)
        return copy.deepcopy(found) if found is not None else None

    def fail_next(self, op: str, error: KubeError, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` (get, patch, list, watch) raise ``error``."""
        self._faults[op].extend([error] * times)

    def compact(self) -> None:
        """Forget history: a watch from an older resourceVersion now raises ``Gone``."""
        self._compacted = self._last_rv
        self._history.clear()

    def end_watches(self, error: KubeError | None = None) -> None:
        """Close every open watch (the server timing them out, or dropping with ``error``)."""
        for stream in list(self._streams):
            stream.queue.put_nowait(error)

    def go_away(self) -> None:
        """The API server stops: calls raise ``Unreachable`` and open watches break."""
        self.reachable = False
        self.end_watches(Unreachable("connection refused (fake API server stopped)"))

    def come_back(self) -> None:
        self.reachable = True

    def bookmark(self) -> None:
        """Send a BOOKMARK with the current resourceVersion on every open watch."""
        for stream in self._streams:
            marker = {
                "kind": stream.resource.kind,
                "metadata": {"resourceVersion": str(self._last_rv)},
            }
            stream.queue.put_nowait(WatchEvent("BOOKMARK", marker))

    # --- internals --------------------------------------------------------------------------
    async def _enter(self, op: str) -> None:
        self.calls[op] += 1
        if self.latency:
            await asyncio.sleep(self.latency)
        else:
            await asyncio.sleep(0)
        if not self.reachable:
            raise Unreachable("connection refused (fake API server stopped)")
        if self._faults[op]:
            raise self._faults[op].popleft()

    def _find(self, resource: Resource, namespace: str, name: str) -> Obj:
        found = self._objects[(resource, namespace)].get(name)
        if found is None:
            raise NotFound(f'{resource.plural} "{name}" not found in {namespace}')
        return found

    def _next_rv(self) -> int:
        self._last_rv = next(self._rv)
        return self._last_rv

    def _store(
        self, resource: Resource, obj: Obj, kind: WatchType, previous: Obj | None = None
    ) -> Obj:
        md = obj["metadata"]
        if previous is not None and _spec_part(previous) != _spec_part(obj):
            md["generation"] = int(meta(previous).get("generation", 1)) + 1
        md["resourceVersion"] = str(self._next_rv())
        self._objects[(resource, md["namespace"])][md["name"]] = obj
        self._emit(resource, md["namespace"], kind, obj)
        return obj

    def _emit(self, resource: Resource, namespace: str, kind: WatchType, obj: Obj) -> None:
        event = WatchEvent(kind, copy.deepcopy(obj))
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0][0]
        self._history.append((self._last_rv, (resource, namespace), event))
        for stream in self._streams:
            if (stream.resource, stream.namespace) == (resource, namespace) and matches_labels(
                obj, stream.selector
            ):
                stream.queue.put_nowait(event)

    def _replay(self, stream: _Stream, start: int) -> builtins.list[WatchEvent]:
        return [
            event
            for rv, key, event in self._history
            if rv > start
            and key == (stream.resource, stream.namespace)
            and matches_labels(event.object, stream.selector)
        ]


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: ``null`` deletes, objects merge, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def matches_labels(obj: Obj, selector: str | None) -> bool:
    """Equality-based label selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``."""
    labels = meta(obj).get("labels") or {}
    return all(_requirement(labels, part.strip()) for part in (selector or "").split(",") if part)


def _requirement(labels: Mapping[str, str], term: str) -> bool:
    if "!=" in term:
        key, value = term.split("!=", 1)
        return labels.get(key.strip()) != value.strip()
    if "=" in term:
        key, value = term.replace("==", "=").split("=", 1)
        return labels.get(key.strip()) == value.strip()
    if term.startswith("!"):
        return term[1:] not in labels
    return term in labels


def matches_fields(obj: Obj, selector: str | None) -> bool:
    """Field selectors of the form ``a.b=v`` joined by commas."""
    for part in (selector or "").split(","):
        if not part:
            continue
        path, value = part.split("=", 1)
        found: Any = obj
        for step in path.strip().split("."):
            found = found.get(step) if isinstance(found, dict) else None
        if str(found) != value.strip():
            return False
    return True
