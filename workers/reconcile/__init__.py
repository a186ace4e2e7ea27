"""The reconcile worker: Flux acts on a push or a deploy's commit in seconds, not at its interval.

``create(settings)`` gives the real worker when a cluster is configured (or the process runs in
one), else ``Skipping``, which reports the stage as skipped so that everything else still runs.
"""

from __future__ import annotations

from typing import ClassVar

from relay.events import CloudEvent
from relay.events.data import (
    GitPush,
    GitTag,
    ManifestsCommitted,
    ReconcileCompleted,
    ReconcileRequested,
)
from relay.kube import SKIPPED, connect, kube_settings
from relay.settings import Settings
from workers.chain import carried
from workers.reconcile.worker import ReconcileWorker
from workers.runtime import Context, Worker

__all__ = ["ReconcileWorker", "Skipping", "create"]


class Skipping:
    """No Kubernetes: a deploy's reconcile stage is reported as skipped, at once."""

    name: ClassVar[str] = "reconcile"
    stage: ClassVar[str] = "reconcile"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys: tuple[str, ...] = ("git.push", "git.tag", "manifests.committed")
        self.concurrency = 50

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        if event.routing_key != "manifests.committed":
            await self._push(event, ctx)
            return
        data = event.payload(ManifestsCommitted)
        chain = carried(data)
        await ctx.publish(ReconcileRequested(**chain, commit=data.commit, skipped=SKIPPED))
        await ctx.publish(
            ReconcileCompleted(
                **chain,
                commit=data.commit,
                image=data.image,
                deleted=data.deleted,
                skipped=SKIPPED,
            )
        )

    async def _push(self, event: CloudEvent, ctx: Context) -> None:
        push = event.payload(GitTag if event.routing_key == "git.tag" else GitPush)
        receiver = self.settings.receiver(push.receiver)
        if receiver is not None and receiver.reconcile:
            await ctx.publish(
                ReconcileRequested(commit=push.after, trigger=event.routing_key, skipped=SKIPPED)
            )

    async def close(self) -> None:
        return None


def create(settings: Settings) -> Worker:
    cluster, kube = connect(settings), kube_settings(settings)
    if cluster is None or kube is None:
        return Skipping(settings)
    return ReconcileWorker(settings, cluster, kube)
