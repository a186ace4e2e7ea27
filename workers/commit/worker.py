"""The commit worker: ``image.pushed`` and ``app.delete.requested`` in, ``manifests.committed`` out.

Each handler turns its event into an ``Op`` and waits on the group-commit batcher, so many
handlers (the worker's concurrency is twice the batch size) share one commit and one push, and
each acknowledges only after the remote accepted the push that holds its app. Git failures come
back as ``StageError``s that the runtime retries or reports: ``git_unreachable`` (transient),
``git_auth_failed`` (permanent), ``git_push_failed``, and ``superseded`` for a request older than
the one already written for the same app.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import structlog

from relay.errors import ConfigError, InvalidEvent, Permanent
from relay.events import CloudEvent
from relay.events.data import AppDeleteRequested, DeployChain, ImagePushed, ManifestsCommitted
from relay.settings import DeploySettings, Settings
from workers.commit.batcher import Batcher
from workers.commit.committer import Committer
from workers.commit.git import GitRepo, default_workdir
from workers.commit.ops import Done, Op
from workers.commit.render import AppSpec, Resources, render_app
from workers.runtime import Context

log = structlog.get_logger(__name__)

IMAGE_PUSHED = "image.pushed"
DELETE_REQUESTED = "app.delete.requested"


class CommitWorker:
    name: ClassVar[str] = "commit"
    stage: ClassVar[str] = "commit"

    def __init__(
        self, settings: Settings, *, git: str = "git", workdir: Path | None = None
    ) -> None:
        gitops = settings.deploy.gitops
        self.deploy = settings.deploy
        self.keys: tuple[str, ...] = (IMAGE_PUSHED, DELETE_REQUESTED)
        self.concurrency = max(2 * gitops.batch_max, 4)
        self.repo: GitRepo | None = None
        self.unusable: str | None = None
        try:
            self.repo = GitRepo(gitops, workdir or default_workdir(gitops), git=git)
        except ConfigError as exc:  # `relay up` without a GitOps repo still runs the rest
            self.unusable = str(exc)
            log.warning("commit worker has no usable GitOps repository", problem=self.unusable)
        self.committer = Committer(settings.deploy, self.repo) if self.repo else None
        self.batcher: Batcher[Op, Done] = Batcher(
            self._flush, window=gitops.batch_window_ms / 1000, max_size=gitops.batch_max
        )

    async def _flush(self, ops: list[Op]) -> Sequence[Done | BaseException]:
        if self.committer is None:
            raise Permanent("gitops_not_configured", self.unusable or "no GitOps repository")
        return await self.committer.flush(ops)

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        started = time.monotonic()
        data, op, image = self._op(event)
        if op.spec is not None:  # rendered while the batch gathers, not when it is written
            files = await asyncio.to_thread(render_app, op.spec, self.deploy)
            op = dataclasses.replace(op, files=files)
        done = await self.batcher.submit(op)
        seconds = round(time.monotonic() - started, 3)
        await ctx.publish(
            ManifestsCommitted(
                version=data.version or op.version,
                callback_url=data.callback_url,
                requested_at=data.requested_at or op.requested_at,
                stages={**data.stages, self.stage: seconds},
                commit=done.commit,
                paths=list(done.paths),
                image=image,
                deleted=op.kind == "delete",
            ),
            app=op.app,
            deploymentid=op.deployment_id,
        )
        log.info(
            "manifests committed",
            op=op.kind,
            commit=done.commit,
            changed=done.changed,
            seconds=seconds,
        )

    def _op(self, event: CloudEvent) -> tuple[DeployChain, Op, str | None]:
        try:
            if event.routing_key == IMAGE_PUSHED:
                pushed = event.payload(ImagePushed)
                return pushed, deploy_op(event, pushed, self.deploy), pushed.image
            if event.routing_key == DELETE_REQUESTED:
                wanted = event.payload(AppDeleteRequested)
                return wanted, delete_op(event, wanted), None
        except InvalidEvent as exc:
            raise Permanent("invalid_event", str(exc)) from None
        raise Permanent("invalid_event", f"the commit worker does not take {event.routing_key}")

    async def close(self) -> None:
        """Release the working clone (the host calls this after its consumers stopped)."""
        if self.committer is not None:
            await self.committer.settle()
        if self.repo is not None:
            await self.repo.close()


def deploy_op(event: CloudEvent, data: ImagePushed, settings: DeploySettings) -> Op:
    if "@sha256:" not in data.image:
        raise Permanent("image_not_pinned", f"image {data.image} carries no digest to pin")
    request = data.request
    requested_at = data.requested_at or event.time
    deployment_id = event.deploymentid or event.id
    spec = AppSpec(
        app=request.app,
        version=request.version,
        image=data.image,
        deployment_id=deployment_id,
        requested_at=requested_at,
        port=request.port,
        replicas=request.replicas,
        env=dict(request.env),
        health_path=request.health_path,
        resources=_resources(data, settings),
    )
    return Op(
        kind="deploy",
        app=request.app,
        deployment_id=deployment_id,
        requested_at=requested_at,
        version=request.version,
        spec=spec,
    )


def _resources(data: ImagePushed, settings: DeploySettings) -> Resources:
    asked = data.request.resources
    base = settings.manifests.resources
    return Resources(
        cpu_request=(asked and asked.cpu_request) or base.cpu_request,
        memory_request=(asked and asked.memory_request) or base.memory_request,
        cpu_limit=(asked and asked.cpu_limit) or base.cpu_limit,
        memory_limit=(asked and asked.memory_limit) or base.memory_limit,
    )


def delete_op(event: CloudEvent, data: AppDeleteRequested) -> Op:
    app = event.app or event.subject
    if not app:
        raise Permanent("invalid_event", "app.delete.requested names no app")
    return Op(
        kind="delete",
        app=app,
        deployment_id=event.deploymentid or event.id,
        requested_at=data.requested_at or event.time,
    )
