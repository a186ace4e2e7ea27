"""Idle memory of the real processes: ``relay up`` and ``relay gateway``, on memory:// and RabbitMQ.

Each runs as the user runs it (``relay --config FILE up|gateway``, a subprocess), is warmed up
(300 signed GitHub pushes, 8 at a time, then the status API, /metrics and /healthz), left idle
for a few seconds, and its resident set size (VmRSS) read. RabbitMQ runs get a private vhost.
Baseline: a bare aiohttp server (one route answering 202) warmed up the same way, so the table
shows what the relay adds to Python + aiohttp. Goals (issue 9): ``relay up`` <= 120 MiB, the
gateway <= 70 MiB.

Run: ``python -m bench.idle_rss`` (prints its metrics; ``make bench`` records them).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp

from bench.bus_throughput import private_vhost
from bench.gateway_load import BARE, push_body, rss_mib, wait_port
from bench.summary import Goal, Metric, skipped, table

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-idle-secret-not-for-production"
WARM_REQUESTS = 300
SETTLE_SECONDS = 3.0
GOALS = {"up": 120.0, "gateway": 70.0}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(work: Path, url: str, port: int) -> Path:
    (work / "hook-secret").write_text(SECRET)
    (work / "deploy-secret").write_text(SECRET + "-deploy")
    settings = {
        "broker": {"url": url},
        "http": {
            "host": "127.0.0.1",
            "port": port,
            "rate_limit": {"requests": 100_000, "per_seconds": 1},
        },
        "receivers": [{"name": "gh", "type": "github", "secret_file": str(work / "hook-secret")}],
        "deploy": {"secret_file": str(work / "deploy-secret"), "builder": {"backend": "none"}},
        "log": {"level": "warning"},
    }
    path = work / f"relay-{port}.yaml"
    path.write_text(json.dumps(settings))  # JSON is YAML
    return path


async def warm_up(port: int, *, status: bool) -> None:
    body = push_body()
    sig = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    queue = iter(range(WARM_REQUESTS))
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:

        async def client() -> None:
            for _ in queue:
                headers = {
                    "Content-Type": "application/json",
                    "X-GitHub-Event": "push",
                    "X-GitHub-Delivery": uuid.uuid4().hex,
                    "X-Hub-Signature-256": sig,
                }
                async with http.post("/hook/gh", data=body, headers=headers) as response:
                    if response.status not in (200, 202):
                        raise RuntimeError(f"warm-up hook answered {response.status}")

        await asyncio.gather(*(client() for _ in range(8)))
        paths = ["/healthz", "/metrics"] + (["/deployments"] if status else [])
        for path in paths:
            async with http.get(path) as response:
                await response.read()


def measure_process(argv: list[str], port: int, *, status: bool) -> float:
    """Start, warm up, settle, read VmRSS (MiB), stop."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_port(port, timeout=30)
        asyncio.run(warm_up(port, status=status))
        time.sleep(SETTLE_SECONDS)
        if proc.poll() is not None:
            raise RuntimeError(f"{argv[-1]} exited early")
        return rss_mib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def relay(work: Path, url: str, command: str) -> float:
    port = free_port()
    path = config(work, url, port)
    argv = [sys.executable, "-m", "relay.cli.main", "--config", str(path), command]
    return measure_process(argv, port, status=True)


def bare() -> float:
    port = free_port()
    argv = [sys.executable, "-c", BARE.format(port=port)]
    return measure_process(argv, port, status=False)


async def rabbit_runs(work: Path) -> dict[str, float]:
    async with private_vhost() as url:
        return {
            "up": await asyncio.to_thread(relay, work, url, "up"),
            "gateway": await asyncio.to_thread(relay, work, url, "gateway"),
        }


def collect(quick: bool = True) -> list[Metric]:
    if shutil.which("rabbitmqctl") is None:
        return [skipped("idle RSS", "rabbitmqctl not installed")]
    with tempfile.TemporaryDirectory(prefix="relay-bench-rss-") as raw:
        work = Path(raw)
        floor = bare()
        found = {("memory://", c): relay(work, "memory://", c) for c in ("up", "gateway")}
        found |= {("RabbitMQ", c): v for c, v in asyncio.run(rabbit_runs(work)).items()}
    return [
        Metric(
            bench="idle RSS",
            name=f"`relay {command}` on {broker}, after {WARM_REQUESTS} hooks",
            value=value,
            unit="MiB",
            baseline=floor,
            baseline_name="bare aiohttp",
            goal=Goal(on="value", op="<=", target=GOALS[command]),
        )
        for (broker, command), value in found.items()
    ]


def main() -> None:
    print(table(collect()))


if __name__ == "__main__":
    main()
