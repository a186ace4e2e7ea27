"""Two gateway replicas on one broker (the cluster runs two): a signed deploy is accepted once
across both, and a webhook delivery is published once, since each replica learns what the other
accepted from the event history; a request that races past it carries the same ids, so it is the
same deployment (or event) downstream."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from relay.bus.rabbitmq import RabbitBus
from relay.gateway.app import create_app
from relay.gateway.state import STATE
from relay.settings import BrokerSettings
from relay.signing import sign_headers
from tests.gateway.conftest import DEPLOY_SECRET, FIXTURES, signed, write_settings
from tests.support.gateway_amqp import Vhost

pytestmark = pytest.mark.rabbitmq

GOOD = {"app": "twice", "version": "v1", "image": "127.0.0.1:5000/twice:v1"}


@pytest.fixture
async def replicas(
    tmp_path: Path, run_vhost: Vhost
) -> AsyncIterator[tuple[TestClient[Any, Any], TestClient[Any, Any]]]:
    tag = tmp_path.name[-12:].replace("_", "-").lower()
    settings = write_settings(tmp_path, run_vhost.url)
    broker = BrokerSettings(
        url=run_vhost.url,
        exchange=f"relay.events.{tag}",
        queue_prefix=f"relay.{tag}",
        confirm_timeout=2.0,
        history=True,
    )
    settings = settings.model_copy(update={"broker": broker})
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            bus = RabbitBus(broker)
            await bus.start()
            stack.push_async_callback(bus.close)
            client = TestClient(TestServer(create_app(settings=settings, bus=bus)))
            await client.start_server()
            stack.push_async_callback(client.close)
            clients.append(client)
        yield clients[0], clients[1]


async def test_a_signature_used_at_one_replica_is_refused_at_the_other(
    replicas: tuple[TestClient[Any, Any], TestClient[Any, Any]],
) -> None:
    one, other = replicas
    body = json.dumps(GOOD).encode()
    headers = {"Content-Type": "application/json", **sign_headers(DEPLOY_SECRET, body)}
    first = await one.post("/deploy", data=body, headers=headers)
    assert first.status == 202, await first.text()
    answer = await first.json()

    async def seen_at_other() -> None:  # the other replica's tracker follows the history
        while (await other.get(f"/deployments/{answer['deployment_id']}")).status != 200:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(seen_at_other(), 10)
    again = await other.post("/deploy", data=body, headers=headers)
    assert again.status == 409, await again.text()
    assert (await again.json())["error"] == "replayed_signature"


async def test_replicas_derive_the_same_ids_from_one_signature(
    replicas: tuple[TestClient[Any, Any], TestClient[Any, Any]],
) -> None:
    """Two replicas taking the same request at the same moment (before either has heard of
    the other's) answer with the same deployment and event ids: one deployment downstream."""
    one, other = replicas
    body = json.dumps({**GOOD, "version": "v2"}).encode()
    headers = {"Content-Type": "application/json", **sign_headers(DEPLOY_SECRET, body)}
    answers = await asyncio.gather(
        one.post("/deploy", data=body, headers=headers),
        other.post("/deploy", data=body, headers=headers),
    )
    bodies = [await a.json() for a in answers if a.status == 202]
    assert bodies, [a.status for a in answers]
    assert len({(b["deployment_id"], b["event_id"]) for b in bodies}) == 1


async def test_a_delivery_published_at_one_replica_is_a_duplicate_at_the_other(
    replicas: tuple[TestClient[Any, Any], TestClient[Any, Any]],
) -> None:
    one, other = replicas
    body = (FIXTURES / "github" / "push.json").read_bytes()
    headers = {**signed("gh", body), "X-GitHub-Delivery": "7f3c-replicas-1"}
    first = await one.post("/hook/gh", data=body, headers=headers)
    assert first.status == 202, await first.text()
    event_id = (await first.json())["event_id"]
    assert isinstance(other.server, TestServer)
    deliveries = other.server.app[STATE].deliveries

    async def heard_at_other() -> None:
        while not len(deliveries):
            await asyncio.sleep(0.02)

    await asyncio.wait_for(heard_at_other(), 10)
    again = await other.post("/hook/gh", data=body, headers=headers)
    assert again.status == 200, await again.text()
    assert await again.json() == {
        "duplicate": True,
        "duplicate_event_ids": [event_id],
        "event_id": event_id,
    }
