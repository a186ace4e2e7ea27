"""Drive the build worker through the real runtime (WorkerHost + Dispatcher) on a bus, plus
the apps the tests build and ways to look inside what was pushed."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import tarfile
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relay.bus.memory import MemoryBus
from relay.events import CloudEvent, new_event
from relay.events.data import AppDeleteRequested, DeployRequested
from relay.events.deploy import DeployRequest
from relay.settings import Settings
from tests.support.gitserver import GitServer
from tests.support.registry import Registry
from workers.build.builders import Builder, BuildJob, make_builder
from workers.build.proc import ArgvRecorder, LineSink
from workers.build.worker import BuildWorker
from workers.runtime import WorkerHost

OUTCOMES = ("#",)  # everything, so tests can also see what was NOT published


def make_settings(
    registry: Registry,
    tmp_path: Path,
    *,
    buildah_root: Path | None = None,
    password_file: Path | None = None,
    builder: Mapping[str, Any] | None = None,
    registry_extra: Mapping[str, Any] | None = None,
    retry: Mapping[str, Any] | None = None,
) -> Settings:
    return Settings.model_validate(
        {
            "broker": {
                "url": "memory://",
                "retry": dict(retry or {"delays": [0.05, 0.1], "max_attempts": 3}),
            },
            "deploy": {
                "registry": {
                    "url": registry.host,
                    "username": registry.username,
                    "password_file": str(password_file or registry.password_file),
                    "insecure": True,
                    "retention_min_age": 0,
                    **(registry_extra or {}),
                },
                "builder": {
                    "backend": "buildah",
                    "buildah_root": str(buildah_root or tmp_path / "buildah"),
                    "workdir": str(tmp_path / "builds"),
                    **(builder or {}),
                },
            },
        }
    )


def unique_app(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Harness:
    """A worker on a memory bus; collects every event published (``outcomes``)."""

    def __init__(self, settings: Settings, worker: BuildWorker | None = None) -> None:
        self.settings = settings
        self.worker = worker or BuildWorker(settings)
        self.bus = MemoryBus(settings.broker.retry)
        self.host = WorkerHost(self.bus, settings, [self.worker])
        self.outcomes: list[CloudEvent] = []
        self._changed = asyncio.Condition()
        self._collector: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Harness:
        await self.bus.start()
        await self.host.start()
        self._collector = asyncio.create_task(self._collect())
        await asyncio.sleep(0)  # the tap is registered once the collector first runs
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.host.stop(grace=60)  # let in-flight work (retention) finish
        if self._collector is not None:
            self._collector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._collector
        await self.bus.close()

    async def _collect(self) -> None:
        async for event in self.bus.tap(OUTCOMES):
            async with self._changed:
                self.outcomes.append(event)
                self._changed.notify_all()

    async def deploy(
        self, request: Mapping[str, Any], *, event_id: str | None = None
    ) -> CloudEvent:
        data = DeployRequested(
            version=request["version"],
            requested_at=datetime.now(UTC),
            stages={"accepted": 0.001},
            request=DeployRequest.model_validate(request),
        )
        event = new_event(
            data,
            source="/tests/build",
            deploymentid=str(uuid.uuid4()),
            app=request["app"],
            event_id=event_id,
        )
        await self.bus.publish(event)
        return event

    async def publish(self, event: CloudEvent) -> None:
        await self.bus.publish(event)

    async def delete_app(self, app: str) -> CloudEvent:
        event = new_event(
            AppDeleteRequested(), source="/tests/build", deploymentid=str(uuid.uuid4()), app=app
        )
        await self.bus.publish(event)
        return event

    async def outcome(self, event: CloudEvent, timeout: float = 180.0) -> CloudEvent:
        async with asyncio.timeout(timeout), self._changed:
            while True:
                for found in self.outcomes:
                    if found.deploymentid == event.deploymentid and found.id != event.id:
                        return found
                await self._changed.wait()

    async def idle(self, queue: str = "relay.build", timeout: float = 30.0) -> None:
        """Wait until the worker's queue is empty (nothing waiting to be redelivered)."""
        async with asyncio.timeout(timeout):
            while self.bus.queue_depth(queue):
                await asyncio.sleep(0.02)


SCRATCH_APP = {
    "files": {"index.html": "<h1>hello</h1>\n", "static/app.js": "console.log(1)\n"},
    "dockerfile": "FROM scratch\nCOPY . /srv/\n",
}


def run_app(base: str, marker: str) -> dict[str, object]:
    return {
        "files": {"app.sh": f"#!/bin/sh\necho {marker}\n"},
        "dockerfile": (
            f"FROM {base}\nCOPY app.sh /app/app.sh\n"
            "RUN chmod +x /app/app.sh && /app/app.sh > /app/built.txt && echo built-ok\n"
            'CMD ["/app/app.sh"]\n'
        ),
    }


def config_of(registry: Registry, image: str) -> dict[str, object]:
    repo_tag, _, digest = image.partition("@")
    repo = repo_tag.split("/", 1)[1].rsplit(":", 1)[0]
    _, manifest = registry.get_manifest(repo, digest)
    blob = registry.request("GET", f"/v2/{repo}/blobs/{manifest['config']['digest']}")
    return dict(json.loads(blob.body))


def layer_files(registry: Registry, image: str) -> dict[str, bytes]:
    repo = image.split("/", 1)[1].split("@", maxsplit=1)[0].rsplit(":", 1)[0]
    _, manifest = registry.get_manifest(repo, image.split("@")[1])
    found: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        blob = registry.request("GET", f"/v2/{repo}/blobs/{layer['digest']}").body
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:*") as tar:
            for member in tar.getmembers():
                if member.isfile():
                    found[member.name.lstrip("./")] = tar.extractfile(member).read()  # type: ignore[union-attr]
    return found


class Recording:
    """The real builder, with the time span of every build it ran."""

    def __init__(self, inner: Builder) -> None:
        self.inner = inner
        self.name = inner.name
        self.spans: list[tuple[float, float]] = []

    async def build_and_push(self, job: BuildJob, log_lines: LineSink) -> str:
        started = time.monotonic()
        try:
            return await self.inner.build_and_push(job, log_lines)
        finally:
            self.spans.append((started, time.monotonic()))


def recording_worker(settings: Settings) -> tuple[BuildWorker, Recording, ArgvRecorder]:
    recorder = ArgvRecorder()
    builder = Recording(make_builder(settings, recorder=recorder))
    worker = BuildWorker(settings, builder=builder, recorder=recorder)
    return worker, builder, recorder


def alive_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and int(entry.name) != os.getpid():
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
            if state != "Z":
                found.append(int(entry.name))
    return found


def push_web_app(git_server: GitServer, tmp_path: Path) -> str:
    """Push apps/web (Dockerfile FROM scratch + index.html) and a link apps/link -> web."""
    work = tmp_path / "push"
    git_server.git("clone", "--quiet", git_server.authed_url(), str(work))
    (work / "apps" / "web").mkdir(parents=True)
    (work / "apps" / "web" / "Dockerfile").write_text("FROM scratch\nCOPY index.html /\n")
    (work / "apps" / "web" / "index.html").write_text("<h1>hi</h1>\n")
    (work / "apps" / "link").symlink_to("web")
    git_server.git("-C", str(work), "add", "-A")
    git_server.git(
        "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "app"
    )
    git_server.git("-C", str(work), "push", "--quiet", "origin", "main")
    return git_server.head()
