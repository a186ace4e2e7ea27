"""The whole relay on real parts: RabbitMQ (a vhost of the run), a registry, a Git server.

``Pipeline`` runs the gateway on a loopback port and every worker in this process over the
real ``RabbitBus``, with an exchange and queue prefix of the test's own, so tests never share a
queue. Without ``kubernetes`` settings the reconcile and watch stages report "skipped".
"""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

import workers
from relay.bus import Bus, connect
from relay.gateway.app import create_app
from relay.settings import Settings
from relay.signing import sign_headers
from tests.support.gitserver import GitServer
from tests.support.registry import Registry
from tests.support.service_fixtures import *  # noqa: F403
from workers.runtime import WorkerHost

DEPLOY_SECRET = "pipeline-deploy-secret-7f3a"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pipeline_settings(tmp: Path, amqp_url: str, registry: Registry, git: GitServer) -> Settings:
    (tmp / "deploy").write_text(DEPLOY_SECRET)
    tag = uuid.uuid4().hex[:8]
    return Settings.model_validate(
        {
            "broker": {
                "url": amqp_url,
                "exchange": f"relay.events.{tag}",
                "queue_prefix": f"relay.{tag}",
                "retry": {"delays": [0.2, 0.5], "max_attempts": 3},
            },
            "http": {"host": "127.0.0.1", "port": free_port()},
            "deploy": {
                "secret_file": tmp / "deploy",
                "domain": "apps.example.com",
                "registry": {
                    "url": registry.host,
                    "username": registry.username,
                    "password_file": registry.password_file,
                    "insecure": True,
                },
                "gitops": {
                    "url": git.url,
                    "username": git.username,
                    "token_file": git.token_file,
                    "workdir": tmp / "clone",
                    "batch_window_ms": 50,
                },
                "builder": {"backend": "none"},
                "callback": {"retry_schedule": [0.05, 0.1, 0.2]},
            },
        }
    )


@dataclass
class Pipeline:
    settings: Settings
    bus: Bus
    host: WorkerHost
    runner: web.AppRunner | None = None
    http: aiohttp.ClientSession = field(default_factory=aiohttp.ClientSession)

    @property
    def base(self) -> str:
        return self.settings.public_base_url()

    async def start_gateway(self) -> None:
        self.runner = web.AppRunner(
            create_app(settings=self.settings, bus=self.bus), access_log=None
        )
        await self.runner.setup()
        await web.TCPSite(self.runner, self.settings.http.host, self.settings.http.port).start()

    async def stop_gateway(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    async def deploy(self, **request: Any) -> dict[str, Any]:
        body = json.dumps(request).encode()
        headers = {"Content-Type": "application/json", **sign_headers(DEPLOY_SECRET, body)}
        async with self.http.post(f"{self.base}/deploy", data=body, headers=headers) as response:
            assert response.status == 202, await response.text()
            result: dict[str, Any] = await response.json()
            return result

    async def sse(self, url: str, *, last_event_id: str | None = None) -> list[dict[str, str]]:
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        async with self.http.get(
            url, headers=headers, timeout=aiohttp.ClientTimeout(total=90)
        ) as response:
            assert response.status == 200
            text = (await response.read()).decode()
        frames = []
        for block in text.split("\n\n"):
            fields = dict(
                x.split(": ", 1) for x in block.splitlines() if x and not x.startswith(":")
            )
            if fields:
                frames.append(fields)
        return frames


@pytest.fixture
async def pipeline(
    tmp_path: Path, amqp_url: str, registry: Registry, git_server: GitServer
) -> AsyncIterator[Pipeline]:
    settings = pipeline_settings(tmp_path, amqp_url, registry, git_server)
    bus = connect(settings.broker)
    await bus.start()
    host = WorkerHost(bus, settings, [workers.create(n, settings) for n in workers.available()])
    await host.start()
    world = Pipeline(settings=settings, bus=bus, host=host)
    await world.start_gateway()
    try:
        yield world
    finally:
        await world.stop_gateway()
        await host.stop(grace=2)
        await world.http.close()
        await bus.close()
        await asyncio.sleep(0)
