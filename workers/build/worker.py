"""The build worker: ``deploy.requested`` in, ``image.pushed`` (an image pinned by digest) out.

- A prebuilt ``image`` is resolved to the digest its tag points to (an index's digest for a
  multi-arch image) and published as ``repo:tag@sha256:…``; nothing is built.
- A ``source`` is written into a fresh private directory (or fetched from Git), built by the
  configured backend and pushed to ``<registry>/<app>:<version>``; the digest published is the
  one the registry holds for the push. If that tag already holds an image labelled with the same
  source digest (a redelivered event), the build is skipped and that image is published.
- After a build, retention keeps the app's newest ``registry.keep_versions`` images.
- ``app.delete.requested`` deletes every manifest of the app's repository. Cleanup never fails a
  deletion: after the last retry its error is logged, and ``app.deleted`` is another worker's.

At most ``builder.concurrency`` builds run at once; the worker takes ``builder.prefetch``
messages (at least two more than that) so that prebuilt images and deletions do not queue
behind long builds, and many prebuilt deploys at once are resolved at once. One token cache
serves every registry call, so a deploy does not first collect a 401 to learn the auth scheme.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import ClassVar

import structlog

from relay.errors import Permanent, StageError
from relay.events import CloudEvent
from relay.events.data import AppDeleteRequested, DeployChain, DeployRequested, ImagePushed
from relay.events.deploy import DeployRequest, Source
from relay.logging import redactor
from relay.settings import Settings
from workers.build.auth import TokenCache
from workers.build.builders import Builder, BuildJob, make_builder
from workers.build.context import SOURCE_LABEL, BuildContext, Limits, inline_context
from workers.build.gitsource import git_context
from workers.build.proc import TAIL_LINES, ArgvRecorder
from workers.build.refs import ImageRef, app_image, parse_image
from workers.build.registry import HttpRegistry, Registry, registry_host
from workers.build.retention import apply_retention, delete_all
from workers.runtime import Context

log = structlog.get_logger(__name__)
EXTRA_SLOTS = 2  # messages taken beyond the build slots (at least)
RegistryFactory = Callable[[], AbstractAsyncContextManager[Registry]]


class BuildWorker:
    name: ClassVar[str] = "build"
    stage: ClassVar[str] = "build"
    keys: tuple[str, ...] = ("deploy.requested", "app.delete.requested")

    def __init__(
        self,
        settings: Settings,
        *,
        builder: Builder | None = None,
        registry: RegistryFactory | None = None,
        recorder: ArgvRecorder | None = None,
    ) -> None:
        self.settings = settings
        self.recorder = recorder
        self.builder = builder or make_builder(settings, recorder=recorder)
        self._registry = registry or self._http_registry
        self._tokens = TokenCache()  # shared by every request: no 401 round trip per deploy
        self._builds = asyncio.Semaphore(settings.deploy.builder.concurrency)
        b = settings.deploy.builder
        self.concurrency = max(b.prefetch, b.concurrency + EXTRA_SLOTS)
        self.host = registry_host(settings.deploy.registry)
        redactor().add(settings.secret_values())

    def _http_registry(self) -> AbstractAsyncContextManager[Registry]:
        reg = self.settings.deploy.registry
        return HttpRegistry(reg, tokens=self._tokens, timeout=reg.request_timeout)

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        if event.routing_key == AppDeleteRequested.ROUTING_KEY:
            await self._delete_app(event, ctx)
        else:
            await self._deploy(event.payload(DeployRequested), ctx)

    # --- deploys ------------------------------------------------------------------------------

    async def _deploy(self, data: DeployRequested, ctx: Context) -> None:
        started = time.monotonic()
        request = data.request
        async with self._registry() as registry:
            if request.source is None:
                image = await self._prebuilt(registry, request)
                pushed = _pushed(data, image, started, built=False, source_digest=None)
                await ctx.publish(pushed, app=request.app)
                return
            image, digest, source_digest, built = await self._from_source(registry, request)
            pushed = _pushed(data, image, started, built=built, source_digest=source_digest)
            await ctx.publish(pushed, app=request.app)
            await self._retain(registry, request.app, digest)

    async def _prebuilt(self, registry: Registry, request: DeployRequest) -> str:
        ref = parse_image(request.image or "")
        digest = await registry.manifest_digest(ref)
        if digest is None:
            raise Permanent("image_not_found", f"the registry {ref.host} has no image {ref}")
        log.info("prebuilt image resolved", image=str(ref), digest=digest)
        return ref.pinned(digest)

    async def _from_source(
        self, registry: Registry, request: DeployRequest
    ) -> tuple[str, str, str, bool]:
        """(pinned image, digest, source digest, built) for a source deploy."""
        assert request.source is not None
        if self.builder.name == "none":
            raise Permanent("builder_disabled", "builder.backend is none: deploy an image instead")
        target = app_image(self.host, request.app, request.version)
        async with self._builds:
            workdir = await self._workdir(request.app)
            try:
                return await self._build_in(registry, request.source, target, workdir)
            finally:
                await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)

    async def _build_in(
        self, registry: Registry, source: Source, target: ImageRef, workdir: Path
    ) -> tuple[str, str, str, bool]:
        tail: deque[str] = deque(maxlen=TAIL_LINES)
        timeout = self.settings.deploy.builder.timeout
        try:
            async with asyncio.timeout(timeout):
                context = await self._context(source, workdir, _sink(tail))
                existing = await self._already_built(registry, target, context.source_digest)
                if existing is not None:
                    return target.pinned(existing), existing, context.source_digest, False
                digest = await self._build(registry, context, target, workdir, _sink(tail))
        except TimeoutError:
            lines = "\n".join(tail)
            raise Permanent(
                "timeout", f"the build took longer than {timeout:g} s; last lines:\n{lines}"
            ) from None
        return target.pinned(digest), digest, context.source_digest, True

    async def _context(
        self, source: Source, workdir: Path, sink: Callable[[str], None]
    ) -> BuildContext:
        b = self.settings.deploy.builder
        if source.git is not None:
            return await git_context(
                source.git,
                workdir,
                max_bytes=b.max_git_context_bytes,
                platform=b.platform,
                on_line=sink,
                recorder=self.recorder,
            )
        limits = Limits(max_context_bytes=b.max_context_bytes, max_file_bytes=b.max_file_bytes)
        return await inline_context(source, workdir, limits, b.platform)

    async def _already_built(
        self, registry: Registry, target: ImageRef, source_digest: str
    ) -> str | None:
        digest = await registry.manifest_digest(target)
        if digest is None:
            return None
        config = await registry.image_config(target)
        labels = ((config or {}).get("config") or {}).get("Labels") or {}
        if labels.get(SOURCE_LABEL) == source_digest:
            log.info("image already built from this source, not rebuilding", image=str(target))
            return digest
        log.info("tag holds another source, rebuilding", image=str(target))
        return None

    async def _build(
        self,
        registry: Registry,
        context: BuildContext,
        target: ImageRef,
        workdir: Path,
        sink: Callable[[str], None],
    ) -> str:
        labels = {SOURCE_LABEL: context.source_digest, "dev.relay.app": target.repo}
        job = BuildJob(
            context_dir=context.context_dir,
            dockerfile=context.dockerfile,
            ref=str(target),
            labels=labels,
            workdir=workdir,
        )
        log.info("build started", image=str(target), backend=self.builder.name)
        digest = await self.builder.build_and_push(job, sink)
        pinned = ImageRef(host=target.host, repo=target.repo, digest=digest)
        if await registry.manifest_digest(pinned) != digest:
            raise Permanent("build_failed", f"the registry does not hold the pushed {pinned}")
        log.info("image pushed", image=target.pinned(digest))
        return digest

    async def _workdir(self, app: str) -> Path:
        base = self.settings.deploy.builder.workdir
        if base is not None:
            await asyncio.to_thread(base.mkdir, parents=True, exist_ok=True)
        made = await asyncio.to_thread(tempfile.mkdtemp, prefix=f"relay-build-{app}-", dir=base)
        return Path(made)

    async def _retain(self, registry: Registry, app: str, digest: str) -> None:
        reg = self.settings.deploy.registry
        try:
            await apply_retention(
                registry,
                self.host,
                app,
                keep=reg.keep_versions,
                protect={digest},
                min_age=reg.retention_min_age,
            )
        except StageError as exc:  # the deploy succeeded; old images wait for the next one
            log.warning("retention failed", reason=exc.reason, detail=exc.detail)

    # --- app deletion -------------------------------------------------------------------------

    async def _delete_app(self, event: CloudEvent, ctx: Context) -> None:
        event.payload(AppDeleteRequested)
        app = event.app or event.subject
        if not app:
            log.warning("app.delete.requested without an app, nothing to clean")
            return
        try:
            async with self._registry() as registry:
                await delete_all(registry, self.host, app)
        except StageError as exc:
            if isinstance(exc, Permanent) or ctx.final_attempt:
                log.error("image cleanup gave up", reason=exc.reason, detail=exc.detail)
                return
            raise


def _sink(tail: deque[str]) -> Callable[[str], None]:
    def emit(line: str) -> None:
        tail.append(line)
        log.info("build output", line=line)

    return emit


def _pushed(
    data: DeployRequested, image: str, started: float, *, built: bool, source_digest: str | None
) -> ImagePushed:
    chain = data.model_dump(include=set(DeployChain.model_fields), exclude_none=True)
    chain["version"] = data.version or data.request.version
    chain["stages"] = {**data.stages, "build": round(time.monotonic() - started, 3)}
    return ImagePushed(
        **chain, image=image, request=data.request, source_digest=source_digest, built=built
    )
