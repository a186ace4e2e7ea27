"""The reconcile worker: what its two kinds of work share (cluster, informers, patcher).

``git.push``/``git.tag`` are handled in ``push``, ``manifests.committed`` in ``deploy``. Both
read Flux objects from shared informers (one watch per kind and namespace, however many deploys
are waiting) and patch them through one coalescing ``Patcher``.
"""

from __future__ import annotations

import time
from typing import ClassVar

from relay.errors import Permanent, Transient
from relay.events import CloudEvent
from relay.kube.base import Cluster, Obj, Resource
from relay.kube.errors import Forbidden, Invalid, KubeError, NotFound
from relay.kube.informer import Informer, Informers
from relay.settings import KubernetesSettings, Settings
from workers.reconcile import deploy, push
from workers.reconcile.patcher import Patched, Patcher, Target
from workers.runtime import Context
from workers.waiting import permitted, until_synced
from workers.watch.early import AppsWatch

SYNC_TIMEOUT = 10.0  # seconds to wait for an informer's first list before reading directly


class ReconcileWorker:
    name: ClassVar[str] = "reconcile"
    stage: ClassVar[str] = "reconcile"

    def __init__(self, settings: Settings, cluster: Cluster, kube: KubernetesSettings) -> None:
        self.settings = settings
        self.kube = kube
        self.cluster = cluster
        self.keys: tuple[str, ...] = ("git.push", "git.tag", "manifests.committed")
        self.concurrency = kube.concurrency
        self.sync_timeout = SYNC_TIMEOUT
        self.informers = Informers(cluster)
        # The apps namespace, to name a failing rollout while Flux health-checks it.
        self.apps = AppsWatch(cluster, self.informers, settings.deploy.namespace)
        self.patcher = Patcher(cluster, window=kube.coalesce_ms / 1000)

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        if event.routing_key == "manifests.committed":
            await deploy.reconcile_deploy(self, event, ctx)
        else:
            await push.reconcile_push(self, event, ctx)

    async def close(self) -> None:
        await self.patcher.close()
        await self.informers.stop()
        await self.cluster.close()

    def informer(self, resource: Resource, namespace: str) -> Informer:
        return self.informers.get(resource, namespace)

    async def synced(self, resource: Resource, namespace: str) -> Informer:
        """The shared informer, once it has listed (or a Permanent saying why it could not)."""
        informer = self.informer(resource, namespace)
        deadline = time.monotonic() + self.sync_timeout
        try:
            await until_synced(informer, deadline=deadline, what=f"listing {resource.plural}")
        except Permanent as exc:
            if exc.reason != "timeout":
                raise
            # The API server is away: the bus tries the work again later, nothing is lost.
            raise Transient("kubernetes_unavailable", exc.detail) from None
        return informer

    async def read(self, target: Target) -> Obj | None:
        """The object from the shared cache; a direct GET when the cache has not seen it (a
        refusal is believed only once it lasts: see ``permitted``)."""
        informer = await self.synced(target.resource, target.namespace)
        found = informer.get(target.name)
        if found is not None:
            return found
        try:
            return await permitted(
                lambda: self.cluster.get(target.resource, target.namespace, target.name)
            )
        except NotFound:
            return None
        except KubeError as exc:
            raise stage_error(exc) from exc

    async def patch(self, target: Target) -> Patched:
        try:
            return await self.patcher.request(target)
        except KubeError as exc:
            raise stage_error(exc) from exc


def stage_error(exc: KubeError) -> Permanent | Transient:
    """A Kubernetes failure as the deploy pipeline reports it."""
    if isinstance(exc, NotFound):
        return Permanent("flux_object_not_found", exc.message)
    if isinstance(exc, Forbidden):
        return Permanent("forbidden", exc.message)
    if isinstance(exc, Invalid):
        return Permanent("kubernetes_rejected", exc.message)
    return Transient("kubernetes_unavailable", exc.message)
