"""The watch worker: a deploy ends ``deploy.ready`` or ``deploy.failed`` with a reason.

``create(settings)`` gives the real worker when a cluster is configured (or the process runs in
one), else ``Skipping``, which reports the rollout stage as skipped at once.
"""

from __future__ import annotations

from typing import ClassVar

from relay.events import CloudEvent
from relay.events.data import AppDeleted, DeployReady, ReconcileCompleted
from relay.kube import SKIPPED, connect, kube_settings
from relay.settings import Settings
from workers.chain import carried
from workers.runtime import Context, Worker
from workers.watch.worker import WatchWorker

__all__ = ["Skipping", "WatchWorker", "create"]


class Skipping:
    """No Kubernetes: ``deploy.ready`` / ``app.deleted`` with ``skipped`` set, at once."""

    name: ClassVar[str] = "watch"
    stage: ClassVar[str] = "rollout"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.keys: tuple[str, ...] = ("reconcile.completed",)
        self.concurrency = 50

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        data = event.payload(ReconcileCompleted)
        if data.deleted:
            await ctx.publish(AppDeleted(**carried(data), commit=data.commit, skipped=SKIPPED))
            return
        deploy = self.settings.deploy
        url = f"{deploy.url_scheme}://{event.app}.{deploy.domain}" if event.app else None
        await ctx.publish(
            DeployReady(
                **carried(data), url=url, image=data.image, commit=data.commit, skipped=SKIPPED
            )
        )

    async def close(self) -> None:
        return None


def create(settings: Settings) -> Worker:
    cluster, kube = connect(settings), kube_settings(settings)
    if cluster is None or kube is None:
        return Skipping(settings)
    return WatchWorker(settings, cluster, kube)
