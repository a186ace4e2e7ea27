"""Issue 6 end to end: live stages, one signed callback, a restarted gateway, relay deploy --wait."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.pipeline.conftest import DEPLOY_SECRET, Pipeline
from tests.support.images import push_scratch_image
from tests.support.registry import Registry

STAGES = [
    "deploy.requested",
    "image.pushed",
    "manifests.committed",
    "reconcile.completed",
    "deploy.ready",
]


class CallbackReceiver:
    """An n8n Wait node stand-in on loopback that fails twice before it accepts."""

    def __init__(self) -> None:
        self.answers = [500, 500]
        self.received: list[tuple[dict[str, str], bytes, int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        status = self.answers.pop(0) if self.answers else 200
        self.received.append((dict(request.headers), await request.read(), status))
        return web.Response(status=status, text="ok" if status == 200 else "boom")


@pytest.fixture
async def callback() -> AsyncIterator[tuple[CallbackReceiver, str]]:
    receiver = CallbackReceiver()
    app = web.Application()
    app.router.add_post("/webhook-waiting/{id}", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield receiver, str(server.make_url("/webhook-waiting/7"))
    await server.close()


def in_order(keys: list[str], expected: list[str]) -> bool:
    it = iter(keys)
    return all(any(k == want for k in it) for want in expected)


async def test_a_deploy_streams_every_stage_calls_back_once_and_survives_a_gateway_restart(
    pipeline: Pipeline, registry: Registry, callback: tuple[CallbackReceiver, str]
) -> None:
    receiver, callback_url = callback
    image = push_scratch_image(registry, "hello", "v1", b"hello v1").ref
    accepted = await pipeline.deploy(
        app="hello", version="v1", image=image, callback_url=callback_url
    )
    frames = await pipeline.sse(accepted["events_url"])
    keys = [f["event"] for f in frames]
    assert in_order(keys, STAGES), keys
    assert keys[-1] == "deploy.ready"
    ready = json.loads(frames[-1]["data"])["data"]
    assert ready["image"].startswith(f"{registry.host}/hello:v1@sha256:")

    await asyncio.sleep(1.0)  # any duplicate callback would arrive by now
    accepted_posts = [r for r in receiver.received if r[2] == 200]
    assert [r[2] for r in receiver.received] == [500, 500, 200]
    assert len(accepted_posts) == 1
    headers, body, _ = accepted_posts[0]
    mac = hmac.new(
        DEPLOY_SECRET.encode(), f"{headers['X-Relay-Timestamp']}.".encode() + body, hashlib.sha256
    )
    assert headers["X-Relay-Signature"] == "sha256=" + mac.hexdigest()
    result = json.loads(body)
    assert (result["deployment_id"], result["status"], result["error"]) == (
        accepted["deployment_id"],
        "ready",
        None,
    )
    assert set(result["stages"]) >= {"build", "commit"}

    before = await (await pipeline.http.get(accepted["status_url"])).json()
    await pipeline.stop_gateway()
    await pipeline.start_gateway()  # a new tracker: it rebuilds from the history stream
    for _ in range(100):
        response = await pipeline.http.get(accepted["status_url"])
        if response.status == 200 and (await response.json())["status"] == "ready":
            break
        await asyncio.sleep(0.1)
    after = await (await pipeline.http.get(accepted["status_url"])).json()
    assert after == before
    again = await pipeline.sse(accepted["events_url"])
    assert [f["id"] for f in again] == [f["id"] for f in frames]


async def test_relay_deploy_wait_exits_0_when_ready_and_1_when_failed(
    pipeline: Pipeline, registry: Registry, tmp_path: Path
) -> None:
    image = push_scratch_image(registry, "waiter", "v1", b"waiter").ref
    (tmp_path / "secret").write_text(DEPLOY_SECRET)
    env = {**os.environ, "RELAY_LOG_FORMAT": "json"}
    command = [
        sys.executable,
        "-m",
        "relay.cli.main",
        "deploy",
        "--url",
        pipeline.base,
        "--secret-file",
        str(tmp_path / "secret"),
        "--app",
        "waiter",
        "--wait",
    ]

    def run(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, *extra], check=False, capture_output=True, text=True, env=env, timeout=120
        )

    ok = await asyncio.to_thread(run, "--version", "v1", "--image", image)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "ready after" in ok.stdout and "deploy.requested" in ok.stdout
    missing = await asyncio.to_thread(
        run, "--version", "v2", "--image", f"{registry.host}/waiter:nope"
    )
    assert missing.returncode == 1, missing.stdout + missing.stderr
    assert "failed at build: image_not_found" in missing.stdout
