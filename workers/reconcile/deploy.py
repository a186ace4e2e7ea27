"""``manifests.committed``: have Flux apply a deploy's commit now, and follow it to the end.

As ``flux reconcile ks <app> --with-source``: request the GitRepository, wait until its artifact
holds the commit, then request the app's Kustomization and wait until it has applied that
revision and is Ready (``reconcile.completed``), or failed with Flux's message (``Permanent``).
A new app's Kustomization only exists once the parent Kustomization applied the commit: the
parent is requested too and the app's Kustomization awaited, bounded. For a teardown the source
and the parent are requested and the stage completes when the app's Kustomization is gone.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import structlog

from relay.errors import Permanent
from relay.events import CloudEvent
from relay.events.data import ManifestsCommitted, ReconcileCompleted, ReconcileRequested
from relay.kube.base import GITREPOSITORIES, KUSTOMIZATIONS, Obj
from workers.chain import carried, seconds_since
from workers.reconcile.flux import (
    Done,
    Verdict,
    Waiting,
    kustomization_verdict,
    source_verdict,
    suspended,
)
from workers.reconcile.follow import Judge, wait_for
from workers.reconcile.patcher import Target
from workers.runtime import Context
from workers.watch import rollout

if TYPE_CHECKING:
    from workers.reconcile.worker import ReconcileWorker

log = structlog.get_logger(__name__)


class _Deploy:
    """One deploy's walk through Flux; ``deadline`` bounds all of it."""

    def __init__(self, worker: ReconcileWorker, event: CloudEvent, ctx: Context) -> None:
        self.worker, self.ctx = worker, ctx
        self.data = event.payload(ManifestsCommitted)
        if not event.app:
            raise Permanent("invalid_event", "manifests.committed without an app")
        self.app = event.app
        self.deployment_id = event.deploymentid
        self.started = time.monotonic()
        self.deadline = self.started + worker.kube.reconcile_timeout
        gitops, flux_ns = worker.settings.deploy.gitops, worker.kube.flux_namespace
        self.source = Target(GITREPOSITORIES, gitops.source_namespace, gitops.source_name)
        self.kustomization = Target(KUSTOMIZATIONS, flux_ns, self.app)
        parent = worker.kube.parent_kustomization
        self.parent = Target(KUSTOMIZATIONS, flux_ns, parent) if parent else None
        self.revision: str | None = None

    async def run(self) -> None:
        await self._refuse_suspended()
        patched = await self.worker.patch(self.source)
        await self.ctx.publish(self._requested(patched.value))
        fetched = await self._follow(
            self.source, lambda o: source_verdict(o, patched.value, self.commit)
        )
        if self.data.deleted:
            await self._nudge_parent()
            await self._follow(self.kustomization, _gone, what="being pruned by Flux")
        else:
            await self._apply()
        await self.ctx.publish(self._completed(fetched.revision))

    @property
    def commit(self) -> str:
        return self.data.commit

    async def _apply(self) -> None:
        if await self.worker.read(self.kustomization) is None:
            await self._nudge_parent()
            appear = min(
                self.deadline, time.monotonic() + self.worker.kube.kustomization_appear_timeout
            )
            await self._follow(self.kustomization, _exists, what="appearing", deadline=appear)
        await self._refuse_suspended()
        patched = await self.worker.patch(self.kustomization)
        apps = self.worker.apps
        done = await wait_for(
            self.worker.informer(KUSTOMIZATIONS, self.kustomization.namespace),
            self.app,
            lambda o: kustomization_verdict(o, patched.value, self.commit),
            deadline=self.deadline,
            what=f"{self.kustomization} reaching commit {self.commit[:12]}",
            also=(apps.deployments(), apps.pods()),
            check=self._rollout_failing,
        )
        self.revision = done.revision

    async def _rollout_failing(self) -> None:
        """Flux health-checks the rollout before it calls the Kustomization Ready: name a
        failure of this deploy's pods now rather than at Flux's timeout."""
        apps = self.worker.apps
        deployment = apps.deployments().get(self.app)
        if deployment is None or not apps.pods().synced.is_set():
            return
        if rollout.carries(deployment, deployment_id=self.deployment_id, image=self.data.image):
            return  # Flux has not applied this deploy's Deployment yet
        failure = await apps.failure(self.app)
        if failure is not None:
            raise failure

    async def _refuse_suspended(self) -> None:
        for target in (self.source, self.kustomization):
            if suspended(await self.worker.read(target)):
                await self.ctx.publish(self._requested(None, paused=target))
                raise Permanent("flux_suspended", f"{target} is suspended (spec.suspend: true)")

    async def _nudge_parent(self) -> None:
        """Ask the parent Kustomization to apply now rather than at its next interval.

        Looked up like every Flux object here, in the shared cache (the same informer as the
        apps' Kustomizations), its failures reported as the stage's: not one GET per deploy,
        and an unreachable API server is ``kubernetes_unavailable`` like everywhere else."""
        if self.parent is None:
            return
        if await self.worker.read(self.parent) is None:
            log.info("no parent Kustomization to reconcile", parent=str(self.parent))
            return
        await self.worker.patch(self.parent)

    async def _follow(
        self,
        target: Target,
        judge: Judge,
        *,
        what: str | None = None,
        deadline: float | None = None,
    ) -> Done:
        informer = self.worker.informer(target.resource, target.namespace)
        description = f"{target} {what or f'reaching commit {self.commit[:12]}'}"
        return await wait_for(
            informer,
            target.name,
            judge,
            deadline=deadline or self.deadline,
            what=description,
        )

    def _requested(self, value: str | None, *, paused: Target | None = None) -> ReconcileRequested:
        targets = [] if paused else [self.source.ref()]
        values = (
            {f"GitRepository/{self.source.namespace}/{self.source.name}": value} if value else {}
        )
        return ReconcileRequested(
            **carried(self.data),
            targets=targets,
            requested_at_value=value,
            requested_at_values=values,
            commit=self.commit,
            suspended=[paused.ref()] if paused else [],
        )

    def _completed(self, fetched: str) -> ReconcileCompleted:
        return ReconcileCompleted(
            **carried(self.data, reconcile=seconds_since(self.started)),
            commit=self.commit,
            revision=self.revision or fetched,
            image=self.data.image,
            deleted=self.data.deleted,
        )


def _gone(obj: Obj | None) -> Verdict:
    return Done("") if obj is None else Waiting("the Kustomization still exists")


def _exists(obj: Obj | None) -> Verdict:
    if obj is None:
        return Waiting("the Kustomization does not exist yet (the parent has not applied it)")
    return Done("")


async def reconcile_deploy(worker: ReconcileWorker, event: CloudEvent, ctx: Context) -> None:
    await _Deploy(worker, event, ctx).run()
