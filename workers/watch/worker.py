"""The watch worker: follow each deploy's rollout to ready or to a failure with its reason.

Every wait shares two informers per namespace, one on Deployments and one on Pods, both
selected by ``app.kubernetes.io/managed-by=relay``: one watch stream per kind and namespace,
whether ten or ten thousand deploys are waiting. A waiter registers under its app's name; each
change to the app's Deployment or to one of its pods wakes it to judge the rollout again.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

import structlog

from relay.errors import Permanent
from relay.events import CloudEvent
from relay.events.data import AppDeleted, DeployReady, ReconcileCompleted
from relay.kube.base import Cluster, Obj
from relay.kube.informer import Informer, Informers
from relay.settings import KubernetesSettings, Settings
from workers.chain import carried, seconds_since
from workers.runtime import Context
from workers.waiting import check_access, late, until_synced, wait_signal
from workers.watch import rollout
from workers.watch.early import AppsWatch
from workers.watch.probe import probe

log = structlog.get_logger(__name__)

SUPERSEDED_GRACE = 15.0  # seconds a Deployment may show another deploy before we believe it


class WatchWorker:
    name: ClassVar[str] = "watch"
    stage: ClassVar[str] = "rollout"

    def __init__(self, settings: Settings, cluster: Cluster, kube: KubernetesSettings) -> None:
        self.settings = settings
        self.kube = kube
        self.cluster = cluster
        self.namespace = settings.deploy.namespace
        self.keys: tuple[str, ...] = ("reconcile.completed",)
        self.concurrency = kube.concurrency
        self.informers = Informers(cluster)
        self.apps = AppsWatch(cluster, self.informers, self.namespace)

    def deployments(self) -> Informer:
        return self.apps.deployments()

    def pods(self) -> Informer:
        return self.apps.pods()

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        data = event.payload(ReconcileCompleted)
        if not event.app:
            raise Permanent("invalid_event", "reconcile.completed without an app")
        started = time.monotonic()
        deadline = started + self.kube.rollout_deadline
        if data.deleted:
            await self._until_gone(event.app, deadline)
            await ctx.publish(
                AppDeleted(**carried(data, rollout=seconds_since(started)), commit=data.commit)
            )
            return
        await self._until_rolled_out(event.app, event.deploymentid, data.image, deadline)
        url = f"{self.settings.deploy.url_scheme}://{event.app}.{self.settings.deploy.domain}"
        if self.kube.probe_urls:
            await probe(url, deadline=deadline)
        await ctx.publish(
            DeployReady(
                **carried(data, rollout=seconds_since(started)),
                url=url,
                image=data.image,
                commit=data.commit,
            )
        )

    @property
    def _limit(self) -> str:
        return f"{self.kube.rollout_deadline:.0f}s"

    async def close(self) -> None:
        await self.informers.stop()
        await self.cluster.close()

    # --- waiting ----------------------------------------------------------------------------
    async def _until_gone(self, app: str, deadline: float) -> None:
        deployments = self.deployments()
        await until_synced(deployments, deadline=deadline, what=f"watching Deployment {app}")
        signal = asyncio.Event()
        with deployments.subscribe(app, signal):
            while deployments.get(app) is not None:
                signal.clear()
                recheck = check_access(deployments)
                woken = await wait_signal(signal, deadline, at_most=recheck)
                if not woken and time.monotonic() >= deadline:
                    raise Permanent(
                        "timeout",
                        late(f"Deployment {app} still exists after {self._limit}", deployments),
                    )

    async def _until_rolled_out(
        self, app: str, deployment_id: str | None, image: str | None, deadline: float
    ) -> None:
        deployments, pods = self.deployments(), self.pods()
        for informer in (deployments, pods):
            await until_synced(informer, deadline=deadline, what=f"watching Deployment {app}")
        signal, wait = asyncio.Event(), _Wait(app, deployment_id, image)
        with deployments.subscribe(app, signal), pods.subscribe(app, signal):
            while True:
                signal.clear()
                why = await self._judge(wait, deployments.get(app))
                if why is None:
                    return
                # after judging: the judgement may have started the superseded grace, whose end
                # must wake this wait even when nothing changes any more
                recheck = _soonest(check_access(deployments), check_access(pods), wait.recheck)
                woken = await wait_signal(signal, deadline, at_most=recheck)
                if not woken and time.monotonic() >= deadline:
                    raise Permanent(
                        "timeout",
                        late(f"rollout of {app} not done within {self._limit}: {why}", deployments),
                    )

    async def _judge(self, wait: _Wait, deployment: Obj | None) -> str | None:
        """None when rolled out; why not yet otherwise; raises ``Permanent`` when it never will."""
        other = deployment and rollout.carries(
            deployment, deployment_id=wait.deployment_id, image=wait.image
        )
        if other:
            return wait.foreign(other)
        wait.foreign(None)
        verdict = rollout.rollout_verdict(deployment)
        if isinstance(verdict, rollout.RolledOut):
            return None
        if isinstance(verdict, rollout.Stuck):
            raise Permanent(verdict.reason, verdict.detail)
        failure = await self.apps.failure(wait.app)
        if failure is not None:
            raise failure
        return verdict.why


def _soonest(*delays: float | None) -> float | None:
    found = [d for d in delays if d is not None]
    return min(found) if found else None


class _Wait:
    """One deploy's rollout wait, and since when its Deployment shows another deploy."""

    def __init__(self, app: str, deployment_id: str | None, image: str | None) -> None:
        self.app, self.deployment_id, self.image = app, deployment_id, image
        self.foreign_since: float | None = None

    @property
    def recheck(self) -> float | None:
        """Seconds until the superseded grace ends (a little after), when it is running."""
        if self.foreign_since is None:
            return None
        return max(0.0, self.foreign_since + SUPERSEDED_GRACE - time.monotonic()) + 0.05

    def foreign(self, other: str | None) -> str:
        """Note what else the Deployment carries; raise once that has lasted past the grace."""
        if other is None:
            self.foreign_since = None
            return ""
        self.foreign_since = self.foreign_since or time.monotonic()
        why = f"the Deployment carries {other}, not this deploy"
        if time.monotonic() - self.foreign_since > SUPERSEDED_GRACE:
            raise Permanent("superseded", why)
        return why
