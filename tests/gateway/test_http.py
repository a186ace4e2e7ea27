"""HTTP behaviour of /hook: status codes, limits, duplicates, filters, rate limits, metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import pytest
from aiohttp import ClientResponse

from relay.gateway.limits import RateLimiter, client_ip, parse_networks
from tests.gateway.conftest import FIXTURES, Harness, memory_harness, signed

PUSH = (FIXTURES / "github/push.json").read_bytes()
MIB = 1024 * 1024


async def test_unknown_receiver_is_404_json(gateway: Harness) -> None:
    resp = await gateway.hook("nobody", PUSH, signed("gh", PUSH))
    assert resp.status == 404
    assert await resp.json() == {
        "error": "unknown_receiver",
        "detail": "no receiver is named 'nobody'",
    }
    assert await gateway.events.empty(0.1)


async def test_unknown_path_and_method_are_json(memory_gateway: Harness) -> None:
    resp = await memory_gateway.client.get("/nothing-here")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    resp = await memory_gateway.client.get("/hook/gh")
    assert resp.status == 405
    assert set(await resp.json()) == {"error", "detail"}


async def _chunks(total: int, size: int = MIB) -> AsyncIterator[bytes]:
    sent = 0
    while sent < total:
        piece = min(size, total - sent)
        sent += piece
        yield b" " * piece


async def test_26_mib_body_streamed_is_413(gateway: Harness) -> None:
    headers = signed("gh", PUSH)
    resp = await gateway.client.post("/hook/gh", data=_chunks(26 * MIB), headers=headers)
    assert resp.status == 413
    assert (await resp.json())["error"] == "body_too_large"
    assert await gateway.events.empty(0.1)
    ok = await gateway.hook("gh", PUSH, signed("gh", PUSH))
    assert ok.status == 202  # still serving
    await gateway.events.get()


async def test_declared_oversize_is_refused_before_reading(memory_gateway: Harness) -> None:
    """A Content-Length over the cap is answered without the body being read."""
    port = memory_gateway.client.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /hook/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {26 * MIB}\r\n\r\n".encode()
        + b"{"
    )
    await writer.drain()
    status = await asyncio.wait_for(reader.readline(), 5)
    assert status.startswith(b"HTTP/1.1 413")
    writer.close()


async def test_exactly_the_limit_is_read(tmp_path: Path) -> None:
    async with memory_harness(tmp_path, http={"max_body_bytes": 10_000}) as harness:
        big = b" " * (10_000 - len(PUSH)) + PUSH
        assert (await harness.hook("gh", big, signed("gh", big))).status == 202
        bigger = b" " + big
        assert (await harness.hook("gh", bigger, signed("gh", bigger))).status == 413


async def test_wrong_content_type_is_415(gateway: Harness) -> None:
    for content_type in ("text/plain", "application/xml", ""):
        headers = signed("gh", PUSH) | {"Content-Type": content_type}
        resp = await gateway.hook("gh", PUSH, headers)
        assert resp.status == 415
        assert (await resp.json())["error"] == "unsupported_media_type"
    reg = (FIXTURES / "registry/envelope_push.json").read_bytes()
    resp = await gateway.hook("reg", reg, signed("reg", reg) | {"Content-Type": "text/plain"})
    assert resp.status == 415
    assert await gateway.events.empty(0.1)


async def test_malformed_json_is_400(gateway: Harness) -> None:
    for body in (b"{not json", b"[1, 2]", b"\xff\xfe"):
        resp = await gateway.hook("gh", body, signed("gh", body))
        assert resp.status == 400, body
        assert (await resp.json())["error"] == "malformed_payload"
    body = b'{"ref": "refs/heads/x"}'  # a push without before/after
    resp = await gateway.hook("gh", body, signed("gh", body))
    assert resp.status == 400
    assert await gateway.events.empty(0.1)


async def test_form_encoded_github_payload(memory_gateway: Harness) -> None:
    from urllib.parse import urlencode

    body = urlencode({"payload": PUSH.decode()}).encode()
    headers = signed("gh", body) | {"Content-Type": "application/x-www-form-urlencoded"}
    resp = await memory_gateway.hook("gh", body, headers)
    assert resp.status == 202
    assert (await memory_gateway.events.get())["data"]["branch"] == "master"


async def test_github_redelivery_is_a_duplicate(gateway: Harness) -> None:
    headers = signed("gh", PUSH, **{"X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"})
    first = await gateway.hook("gh", PUSH, headers)
    second = await gateway.hook("gh", PUSH, headers)
    assert first.status == 202 and second.status == 200
    one, two = await first.json(), await second.json()
    assert two["duplicate"] is True and two["event_id"] == one["event_id"]
    await gateway.events.get()
    assert await gateway.events.empty()


@pytest.mark.parametrize(
    ("receiver", "name", "event", "header"),
    [
        ("gl", "gitlab/push.json", "Push Hook", "Idempotency-Key"),
        ("bb", "bitbucket-cloud/repo_push.json", "repo:push", "X-Request-UUID"),
        ("bbs", "bitbucket-server/repo_refs_changed.json", "repo:refs_changed", "X-Request-Id"),
        ("gh2", "github/push.json", None, "webhook-id"),
    ],
)
async def test_delivery_headers_dedupe(
    memory_gateway: Harness, receiver: str, name: str, event: str | None, header: str
) -> None:
    body = (FIXTURES / name).read_bytes()
    headers = signed(receiver, body, event, **{header: "same-delivery"})
    assert (await memory_gateway.hook(receiver, body, headers)).status == 202
    again = await memory_gateway.hook(receiver, body, headers)
    assert again.status == 200 and (await again.json())["duplicate"] is True
    await memory_gateway.events.get()
    assert await memory_gateway.events.empty(0.1)


async def test_gitea_redelivery_with_a_new_delivery_id(gateway: Harness) -> None:
    body = (FIXTURES / "gitea/push.json").read_bytes()
    for attempt in ("attempt-1", "attempt-2"):
        headers = signed("gt", body, "push", **{"X-Gitea-Delivery": attempt})
        resp = await gateway.hook("gt", body, headers)
    assert resp.status == 200 and (await resp.json())["duplicate"] is True
    await gateway.events.get()
    assert await gateway.events.empty()


async def test_concurrent_duplicates_publish_once(memory_gateway: Harness) -> None:
    headers = signed("gh", PUSH, **{"X-GitHub-Delivery": "concurrent"})
    answers = await asyncio.gather(*(memory_gateway.hook("gh", PUSH, headers) for _ in range(8)))
    assert sorted(r.status for r in answers) == [200] * 7 + [202]
    await memory_gateway.events.get()
    assert await memory_gateway.events.empty(0.1)


async def test_event_and_branch_filters(tmp_path: Path) -> None:
    secret = tmp_path / "f.secret"
    secret.write_text("filter-secret")
    extra = {
        "name": "only",
        "type": "github",
        "secret_file": str(secret),
        "events": ["push"],
        "branches": ["main", "release/*"],
    }
    async with memory_harness(tmp_path, receivers=[extra]) as harness:

        def post(body: bytes, event: str) -> Awaitable[ClientResponse]:
            return harness.hook("only", body, signed("gh", body, event, secret="filter-secret"))

        pr = (FIXTURES / "github/pull_request_opened.json").read_bytes()
        resp = await post(pr, "pull_request")
        assert resp.status == 200 and "pull_request" in (await resp.json())["ignored"]
        resp = await post(PUSH, "push")  # refs/heads/master
        assert resp.status == 200 and "master" in (await resp.json())["ignored"]
        for branch in ("main", "release/1.2"):
            body = PUSH.replace(b'"refs/heads/master"', f'"refs/heads/{branch}"'.encode())
            assert (await post(body, "push")).status == 202
            assert (await harness.events.get())["data"]["branch"] == branch
        tag = (FIXTURES / "github/push_tag_created.json").read_bytes()
        assert (await post(tag, "push")).status == 202  # tags are not branch-filtered
        ping = (FIXTURES / "github/ping.json").read_bytes()
        assert (await post(ping, "ping")).status == 200  # pings pass every filter
        assert (await post(ping, "ping")).status == 200


async def test_rate_limit_per_source_ip(tmp_path: Path) -> None:
    extra = {"http": {"rate_limit": {"requests": 3, "per_seconds": 600}, "trusted_proxies": []}}
    async with memory_harness(tmp_path, **extra) as harness:
        statuses = []
        for i in range(5):
            headers = signed("gh", PUSH, **{"X-GitHub-Delivery": f"rl-{i}"})
            statuses.append(await harness.hook("gh", PUSH, headers))
        assert [r.status for r in statuses] == [202, 202, 202, 429, 429]
        assert int(statuses[-1].headers["Retry-After"]) >= 1
        assert (await statuses[-1].json())["error"] == "rate_limited"
        # another receiver has its own bucket
        flux = (FIXTURES / "flux/event_kustomization_error.json").read_bytes()
        assert (await harness.hook("flux", flux, signed("flux", flux))).status == 202
        # X-Forwarded-For from an untrusted peer changes nothing
        headers = signed("gh", PUSH, **{"X-Forwarded-For": "203.0.113.9"})
        assert (await harness.hook("gh", PUSH, headers)).status == 429


async def test_forwarded_for_believed_from_trusted_proxy(tmp_path: Path) -> None:
    extra = {
        "http": {
            "rate_limit": {"requests": 1, "per_seconds": 600},
            "trusted_proxies": ["127.0.0.0/8"],
        }
    }
    async with memory_harness(tmp_path, **extra) as harness:
        for i, ip in enumerate(["203.0.113.1", "203.0.113.2"]):
            headers = signed("gh", PUSH, **{"CF-Connecting-IP": ip, "X-GitHub-Delivery": f"t{i}"})
            assert (await harness.hook("gh", PUSH, headers)).status == 202
        headers = signed("gh", PUSH, **{"X-Forwarded-For": "203.0.113.1, 127.0.0.1"})
        assert (await harness.hook("gh", PUSH, headers)).status == 429


def test_client_ip_rules() -> None:
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_ip("198.51.100.7", {"X-Forwarded-For": "1.2.3.4"}, trusted) == "198.51.100.7"
    assert client_ip("10.1.1.1", {"X-Forwarded-For": "1.2.3.4, 10.2.2.2"}, trusted) == "1.2.3.4"
    assert client_ip("10.1.1.1", {"X-Forwarded-For": "spoof, 5.6.7.8"}, trusted) == "5.6.7.8"
    assert client_ip("10.1.1.1", {"CF-Connecting-IP": "9.9.9.9"}, trusted) == "9.9.9.9"
    assert client_ip("10.1.1.1", {}, trusted) == "10.1.1.1"


def test_token_bucket_refills() -> None:
    limiter = RateLimiter(requests=2, per_seconds=10)
    assert [limiter.take("a", now=0.0) for _ in range(3)] == [0, 0, 5]
    assert limiter.take("a", now=5.0) == 0
    assert limiter.take("b", now=5.0) == 0


async def test_slow_body_is_cut_off(tmp_path: Path) -> None:
    async with memory_harness(tmp_path, http={"read_timeout": 0.5}) as harness:
        reader, writer = await asyncio.open_connection("127.0.0.1", harness.client.port)
        writer.write(
            b"POST /hook/gh HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 5)
        assert status.startswith(b"HTTP/1.1 408")
        writer.close()


async def test_metrics_count_requests_and_signature_failures(memory_gateway: Harness) -> None:
    await memory_gateway.hook("gh", PUSH, signed("gh", PUSH))
    await memory_gateway.hook("gh", PUSH, signed("gh", PUSH, secret="wrong"))
    await memory_gateway.hook("nope", PUSH, signed("gh", PUSH))
    resp = await memory_gateway.client.get("/metrics")
    assert resp.status == 200
    text = await resp.text()
    assert 'relay_gateway_requests_total{receiver="gh",status="202"} 1.0' in text
    assert 'relay_gateway_requests_total{receiver="gh",status="401"} 1.0' in text
    assert 'relay_gateway_requests_total{receiver="unknown",status="404"} 1.0' in text
    assert 'relay_signature_failures_total{reason="bad_signature",receiver="gh"} 1.0' in text
    assert 'relay_publish_confirm_seconds_count{kind="git",outcome="confirmed"} 1.0' in text


async def test_health_and_readiness(memory_gateway: Harness) -> None:
    assert await (await memory_gateway.client.get("/healthz")).json() == {"status": "ok"}
    ready = await memory_gateway.client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["ready"] is True


async def test_answers_are_json_with_error_and_detail(memory_gateway: Harness) -> None:
    resp = await memory_gateway.hook("gh", PUSH, {"Content-Type": "application/json"})
    assert resp.status == 401
    body = json.loads(await resp.text())
    assert body == {"error": "missing_signature", "detail": "X-Hub-Signature-256 is required"}


async def test_serve_closes_connections_that_never_finish_headers(tmp_path: Path) -> None:
    import socket as sk

    from relay.bus.memory import MemoryBus
    from relay.gateway.app import serve
    from tests.gateway.conftest import write_settings

    with sk.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = write_settings(
        tmp_path, "memory://", http={"host": "127.0.0.1", "port": port, "header_timeout": 0.5}
    )
    bus = MemoryBus()
    await bus.start()
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, bus, stop=stop))
    for _ in range(50):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.05)
    writer.write(b"POST /hook/gh HTTP/1.1\r\nHost: x\r\n")  # and then nothing more
    await writer.drain()
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
    assert asyncio.get_running_loop().time() - started < 3
    writer.close()
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    w2.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(r2.read(), 5)).startswith(b"HTTP/1.1 200")
    w2.close()
    stop.set()
    await task
    await bus.close()


def test_receiver_urls(tmp_path: Path) -> None:
    from relay.gateway.app import receiver_urls
    from tests.gateway.conftest import write_settings

    settings = write_settings(tmp_path, "memory://", http={"public_url": "https://relay.example/"})
    urls = receiver_urls(settings)
    assert ("gh", "github", "https://relay.example/hook/gh") in urls
    assert len(urls) == 10


def test_empty_secret_refuses_to_start(tmp_path: Path) -> None:
    from pydantic import SecretStr

    from relay.bus.memory import MemoryBus
    from relay.errors import ConfigError
    from relay.gateway.app import create_app
    from tests.gateway.conftest import write_settings

    settings = write_settings(tmp_path, "memory://")
    broken = settings.receivers[0].model_copy()
    broken._secrets = [SecretStr(" ")]  # what a settings object built around the files could hold
    with pytest.raises(ConfigError, match="empty secret"):
        create_app(settings=settings.model_copy(update={"receivers": [broken]}), bus=MemoryBus())
    with pytest.raises(ConfigError, match="no secret"):
        nothing = settings.receivers[0].model_copy()
        nothing._secrets = []
        create_app(settings=settings.model_copy(update={"receivers": [nothing]}), bus=MemoryBus())
