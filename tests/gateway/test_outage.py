"""The broker away: 503 with Retry-After and /readyz false; back: 202 without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

import aio_pika
from aiohttp.test_utils import TestClient, TestServer

from relay.gateway.app import create_app
from tests.gateway.conftest import FIXTURES, memory_harness, rabbit_harness, signed, write_settings
from tests.support.gateway_amqp import EventReader, Vhost, rabbit_bus

PUSH = (FIXTURES / "github/push.json").read_bytes()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


async def test_unreachable_broker_is_503_and_not_ready(tmp_path: Path) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{_closed_port()}/"
    settings = write_settings(tmp_path, url)
    bus = rabbit_bus(url)  # never connects: nothing listens on that port
    with contextlib.suppress(Exception):
        await asyncio.wait_for(bus.start(), 3)
    async with TestClient(TestServer(create_app(settings=settings, bus=bus))) as client:
        ready = await client.get("/readyz")
        assert ready.status == 503 and (await ready.json())["ready"] is False
        resp = await client.post("/hook/gh", data=PUSH, headers=signed("gh", PUSH))
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) > 0
        assert (await resp.json())["error"] == "broker_unavailable"
        assert (await client.get("/healthz")).status == 200
    await bus.close()


async def test_vhost_gone_then_back_recovers_without_restart(
    tmp_path: Path, fresh_vhost: Vhost
) -> None:
    async with rabbit_harness(tmp_path, fresh_vhost) as harness:
        client = harness.client
        ok = await harness.hook("gh", PUSH, signed("gh", PUSH))
        assert ok.status == 202
        await asyncio.to_thread(fresh_vhost.delete)

        async def not_ready() -> bool:
            return (await client.get("/readyz")).status == 503

        await _until(not_ready)
        resp = await harness.hook("gh", PUSH, signed("gh", PUSH))
        assert resp.status == 503 and "Retry-After" in resp.headers
        await asyncio.to_thread(fresh_vhost.create)
        async with EventReader(fresh_vhost.url) as reader:

            async def ready() -> bool:
                return (await client.get("/readyz")).status == 200

            await _until(ready)
            again = await harness.hook("gh", PUSH, signed("gh", PUSH))
            assert again.status == 202, await again.text()
            body, _ = await reader.get()
            assert body["id"] == (await again.json())["event_id"]


async def test_connections_closed_then_back(tmp_path: Path, fresh_vhost: Vhost) -> None:
    async with rabbit_harness(tmp_path, fresh_vhost) as harness:
        await asyncio.to_thread(fresh_vhost.close_connections)  # the harness's reader too
        statuses: set[int] = set()
        reader = await EventReader(fresh_vhost.url).__aenter__()

        async def accepted() -> bool:
            headers = signed("gh", PUSH)
            resp = await harness.hook("gh", PUSH, headers)
            statuses.add(resp.status)
            return resp.status == 202

        await _until(accepted)
        assert statuses <= {202, 503}
        got, _ = await reader.get()
        assert got["type"] == "dev.relay.git.push"
        await reader.__aexit__()


async def test_nacked_publish_is_503(tmp_path: Path, fresh_vhost: Vhost) -> None:
    """A real broker nack (the only bound queue rejects new messages) is never a 202."""
    connection = await aio_pika.connect(fresh_vhost.url)
    channel = await connection.channel()
    exchange = await channel.declare_exchange("relay.events", "topic", durable=True)
    full = await channel.declare_queue(
        "full", arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    await full.bind(exchange, "git.#")
    settings = write_settings(tmp_path, fresh_vhost.url)
    bus = rabbit_bus(fresh_vhost.url, confirm_timeout=2.0)
    await bus.start()
    async with TestClient(TestServer(create_app(settings=settings, bus=bus))) as client:
        resp = await client.post("/hook/gh", data=PUSH, headers=signed("gh", PUSH))
        assert resp.status == 503, await resp.text()
        assert "Retry-After" in resp.headers
    await bus.close()
    await connection.close()


async def test_unroutable_push_is_503_but_unroutable_ping_is_200(
    tmp_path: Path, fresh_vhost: Vhost
) -> None:
    settings = write_settings(tmp_path, fresh_vhost.url)
    bus = rabbit_bus(fresh_vhost.url, confirm_timeout=2.0)
    await bus.start()  # no queue is bound to anything in this vhost
    async with TestClient(TestServer(create_app(settings=settings, bus=bus))) as client:
        resp = await client.post("/hook/gh", data=PUSH, headers=signed("gh", PUSH))
        assert resp.status == 503
        ping = (FIXTURES / "github/ping.json").read_bytes()
        resp = await client.post("/hook/gh", data=ping, headers=signed("gh", ping, "ping"))
        assert resp.status == 200 and (await resp.json())["ping"] is True
    await bus.close()


async def test_memory_bus_closed_then_started(tmp_path: Path) -> None:
    async with memory_harness(tmp_path) as harness:
        await harness.bus.close()
        assert (await harness.client.get("/readyz")).status == 503
        resp = await harness.hook("gh", PUSH, signed("gh", PUSH))
        assert resp.status == 503 and resp.headers["Retry-After"] == "5"
        await harness.bus.start()
        await harness.events.start()
        assert (await harness.hook("gh", PUSH, signed("gh", PUSH))).status == 202
