"""Gateway test harness: every receiver type configured, over memory:// or real RabbitMQ.

``gateway`` is parametrised over both buses; every RabbitMQ run gets its own vhost, deleted at
the end. Secrets are the signature vectors' own where a vector exists, so fixtures can be sent
with the published signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from relay.bus import Ack, Incoming, QueueSpec
from relay.bus.memory import MemoryBus
from relay.gateway.app import create_app
from relay.settings import Settings
from tests.support.gateway_amqp import EventReader, Vhost, broker_reachable, rabbit_bus

REPO = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").exists())
# shared/ sits beside the repository (CI); a worktree finds it further up.
SHARED = next(p / "shared" for p in REPO.parents if (p / "shared" / "fixtures").is_dir())
FIXTURES = SHARED / "fixtures" / "webhooks"
VECTORS: list[dict[str, Any]] = json.loads((FIXTURES / "signature-vectors.json").read_text())
VECTOR = {v["id"]: v for v in VECTORS}

SECRETS: dict[str, list[str]] = {
    "gh": ["topsecret"],
    "gl": ["topsecret", VECTOR["standard-webhooks-v1"]["secret"]],
    "gt": [
        VECTOR["gitea-go-playground-push"]["secret"],
        "71295b197fa25f4356d2fb9965df3f2379d903d7",
    ],
    "fj": ["forgejo-secret-1"],
    "bb": ["bitbucket-cloud-secret"],
    "bbs": ["secret"],
    "gh2": ["generic-hmac-secret"],
    "any": ["generic-bearer-token-1"],
    "flux": [VECTOR["flux-generic-hmac-forwarder"]["secret"]],
    "reg": ["registry-bearer-token"],
}
TYPES = {
    "gh": "github",
    "gl": "gitlab",
    "gt": "gitea",
    "fj": "forgejo",
    "bb": "bitbucket",
    "bbs": "bitbucket-server",
    "gh2": "generic-hmac",
    "any": "generic",
    "flux": "flux",
    "reg": "registry",
}
DEPLOY_SECRET = "deploy-secret-for-tests"
REGISTRY_TYPE = "application/vnd.docker.distribution.events.v2+json"


def write_settings(tmp: Path, url: str, **extra: Any) -> Settings:
    receivers = []
    for name, kind in TYPES.items():
        files = []
        for i, secret in enumerate(SECRETS[name]):
            path = tmp / f"{name}-{i}.secret"
            path.write_text(secret + "\n")
            files.append(str(path))
        receivers.append({"name": name, "type": kind, "secret_files": files})
    (tmp / "deploy.secret").write_text(DEPLOY_SECRET)
    receivers_extra = extra.pop("receivers", [])
    return Settings(
        broker={"url": url, "confirm_timeout": 2.0},
        http={
            "rate_limit": {"requests": 100_000, "per_seconds": 1},
            "publish_timeout": 3.0,
            **extra.pop("http", {}),
        },
        receivers=receivers + receivers_extra,
        deploy={"secret_file": str(tmp / "deploy.secret"), **extra.pop("deploy", {})},
        **extra,
    )


def hex_hmac(secret: str, body: bytes, algo: str = "sha256") -> str:
    return hmac.new(secret.encode(), body, getattr(hashlib, algo)).hexdigest()


def signed(
    receiver: str, body: bytes, event: str | None = None, secret: str | None = None, **more: str
) -> dict[str, str]:
    """Headers a real sender of that receiver's type would send (its first secret)."""
    kind, secret = TYPES[receiver], secret or SECRETS[receiver][0]
    headers = {"Content-Type": "application/json"}
    match kind:
        case "github":
            headers |= {"X-Hub-Signature-256": "sha256=" + hex_hmac(secret, body)}
            headers |= {"X-GitHub-Event": event or "push"}
        case "gitlab":
            headers |= {"X-Gitlab-Token": secret, "X-Gitlab-Event": event or "Push Hook"}
        case "gitea":
            headers |= {"X-Gitea-Signature": hex_hmac(secret, body), "X-Gitea-Event": event or ""}
        case "forgejo":
            sig = hex_hmac(secret, body)
            headers |= {"X-Forgejo-Signature": sig, "X-Forgejo-Event": event or "push"}
        case "bitbucket" | "bitbucket-server":
            headers |= {"X-Hub-Signature": "sha256=" + hex_hmac(secret, body)}
            headers |= {"X-Event-Key": event or "repo:push"}
        case "generic-hmac" | "flux":
            headers |= {"X-Signature": "sha256=" + hex_hmac(secret, body)}
        case "generic":
            headers |= {"Authorization": f"Bearer {secret}"}
        case "registry":
            headers |= {"Authorization": f"Bearer {secret}", "Content-Type": REGISTRY_TYPE}
    return {k: v for k, v in headers.items() if v} | more


class MemoryReader:
    def __init__(self, bus: MemoryBus) -> None:
        self._bus = bus
        self._got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def start(self) -> None:
        async def handler(message: Incoming) -> Ack:
            self._got.put_nowait(json.loads(message.body))
            return Ack()

        self._consumer = await self._bus.consume(QueueSpec(name="probe", keys=("#",)), handler)

    async def get(self, timeout: float = 5.0) -> dict[str, Any]:
        return await asyncio.wait_for(self._got.get(), timeout)

    async def empty(self, settle: float = 0.2) -> bool:
        await asyncio.sleep(settle)
        return self._got.empty()


class RabbitReader:
    def __init__(self, reader: EventReader) -> None:
        self._reader = reader

    async def get(self, timeout: float = 5.0) -> dict[str, Any]:
        body, message = await self._reader.get(timeout)
        assert message.content_type == "application/cloudevents+json"
        assert message.message_id == body["id"]
        assert message.routing_key == body["type"].removeprefix("dev.relay.")
        assert message.delivery_mode == 2
        return body

    async def empty(self, settle: float = 0.3) -> bool:
        return await self._reader.empty(settle)


@dataclass
class Harness:
    client: TestClient[Any, Any]
    bus: Any
    events: Any
    settings: Settings
    kind: str

    async def hook(self, receiver: str, body: bytes, headers: dict[str, str]) -> ClientResponse:
        return await self.client.post(f"/hook/{receiver}", data=body, headers=headers)


def _require_rabbit() -> None:
    if not broker_reachable():
        if os.environ.get("CI"):
            pytest.fail("RabbitMQ is not reachable at RELAY_TEST_AMQP_URL")
        pytest.skip("RabbitMQ is not reachable at RELAY_TEST_AMQP_URL")


@pytest.fixture(scope="session")
def run_vhost() -> Iterator[Vhost]:
    """One vhost for this test run's RabbitMQ tests, deleted at the end."""
    _require_rabbit()
    vhost = Vhost().create()
    yield vhost
    vhost.delete()


@pytest.fixture
def fresh_vhost() -> Iterator[Vhost]:
    """A vhost of its own, for tests that take the broker away."""
    _require_rabbit()
    vhost = Vhost("relay-gw-outage").create()
    yield vhost
    vhost.delete()


async def _client(settings: Settings, bus: Any) -> TestClient[Any, Any]:
    client = TestClient(TestServer(create_app(settings=settings, bus=bus)))
    await client.start_server()
    return client


@asynccontextmanager
async def memory_harness(tmp: Path, **extra: Any) -> AsyncIterator[Harness]:
    settings = write_settings(tmp, "memory://", **extra)
    bus = MemoryBus(settings.broker.retry, history=False)
    await bus.start()
    reader = MemoryReader(bus)
    await reader.start()
    client = await _client(settings, bus)
    try:
        yield Harness(client=client, bus=bus, events=reader, settings=settings, kind="memory")
    finally:
        await client.close()
        await bus.close()


@asynccontextmanager
async def rabbit_harness(tmp: Path, vhost: Vhost, **extra: Any) -> AsyncIterator[Harness]:
    settings = write_settings(tmp, vhost.url, **extra)
    bus = rabbit_bus(vhost.url, confirm_timeout=2.0)
    await bus.start()
    try:
        async with EventReader(vhost.url) as reader:
            client = await _client(settings, bus)
            try:
                yield Harness(
                    client=client,
                    bus=bus,
                    events=RabbitReader(reader),
                    settings=settings,
                    kind="rabbit",
                )
            finally:
                await client.close()
    finally:
        await bus.close()


@pytest.fixture
async def memory_gateway(tmp_path: Path) -> AsyncIterator[Harness]:
    async with memory_harness(tmp_path) as harness:
        yield harness


@pytest.fixture(params=["memory", "rabbitmq"])
async def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """The gateway over memory:// and over real RabbitMQ (this run's vhost)."""
    if request.param == "memory":
        async with memory_harness(tmp_path) as harness:
            yield harness
    else:
        vhost: Vhost = request.getfixturevalue("run_vhost")
        async with rabbit_harness(tmp_path, vhost) as harness:
            yield harness
