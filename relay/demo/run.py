"""The demo's script: start everything in one process, send a push and a deploy, show the result.

Printed for a person: the live event timeline, the files the commit worker wrote into the GitOps
repository, and a summary of the deployment's stages. Without a cluster the reconcile and watch
stages say "skipped: no Kubernetes configured" and the demo still ends with its summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

import workers
from relay import logging as relay_logging
from relay.bus.memory import MemoryBus
from relay.cli.deploy import format_one
from relay.cli.tail import line
from relay.demo.environment import DemoParts, demo_parts, free_port, git
from relay.demo.samples import APP_DOCKERFILE, APP_FILES, github_push
from relay.gateway.app import create_app
from relay.settings import Settings
from relay.signing import sign_headers
from workers.runtime import WorkerHost

GITOPS_PATH = "kubernetes/rpi-cluster/apps/dynamic"
DEMO_SECRET = "demo-secret-not-for-production"
TERMINAL = {"deploy.ready", "deploy.failed"}


def demo_settings(parts: DemoParts, port: int) -> Settings:
    secrets = parts.root / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in ("gh", "deploy"):
        (secrets / name).write_text(DEMO_SECRET + "-" + name + "\n")
    deploy: dict[str, Any] = {
        "secret_file": secrets / "deploy",
        "domain": "apps.example.com",
        "registry": {"url": parts.registry or "127.0.0.1:5000", "insecure": True},
        "gitops": {
            "url": str(parts.gitops),
            "path": GITOPS_PATH,
            "workdir": parts.root / "clone",
            "batch_window_ms": 100,
        },
        "builder": {"backend": parts.builder},
    }
    return Settings(
        broker={"url": "memory://", "retry": {"delays": [0.2, 0.5], "max_attempts": 3}},
        http={"host": "127.0.0.1", "port": port},
        receivers=[
            {
                "name": "gh",
                "type": "github",
                "secret_file": secrets / "gh",
                "reconcile": [{"kind": "GitRepository", "name": "flux-system"}],
            }
        ],
        deploy=deploy,
    )


async def run_demo(*, keep: Path | None = None, wait_seconds: float = 180.0) -> int:
    relay_logging.configure(level="warning", fmt="console")
    async with demo_parts(keep) as parts:
        _say(
            f"demo parts in {parts.root}: GitOps repo {parts.gitops}, registry "
            f"{parts.registry or 'none (install docker-registry)'}, builder {parts.builder}"
        )
        settings = demo_settings(parts, free_port())
        return await _run(settings, parts, wait_seconds)


async def _run(settings: Settings, parts: DemoParts, wait_seconds: float) -> int:
    bus = MemoryBus(settings.broker.retry)
    await bus.start()
    host = WorkerHost(bus, settings, [workers.create(n, settings) for n in workers.available()])
    runner = web.AppRunner(create_app(settings=settings, bus=bus), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http.host, settings.http.port).start()
    await host.start()
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    printer = asyncio.create_task(_timeline(bus, done))
    try:
        async with aiohttp.ClientSession(base_url=settings.public_base_url()) as http:
            await asyncio.sleep(0.05)
            await _send_push(http)
            deployment = await _send_deploy(http, parts)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done), wait_seconds)
            await asyncio.sleep(0.3)
            await _show_files(parts)
            return await _summary(http, deployment, done)
    finally:
        printer.cancel()
        await runner.shutdown()
        await host.stop(grace=2)
        await runner.cleanup()
        await bus.close()


async def _timeline(bus: MemoryBus, done: asyncio.Future[str]) -> None:
    start = time.monotonic()
    _say("event timeline:")
    async for event in bus.tap(("#",)):
        print(f"  +{time.monotonic() - start:6.2f}s  {line(event)}", flush=True)
        if event.routing_key in TERMINAL and event.deploymentid and not done.done():
            done.set_result(event.routing_key)


async def _send_push(http: aiohttp.ClientSession) -> None:
    payload = github_push(
        repository="demo/homelab", clone_url="https://github.com/demo/homelab.git", after="a" * 40
    )
    body = json.dumps(payload).encode()
    digest = hmac.new(f"{DEMO_SECRET}-gh".encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": "demo-delivery-1",
        "X-Hub-Signature-256": f"sha256={digest}",
    }
    async with http.post("/hook/gh", data=body, headers=headers) as response:
        _say(f"POST /hook/gh (signed GitHub push) -> {response.status} {await response.text()}")


async def _send_deploy(http: aiohttp.ClientSession, parts: DemoParts) -> str | None:
    request: dict[str, Any] = {"app": "hello", "version": "v1", "port": 8080}
    if parts.builder != "none":
        request["source"] = {"files": APP_FILES, "dockerfile": APP_DOCKERFILE}
    else:
        request["image"] = f"{parts.registry or '127.0.0.1:5000'}/hello:v1"
    body = json.dumps(request).encode()
    headers = {"Content-Type": "application/json", **sign_headers(f"{DEMO_SECRET}-deploy", body)}
    async with http.post("/deploy", data=body, headers=headers) as response:
        text = await response.text()
        _say(f"POST /deploy (signed, app hello v1) -> {response.status} {text}")
        return str(json.loads(text).get("deployment_id")) if response.status == 202 else None


async def _show_files(parts: DemoParts) -> None:
    listing = await git("--git-dir", str(parts.gitops), "ls-tree", "-r", "--name-only", "main")
    _say("files in the GitOps repository (branch main):")
    for name in listing.split():
        print(f"  {name}")
    path = f"{GITOPS_PATH}/hello/app/deployment.yaml"
    if path in listing.split():
        _say(f"{path}:")
        print(await git("--git-dir", str(parts.gitops), "show", f"main:{path}"))


async def _summary(
    http: aiohttp.ClientSession, deployment: str | None, done: asyncio.Future[str]
) -> int:
    if deployment is None:
        _say("summary: the deploy request was refused")
        return 1
    async with http.get(f"/deployments/{deployment}") as response:
        found = await response.json()
    _say("summary:")
    print(format_one(found))
    if not done.done():
        _say("the deployment did not finish in time")
        return 1
    return 0 if found["status"] == "ready" else 1


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)
