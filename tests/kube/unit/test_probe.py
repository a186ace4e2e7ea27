"""The optional HTTP probe of an app's URL, against a real loopback HTTP server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from relay.errors import Permanent
from workers.watch.probe import probe


@pytest.fixture
async def app_server() -> AsyncIterator[tuple[str, list[int]]]:
    """Answers with the statuses queued in the list (the last one repeats)."""
    statuses = [503, 404, 200]

    async def handle(request: web.Request) -> web.Response:
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return web.Response(status=status, text="hi")

    app = web.Application()
    app.router.add_get("/", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/", statuses
    await runner.cleanup()


async def test_the_probe_waits_through_gateway_errors_until_the_app_answers(
    app_server: tuple[str, list[int]],
) -> None:
    url, _ = app_server
    status = await probe(url, deadline=time.monotonic() + 10, interval=0.05)
    assert status == 200


async def test_the_probe_times_out_with_the_last_answer(app_server: tuple[str, list[int]]) -> None:
    url, statuses = app_server
    statuses[:] = [502]
    with pytest.raises(Permanent) as failed:
        await probe(url, deadline=time.monotonic() + 0.3, interval=0.05)
    assert failed.value.reason == "timeout" and "HTTP 502" in failed.value.detail
