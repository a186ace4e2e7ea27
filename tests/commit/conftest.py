"""Commit worker tests: the real Git smart-HTTP server and the real worker runtime.

``harness`` runs the commit worker in a ``WorkerHost`` on the in-memory bus against a fresh
``homelab.git`` served by nginx + git http-backend with basic auth, and records what the worker
publishes (``manifests.committed``, ``deploy.failed``) per deployment id.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import shutil
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay.bus import Ack, Incoming, Outcome, QueueSpec
from relay.bus.memory import MemoryBus
from relay.events import CloudEvent, decode, new_event
from relay.events.data import AppDeleteRequested, ImagePushed
from relay.events.deploy import DeployRequest
from relay.logging import configure
from relay.settings import Settings
from tests.support.gitserver import GitServer
from tests.support.service_fixtures import *  # noqa: F403
from workers.commit import CommitWorker
from workers.runtime import WorkerHost

GITOPS_PATH = "kubernetes/rpi-cluster/apps/dynamic"
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def repo_root() -> Path:
    here = Path(__file__).resolve()
    return next(p for p in here.parents if (p / "pyproject.toml").is_file())


def shared_root() -> Path:
    """``shared/`` beside the repository (as CI lays it out), else beside an ancestor (a git
    worktree nested one level deeper)."""
    for parent in repo_root().parents:
        if (parent / "shared" / "crds").is_dir():
            return parent / "shared"
    return repo_root().parent / "shared"


SHARED = shared_root()


def digest_for(app: str, version: str) -> str:
    return "sha256:" + hashlib.sha256(f"{app}:{version}".encode()).hexdigest()


def make_settings(
    server: GitServer,
    tmp_path: Path,
    *,
    token_file: Path | None = None,
    gitops: dict[str, Any] | None = None,
    manifests: dict[str, Any] | None = None,
    max_attempts: int = 3,
) -> Settings:
    return Settings.model_validate(
        {
            "broker": {"retry": {"delays": [0.05, 0.1], "max_attempts": max_attempts}},
            "deploy": {
                "domain": "apps.example.com",
                "gitops": {
                    "url": server.url,
                    "branch": "main",
                    "path": GITOPS_PATH,
                    "username": server.username,
                    "token_file": str(token_file or server.token_file),
                    "workdir": str(tmp_path / "clone"),
                    "batch_window_ms": 200,
                    "batch_max": 50,
                    "author_name": "Relay Bot",
                    "author_email": "relay@example.invalid",
                    "command_timeout": 20,
                    **(gitops or {}),
                },
                "manifests": manifests or {},
            },
        }
    )


def image_pushed(
    app: str,
    version: str,
    *,
    requested_at: datetime = T0,
    deployment_id: str | None = None,
    **request: Any,
) -> CloudEvent:
    image = f"127.0.0.1:5000/{app}:{version}@{digest_for(app, version)}"
    data = ImagePushed(
        version=version,
        requested_at=requested_at,
        stages={"build": 1.5},
        image=image,
        request=DeployRequest(
            app=app, version=version, image=image.split("@", maxsplit=1)[0], **request
        ),
    )
    return new_event(
        data,
        source="/tests/commit",
        subject=app,
        app=app,
        deploymentid=deployment_id or f"dep-{app}-{version}-{uuid.uuid4().hex[:6]}",
    )


def delete_requested(
    app: str, *, requested_at: datetime, deployment_id: str | None = None
) -> CloudEvent:
    return new_event(
        AppDeleteRequested(requested_at=requested_at),
        source="/tests/commit",
        subject=app,
        app=app,
        deploymentid=deployment_id or f"del-{app}-{uuid.uuid4().hex[:6]}",
    )


def receive_pack_posts(server: GitServer) -> int:
    """Pushes the server received (accepted or not), from nginx's access log."""
    log = server.base_dir / "nginx-access.log"
    if not log.exists():
        return 0
    return sum("POST /homelab.git/git-receive-pack" in ln for ln in log.read_text().splitlines())


def relay_commits(server: GitServer, author: str = "Relay Bot") -> int:
    return sum(1 for entry in server.log(500) if entry.author_name == author)


@dataclass
class Harness:
    bus: MemoryBus
    host: WorkerHost
    worker: CommitWorker
    server: GitServer
    settings: Settings
    seen: dict[str, list[CloudEvent]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, message: Incoming) -> Outcome:
        event = decode(message.body)
        self.seen.setdefault(event.deploymentid or "", []).append(event)
        self.arrived.set()
        return Ack()

    async def send(self, event: CloudEvent) -> None:
        await self.bus.publish(event)

    async def outcome(
        self, deployment_id: str, *, skip: int = 0, timeout: float = 30.0
    ) -> CloudEvent:
        """The first manifests.committed or deploy.failed for a deployment, after ``skip``
        earlier ones."""
        async with asyncio.timeout(timeout):
            while True:
                found = self._outcomes(deployment_id)
                if len(found) > skip:
                    return found[skip]
                self.arrived.clear()
                await self.arrived.wait()

    def _outcomes(self, deployment_id: str) -> list[CloudEvent]:
        return [
            e
            for e in self.seen.get(deployment_id, [])
            if e.routing_key in ("manifests.committed", "deploy.failed")
        ]

    async def run(self, *events: CloudEvent, timeout: float = 30.0) -> list[CloudEvent]:
        """Publish the events at once; the outcome of each (in the same order)."""
        ids = [e.deploymentid or "" for e in events]
        skips = [len(self._outcomes(i)) + ids[:n].count(i) for n, i in enumerate(ids)]
        await asyncio.gather(*(self.send(e) for e in events))
        return [
            await self.outcome(i, skip=k, timeout=timeout) for i, k in zip(ids, skips, strict=True)
        ]

    @property
    def clone(self) -> Path:
        assert self.worker.repo is not None
        return self.worker.repo.workdir

    def file(self, app: str, name: str = "app/deployment.yaml") -> str | None:
        return self.server.read_file(f"{GITOPS_PATH}/{app}/{name}")


@pytest.fixture
async def harness_factory(
    git_server: GitServer, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    made: list[Harness] = []

    async def make(settings: Settings | None = None, *, git: str = "git", **kwargs: Any) -> Harness:
        settings = settings or make_settings(git_server, tmp_path, **kwargs)
        bus = MemoryBus(settings.broker.retry)
        await bus.start()
        worker = CommitWorker(settings, git=git)
        host = WorkerHost(bus, settings, [worker])
        harness = Harness(bus, host, worker, git_server, settings)
        await bus.consume(
            QueueSpec(name="test.sink", keys=("manifests.committed", "deploy.failed")),
            harness.record,
        )
        await host.start()
        made.append(harness)
        return harness

    yield make
    for harness in made:
        await harness.host.stop(grace=5.0)
        await harness.bus.close()


@pytest.fixture
async def harness(harness_factory: Callable[..., Any]) -> Harness:
    made: Harness = await harness_factory()
    return made


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Every log line the process writes (structlog and stdlib), rendered as in production."""
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure(level="debug", fmt="json", stream=stream)
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def argv_recorder(tmp_path: Path) -> tuple[str, Path]:
    """A ``git`` that writes each argument list it is given to a file, then runs the real git."""
    real = shutil.which("git")
    assert real, "git is needed"
    log = tmp_path / "git-argv.log"
    wrapper = tmp_path / "git-recording"
    wrapper.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{log}'\nexec '{real}' \"$@\"\n")
    wrapper.chmod(0o755)
    return str(wrapper), log
