"""``POST /deploy`` with a prebuilt image → ``reconcile.requested``, over real Git and RabbitMQ.

The gateway and the build, commit and reconcile workers run in this one process on the relay's
RabbitMQ bus (a private vhost), against a real registry (``docker-registry``, htpasswd) and a
real Git smart-HTTP server (nginx + git http-backend), all on loopback. Without Kubernetes the
reconcile worker reports its stage as skipped at once, so the clock stops at
``reconcile.requested``; on a branch without the reconcile worker it stops one step earlier, at
``manifests.committed`` (the table says which).

- one deploy: signed POST → the event, one at a time after a warm-up; median of ``repeat``;
  baseline: what a careful script does for the same deploy (HEAD the manifest for its digest,
  clone, write the same files, commit, push).
- 50 deploys at once (50 apps): wall time from the first POST to the last event, against one
  deploy (goal <= 3x), and the pushes the Git server received for them (goal <= 10).

Run: ``python -m bench.deploy_pipeline`` (prints its metrics; ``make bench`` records them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

import workers
from bench.bus_throughput import private_vhost
from bench.commit_throughput import naive_deploy
from bench.summary import Goal, Metric, skipped, table
from relay.bus import Ack, Incoming, Outcome, QueueSpec
from relay.bus.rabbitmq import RabbitBus
from relay.events import decode
from relay.gateway.app import create_app
from relay.logging import configure
from relay.settings import Settings
from relay.signing import sign_headers
from tests.commit.conftest import GITOPS_PATH, receive_pack_posts
from tests.support.gitserver import GitServer
from tests.support.images import push_scratch_image
from tests.support.registry import Registry
from workers.runtime import WorkerHost

SECRET = "bench-deploy-secret-not-for-production"
AT_ONCE = 50
TOOLS = ("rabbitmqctl", "docker-registry", "git", "nginx", "fcgiwrap")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(url: str, registry: Registry, git: GitServer, work: Path) -> Settings:
    (work / "deploy-secret").write_text(SECRET)
    return Settings.model_validate(
        {
            "broker": {"url": url},
            "http": {"host": "127.0.0.1", "port": free_port()},
            "deploy": {
                "secret_file": str(work / "deploy-secret"),
                "rate_limit": {"requests": 10_000, "per_seconds": 1},
                "registry": {
                    "url": registry.host,
                    "username": registry.username,
                    "password_file": str(registry.password_file),
                    "insecure": True,
                },
                "builder": {"backend": "none"},
                "gitops": {
                    "url": git.url,
                    "path": GITOPS_PATH,
                    "username": git.username,
                    "token_file": str(git.token_file),
                    "workdir": str(work / "clone"),
                },
            },
        }
    )


class Pipeline:
    """The relay in one process; ``deploy(app)`` answers once the awaited event arrived."""

    def __init__(self, settings: Settings, registry: Registry) -> None:
        self.settings = settings
        self.registry = registry
        names = [n for n in ("build", "commit", "reconcile") if n in workers.available()]
        self.target = "reconcile.requested" if "reconcile" in names else "manifests.committed"
        self.bus = RabbitBus(settings.broker)
        self.host = WorkerHost(self.bus, settings, [workers.create(n, settings) for n in names])
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.http: aiohttp.ClientSession | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Pipeline]:
        await self.bus.start()
        keys = (self.target, "deploy.failed")
        await self.bus.consume(QueueSpec(name="bench.pipeline.sink", keys=keys), self._seen)
        await self.host.start()
        runner = web.AppRunner(create_app(settings=self.settings, bus=self.bus), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.settings.http.port).start()
        self.http = aiohttp.ClientSession(base_url=self.settings.public_base_url())
        try:
            yield self
        finally:
            await self.http.close()
            await runner.shutdown()
            await self.host.stop(grace=10)
            await runner.cleanup()
            await self.bus.close()

    async def _seen(self, message: Incoming) -> Outcome:
        event = decode(message.body)
        future = self.waiting.pop(event.deploymentid or "", None)
        if future is not None and not future.done():
            future.set_result(event.routing_key)
        return Ack()

    def image(self, app: str) -> str:
        tag = uuid.uuid4().hex[:10]
        return push_scratch_image(self.registry, app, tag, tag.encode()).ref

    async def deploy(self, app: str, image: str) -> float:
        """Seconds from the signed POST to the awaited event for this deployment."""
        assert self.http is not None
        body = json.dumps({"app": app, "version": image.rsplit(":", 1)[1], "image": image})
        headers = {"Content-Type": "application/json", **sign_headers(SECRET, body.encode())}
        started = time.perf_counter()
        async with self.http.post("/deploy", data=body, headers=headers) as response:
            answer = await response.json()
            if response.status != 202:
                raise RuntimeError(f"deploy refused: {response.status} {answer}")
        future = self.waiting.setdefault(
            answer["deployment_id"], asyncio.get_running_loop().create_future()
        )
        got = await asyncio.wait_for(future, 120)
        if got != self.target:
            raise RuntimeError(f"deploy {app} ended with {got}")
        return time.perf_counter() - started


async def bare_once(registry: Registry, git: GitServer, work: Path, n: int) -> float:
    """The careful script: resolve the digest, then clone, write, commit and push."""
    app = f"naive-{n:03d}"
    tag = uuid.uuid4().hex[:10]
    await asyncio.to_thread(push_scratch_image, registry, app, tag, tag.encode())
    started = time.perf_counter()
    await asyncio.to_thread(registry.manifest_digest, app, tag)
    await naive_deploy(git, work, n)
    return time.perf_counter() - started


async def measure(repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="relay-bench-pipeline-") as raw:
        work = Path(raw)
        async with private_vhost() as url:
            with Registry(work / "registry") as registry, GitServer(work / "git") as git:
                return await _measure(url, registry, git, work, repeat)


async def _measure(
    url: str, registry: Registry, git: GitServer, work: Path, repeat: int
) -> dict[str, Any]:
    settings = settings_for(url, registry, git, work)
    pipeline = Pipeline(settings, registry)
    async with pipeline.running():
        await pipeline.deploy("warm-up", pipeline.image("warm-up"))
        one = [await pipeline.deploy(f"one-{i}", pipeline.image(f"one-{i}")) for i in range(repeat)]
        apps = [f"many-{i:02d}" for i in range(AT_ONCE)]
        images = [pipeline.image(app) for app in apps]  # pushed before the clock starts
        before = receive_pack_posts(git)
        started = time.perf_counter()
        each = await asyncio.gather(
            *(pipeline.deploy(a, i) for a, i in zip(apps, images, strict=True))
        )
        wall = time.perf_counter() - started
        pushes = receive_pack_posts(git) - before
    naive = [await bare_once(registry, git, work, i) for i in range(repeat)]
    return {
        "target": pipeline.target,
        "one": statistics.median(one),
        "naive": statistics.median(naive),
        "wall": wall,
        "each_max": max(each),
        "pushes": pushes,
    }


def collect(quick: bool = True) -> list[Metric]:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return [skipped("deploy", f"{', '.join(missing)} not installed")]
    r = asyncio.run(measure(3 if quick else 5))
    target = r["target"]
    return [
        Metric(
            bench="deploy",
            name=f"/deploy prebuilt -> {target}, one at a time (median)",
            value=r["one"],
            unit="s",
            baseline=r["naive"],
            baseline_name="HEAD + clone/commit/push script",
        ),
        Metric(
            bench="deploy",
            name=f"{AT_ONCE} deploys at once -> {target} (wall)",
            value=r["wall"],
            unit="s",
            baseline=r["one"],
            baseline_name="one deploy",
            goal=Goal(on="ratio", op="<=", target=3),
        ),
        Metric(
            bench="deploy",
            name=f"Git pushes for {AT_ONCE} deploys at once",
            value=r["pushes"],
            unit="pushes",
            goal=Goal(on="value", op="<=", target=10),
        ),
    ]


def main() -> None:
    configure(level="warning", fmt="console", stream=sys.stderr)
    print(table(collect(quick="--full" not in sys.argv)))


if __name__ == "__main__":
    main()
