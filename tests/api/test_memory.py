"""Memory stays flat over a long run of hostile and repeated requests (issue 9).

The in-process gateway (memory://, logging as ``relay gateway`` configures it, to /dev/null)
answers ``RELAY_FUZZ_REQUESTS`` requests on keep-alive loopback connections (``make fuzz``:
100,000; 20,000 by default, so ``make test`` stays short on a shared 2-core machine):
unsigned and forged deliveries to every receiver type, forged deploys, one valid delivery resent
again and again (duplicates), and a trickle of new valid deliveries that keeps every bounded
store (the dedupe window, the bus history) evicting. After a warm-up that fills those stores, the
process's resident memory may grow by at most 20 MiB, and by at most 5 MiB over the second
half (a leak of ~1 KiB a request fails at 20,000 requests, ~200 B at 100,000); the stores stay
within their bounds.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from aiohttp import web

from relay.gateway.app import create_app
from relay.gateway.state import STATE
from relay.logging import configure
from tests.api.live import CountingBus, fuzz_settings, record
from tests.gateway.conftest import FIXTURES, TYPES, signed

REQUESTS = int(os.environ.get("RELAY_FUZZ_REQUESTS", "20000"))  # make fuzz: 100,000
CONNECTIONS = 8
WINDOW = 1_000  # dedupe window and bus history: small, so the run wraps both many times
BUDGET_MIB = 20.0
PUSH = (FIXTURES / "github/push.json").read_bytes()


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def wire(path: str, headers: dict[str, str], body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


def requests_mix() -> list[tuple[str, bytes]]:
    """(kind, request bytes) in the proportions sent; 'unique' is rebuilt per request."""
    mix: list[tuple[str, bytes]] = []
    plain = {"Content-Type": "application/json"}
    for name in sorted(TYPES):
        mix.append(("unsigned", wire(f"/hook/{name}", plain, PUSH)))
        mix.append(("unsigned", wire(f"/hook/{name}", plain, PUSH)))
        forged = signed(name, PUSH, secret="not-the-secret-" + name)
        mix.append(("forged", wire(f"/hook/{name}", forged, PUSH)))
    duplicate = signed("gh", PUSH, "push", **{"X-GitHub-Delivery": "the-same-delivery"})
    mix += [("duplicate", wire("/hook/gh", duplicate, PUSH))] * 8
    stale = {"X-Relay-Timestamp": "1", "X-Relay-Signature": "sha256=" + "0" * 64}
    mix += [("forged-deploy", wire("/deploy", plain | stale, b'{"app": "a"}'))] * 2
    mix.append(("unique", b""))
    return mix  # 30 + 8 + 2 + 1 = 41 requests: 1 in 41 is a new valid delivery


def unique_push() -> bytes:
    headers = signed("gh", PUSH, "push", **{"X-GitHub-Delivery": str(uuid.uuid4())})
    return wire("/hook/gh", headers, PUSH)


EXPECTED = {"unsigned": 401, "forged": 401, "forged-deploy": 401, "duplicate": 200, "unique": 202}


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    await reader.readexactly(length)
    return int(head.split(b" ", 2)[1])


async def client(port: int, jobs: list[tuple[str, bytes]], statuses: Counter[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for kind, data in jobs:
            status = await exchange(reader, writer, unique_push() if kind == "unique" else data)
            statuses[f"{kind} {status}"] += 1
    finally:
        writer.close()
        await writer.wait_closed()


async def run(
    port: int, count: int, statuses: Counter[str], mix: list[tuple[str, bytes]] | None = None
) -> None:
    mix = mix or requests_mix()
    jobs = [mix[i % len(mix)] for i in range(count)]
    shares = [jobs[i::CONNECTIONS] for i in range(CONNECTIONS)]
    await asyncio.gather(*(client(port, share, statuses) for share in shares))


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """Logging as the gateway command sets it up (info, JSON), written to /dev/null."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with open(os.devnull, "w") as sink:
        configure(level="info", fmt="json", stream=sink)
        yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.slow
async def test_rss_stays_flat_over_many_requests(tmp_path: Path, quiet_logs: None) -> None:
    settings = fuzz_settings(tmp_path, http={"dedupe_window": WINDOW})
    bus = CountingBus(settings.broker.retry, history=True, history_size=WINDOW)
    await bus.start()
    app = create_app(settings=settings, bus=bus)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    statuses: Counter[str] = Counter()
    try:
        warm, warming = 2 * WINDOW + REQUESTS // 20, Counter[str]()
        await run(port, 2 * WINDOW, warming, mix=[("unique", b"")])  # fill the bounded stores
        await run(port, REQUESTS // 20, warming)  # the resent delivery is published once here
        gc.collect()
        baseline, samples, published = rss_mib(), [], len(bus.published)
        started = time.perf_counter()
        for _ in range(10):
            await run(port, REQUESTS // 10, statuses)
            samples.append(round(rss_mib() - baseline, 1))
        elapsed = time.perf_counter() - started
        state = app[STATE]
        report = {
            "requests": REQUESTS, "warm_up": warm, "seconds": round(elapsed, 1),
            "per_second": round(REQUESTS / elapsed), "rss_baseline_mib": round(baseline, 1),
            "growth_mib_per_tenth": samples, "deliveries": len(state.deliveries),
            "history": len(bus._history or ()), "statuses": dict(sorted(statuses.items())),
            "warm_up_statuses": dict(sorted(warming.items())),
        }  # fmt: skip
        print("memory run:", report)
        record("memory", report)
        wrong = {k: n for k, n in statuses.items() if int(k.split()[1]) != EXPECTED[k.split()[0]]}
        assert wrong == {}, statuses
        assert len(bus.published) - published == statuses["unique 202"]  # nothing else published
        assert bus.invalid == []
        assert len(state.deliveries) <= WINDOW
        assert len(state.deploys) == 0 and len(state.signatures) == 0
        assert max(samples) < BUDGET_MIB, f"RSS grew by {max(samples)} MiB: {samples}"
        late = round(samples[-1] - samples[len(samples) // 2 - 1], 1)  # still climbing: a leak
        assert late < BUDGET_MIB / 4, f"RSS grew by {late} MiB in the second half: {samples}"
    finally:
        await runner.cleanup()
        await bus.close()
