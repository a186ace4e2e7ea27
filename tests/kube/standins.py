"""Stand-ins for Flux's controllers: they write status the way source-controller and
kustomize-controller do, through whatever ``Cluster`` and ``StatusWriter`` they are given (the
in-process fake, or the real API server's ``/status`` subresource with an admin identity).

On a new ``reconcile.fluxcd.io/requestedAt`` they set ``status.lastHandledReconcileAt`` to it,
and: a GitRepository stores an artifact ``<branch>@sha1:<head>`` and is Ready; a Kustomization
applies its source's current revision (``lastAppliedRevision``) and is Ready. ``fail`` and
``stall`` make an object report Flux's failure conditions instead; ``on_parent`` runs when the
parent Kustomization reconciles (to create or delete an app's Kustomization, as applying the
apps directory would).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from relay.kube.base import GITREPOSITORIES, KUSTOMIZATIONS, Cluster, Obj, Resource, meta
from relay.kube.fake import FakeCluster
from relay.kube.informer import Informer
from tests.support.kube_status import condition as cond
from tests.support.kube_status import now
from workers.reconcile.flux import REQUESTED_AT


def _release(busy: set[str], name: str) -> Callable[[asyncio.Task[None]], None]:
    """A done-callback that frees ``name`` for its next reconcile."""
    return lambda _task: busy.discard(name)


class StatusWriter(Protocol):
    async def __call__(
        self, resource: Resource, namespace: str, name: str, status: Obj
    ) -> None: ...


def fake_writer(fake: FakeCluster) -> StatusWriter:
    async def write(resource: Resource, namespace: str, name: str, status: Obj) -> None:
        fake.update_status(resource, namespace, name, status)

    return write


@dataclass
class StandInFlux:
    cluster: Cluster
    write: StatusWriter
    namespace: str = "flux-system"
    branch: str = "main"
    head: str = "0" * 40
    delay: float = 0.0
    fail: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (reason, message)
    stall: dict[str, tuple[str, str]] = field(default_factory=dict)
    ignore: set[str] = field(default_factory=set)
    parent: str = "flux-system"
    selector: str | None = None
    on_parent: Callable[[], Awaitable[None]] | None = None
    handled: list[tuple[str, str, str]] = field(default_factory=list)  # (kind, name, value)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _informers: list[Informer] = field(default_factory=list)

    async def __aenter__(self) -> StandInFlux:
        for resource in (GITREPOSITORIES, KUSTOMIZATIONS):
            informer = Informer(
                self.cluster,
                resource,
                self.namespace,
                label_selector=self.selector,
                watch_timeout=60,
            )
            informer.start()
            self._informers.append(informer)
            self._tasks.append(asyncio.create_task(self._serve(informer)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for informer in self._informers:
            await informer.stop()

    def revision(self) -> str:
        return f"{self.branch}@sha1:{self.head}"

    async def _serve(self, informer: Informer) -> None:
        busy: set[str] = set()
        while True:
            for obj in list(informer.cache.values()):
                name = meta(obj)["name"]
                value = (meta(obj).get("annotations") or {}).get(REQUESTED_AT)
                handled = (obj.get("status") or {}).get("lastHandledReconcileAt")
                if value and value != handled and name not in busy and name not in self.ignore:
                    if (obj.get("spec") or {}).get("suspend") is True:
                        continue
                    busy.add(name)
                    task = asyncio.create_task(self._reconcile(informer.resource, obj, value))
                    task.add_done_callback(_release(busy, name))
            await asyncio.sleep(0.02)

    async def _reconcile(self, resource: Resource, obj: Obj, value: str) -> None:
        name, generation = meta(obj)["name"], int(meta(obj).get("generation", 1))
        if self.delay:
            await asyncio.sleep(self.delay)
        if resource is KUSTOMIZATIONS and name == self.parent and self.on_parent is not None:
            await self.on_parent()
        status: dict[str, Any] = {"lastHandledReconcileAt": value, "observedGeneration": generation}
        if name in self.stall:
            reason, message = self.stall[name]
            status["conditions"] = [
                cond("Ready", "False", reason, message, generation),
                cond("Stalled", "True", reason, message, generation),
            ]
        elif name in self.fail:
            reason, message = self.fail[name]
            status["conditions"] = [cond("Ready", "False", reason, message, generation)]
            if resource is KUSTOMIZATIONS:
                status["lastAttemptedRevision"] = self.revision()
        elif resource is GITREPOSITORIES:
            status["artifact"] = {
                "revision": self.revision(),
                "path": f"gitrepository/{self.namespace}/{name}/{self.head}.tar.gz",
                "url": f"http://source-controller/{name}.tar.gz",
                "digest": "sha256:" + "0" * 64,
                "lastUpdateTime": now(),
            }
            message = f"stored artifact for revision '{self.revision()}'"
            status["conditions"] = [
                cond("Ready", "True", "Succeeded", message, generation),
                cond("ArtifactInStorage", "True", "Succeeded", message, generation),
            ]
        else:
            status["lastAppliedRevision"] = self.revision()
            status["lastAttemptedRevision"] = self.revision()
            message = f"Applied revision: {self.revision()}"
            status["conditions"] = [
                cond("Ready", "True", "ReconciliationSucceeded", message, generation)
            ]
        try:
            await self.write(resource, self.namespace, name, status)
        except Exception:  # the API server away: the request stays unhandled, tried again
            return
        self.handled.append((resource.kind, name, value))


def git_repository(
    name: str, namespace: str = "flux-system", *, branch: str = "main", **spec: Any
) -> Obj:
    return {
        "apiVersion": GITREPOSITORIES.api_version,
        "kind": GITREPOSITORIES.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": spec.pop("labels", {})},
        "spec": {
            "interval": "10m",
            "url": "http://127.0.0.1:8418/homelab.git",
            "ref": {"branch": branch},
            **spec,
        },
    }


def kustomization(
    name: str, namespace: str = "flux-system", *, source: str = "flux-system", **spec: Any
) -> Obj:
    return {
        "apiVersion": KUSTOMIZATIONS.api_version,
        "kind": KUSTOMIZATIONS.kind,
        "metadata": {"name": name, "namespace": namespace, "labels": spec.pop("labels", {})},
        "spec": {
            "interval": "10m",
            "path": f"./apps/{name}",
            "prune": True,
            "sourceRef": {"kind": "GitRepository", "name": source},
            **spec,
        },
    }
