"""Load benchmark of the gateway: signed 7 KB GitHub pushes with wrk at 32 connections.

In one run, on loopback, each for ``--seconds`` after a short warm-up:
- ``bare``: an aiohttp handler that reads the body and answers 202 (the ceiling);
- ``gateway``: the relay's gateway verifying, parsing, deduplicating and publishing each push to
  real RabbitMQ with publisher confirms (its own vhost), answering 202 only after the confirm;
- ``webhook``: adnanh/webhook with a payload-hmac-sha256 rule running ``/bin/true`` in the mode
  where it answers after the command ran (``include-command-output-in-response``).
Prints req/s, p50 and p99 per target, the ratios, and the gateway's peak RSS; appends a dated
section to BENCHMARKS.md. Run: ``python -m bench.gateway_load [--seconds 10]``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.summary import Goal, Metric, skipped

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-not-for-production"
CONNECTIONS = 32

LUA = r"""
local counter = 0
local tid = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function init(args)
  local f = assert(io.open(args[1], "rb")); body = f:read("*a"); f:close()
  sig = args[2]
end
function request()
  counter = counter + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["X-GitHub-Event"] = "push"
  headers["X-GitHub-Delivery"] = tid .. "-" .. counter
  headers["X-Hub-Signature-256"] = sig
  return wrk.format("POST", nil, headers, body)
end
"""


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    errors: str
    rss_mib: float | None = None
    cpu_ms: float | None = None
    broker_cpu_ms: float | None = None


def push_body(size: int = 7 * 1024) -> bytes:
    """A GitHub push body of about ``size`` bytes (one commit with a long message)."""
    sha = "199eddf46df50de8d02e99bf1c5fdb4101338224"
    payload = {
        "ref": "refs/heads/main",
        "before": "a10867b14bb761a232cd80139fbd4c0d33264240",
        "after": sha,
        "created": False,
        "deleted": False,
        "forced": False,
        "repository": {
            "full_name": "octo/homelab",
            "clone_url": "https://github.com/octo/homelab.git",
        },
        "pusher": {"name": "octo", "email": "octo@example.com"},
        "commits": [{"id": sha, "message": "", "author": {"name": "octo"}}],
    }
    base = len(json.dumps(payload, indent=2))
    payload["commits"][0]["message"] = "x" * max(0, size - base)  # type: ignore[index]
    return json.dumps(payload, indent=2).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), 1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def to_ms(text: str) -> float:
    found = re.match(r"([\d.]+)(us|ms|s|m)$", text)
    if found is None:
        raise RuntimeError(f"wrk printed a latency this bench cannot read: {text!r}")
    value, unit = found.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}[unit]


def run_wrk(
    name: str, url: str, script: Path, body: Path, sig: str, seconds: int, pid: int | None
) -> Result:
    args = [
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        url,
        "--",
        str(body),
        sig,
    ]
    warm = [*args[:3], "-d2s", *args[4:]]
    subprocess.run(warm, check=True, capture_output=True)
    peak = rss_mib(pid) if pid else None
    cpu0, broker0 = cpu_seconds(pid), cpu_seconds(broker_pid())
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        while proc.poll() is None:
            if pid:
                peak = max(peak or 0.0, rss_mib(pid))
            time.sleep(0.2)
    finally:
        if proc.poll() is None:  # interrupted: leave no load generator behind
            proc.kill()
            proc.wait()
    cpu, broker = cpu_seconds(pid) - cpu0, cpu_seconds(broker_pid()) - broker0
    out = proc.stdout.read() if proc.stdout else ""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = to_ms(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = to_ms(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return Result(
        name,
        rps,
        p50,
        p99,
        total,
        int(non2xx.group(1)) if non2xx else 0,
        errors.group(1) if errors else "",
        peak,
        1000 * cpu / total if total else None,
        1000 * broker / total if total else None,
    )


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU of a process and its reaped children (webhook's /bin/true runs)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def broker_pid() -> int | None:
    """The RabbitMQ node's Erlang VM, to count the broker's CPU per request."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"rabbit" in (entry / "cmdline").read_bytes() and (
                    (entry / "comm").read_text().strip() == "beam.smp"
                ):
                    return int(entry.name)
            except OSError:
                continue
    return None


BARE = """
from aiohttp import web
async def hook(request):
    await request.read()
    return web.Response(status=202)
app = web.Application()
app.router.add_post("/hook/gh", hook)
web.run_app(app, host="127.0.0.1", port={port}, access_log=None, print=None)
"""


async def serve_gateway(url: str, port: int, secret_file: str) -> None:
    """The child process: the gateway over RabbitMQ, a bounded queue bound to git.#."""
    from relay.gateway.app import serve
    from relay.gctune import tune_gc
    from relay.logging import configure
    from relay.settings import Settings
    from tests.support.gateway_amqp import rabbit_bus

    configure(level="info", fmt="json")
    settings = Settings(
        broker={"url": url},
        http={
            "host": "127.0.0.1",
            "port": port,
            "rate_limit": {"requests": 10**9, "per_seconds": 1},
        },
        receivers=[{"name": "gh", "type": "github", "secret_file": secret_file}],
    )
    bus = rabbit_bus(url)  # the bench-sink queue (bound_queue) makes git.push routable
    await bus.start()
    asyncio.get_running_loop().call_later(0.5, tune_gc)  # as `relay gateway` does once started
    await serve(settings, bus)


async def publish_only(url: str, seconds: float) -> None:
    """The child process: the bus alone, 32 publishes in flight, prints confirmed/s."""
    from relay.events import new_event
    from relay.events.data import GitPush, Repository
    from tests.support.gateway_amqp import rabbit_bus

    bus = rabbit_bus(url)
    await bus.start()
    data = json.loads(push_body())
    event = new_event(
        GitPush(
            provider="github",
            receiver="gh",
            repository=Repository(full_name="o/r"),
            ref=data["ref"],
            branch="main",
            before=data["before"],
            after=data["after"],
        ),
        source="/bench",
    )
    padded = event.model_copy(update={"data": {**event.data, "pad": "x" * 6500}})
    done = 0
    deadline = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await bus.publish(padded)
            done += 1

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    await bus.close()
    print(done / seconds)


def bound_queue(url: str) -> None:
    """A durable queue bound to git.# that keeps the newest 10,000 (confirms stay real)."""
    import aio_pika

    async def declare() -> None:
        connection = await aio_pika.connect(url)
        channel = await connection.channel()
        exchange = await channel.declare_exchange("relay.events", "topic", durable=True)
        queue = await channel.declare_queue(
            "bench-sink", durable=True, arguments={"x-max-length": 10_000}
        )
        await queue.bind(exchange, "git.#")
        await connection.close()

    asyncio.run(declare())


def machine() -> dict[str, str]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    import aiohttp

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=30)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    return {
        "cpu": f"{cpu}, {os.cpu_count()} cores (shared with other jobs)",
        "memory": f"{int(mem) // 1024} MiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "rabbitmq": version(["rabbitmqctl", "version"]),
        "wrk": version(["wrk", "--version"]),
        "webhook": version(["webhook", "-version"]),
        "load average at the end (1/5/15 min)": " ".join(
            Path("/proc/loadavg").read_text().split()[:3]
        ),
        "CPU pressure (PSI some avg10/avg60)": psi("cpu"),
        "IO pressure (PSI some avg10/avg60)": psi("io"),
        "RabbitMQ bus": bus_kind(),
    }


def psi(kind: str) -> str:
    try:
        first = Path(f"/proc/pressure/{kind}").read_text().splitlines()[0].split()
    except OSError:
        return "?"
    return " / ".join(f.split("=")[1] + "%" for f in first[1:3])


def bus_kind() -> str:
    try:
        import relay.bus.rabbitmq  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "tests/support stand-in (aio-pika, confirms, mandatory, persistent)"
    return "relay.bus.rabbitmq.RabbitBus"


def webhook_hooks(path: Path) -> None:
    path.write_text(
        json.dumps(
            [
                {
                    "id": "gh",
                    "execute-command": "/bin/true",
                    "include-command-output-in-response": True,
                    "trigger-rule": {
                        "match": {
                            "type": "payload-hmac-sha256",
                            "secret": SECRET,
                            "parameter": {"source": "header", "name": "X-Hub-Signature-256"},
                        }
                    },
                }
            ]
        )
    )


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def scrape_202(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    found = re.search(
        r'relay_gateway_requests_total\{receiver="gh",status="202"\} ([\d.e+]+)', text
    )
    return int(float(found.group(1))) if found else 0


def measure(seconds: int) -> tuple[list[Result], int, int]:
    from tests.support.gateway_amqp import Vhost

    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    body = work / "push.json"
    body.write_bytes(push_body())
    sig = "sha256=" + hmac.new(SECRET.encode(), body.read_bytes(), hashlib.sha256).hexdigest()
    script = work / "post.lua"
    script.write_text(LUA)
    (work / "secret").write_text(SECRET)
    vhost = Vhost("relay-bench").create()
    results: list[Result] = []
    try:
        bound_queue(vhost.url)
        port = free_port()
        bare = start([sys.executable, "-c", BARE.format(port=port)])
        try:
            wait_port(port)
            results.append(
                run_wrk(
                    "bare aiohttp 202",
                    f"http://127.0.0.1:{port}/hook/gh",
                    script,
                    body,
                    sig,
                    seconds,
                    bare.pid,
                )
            )
        finally:
            stop(bare)
        port = free_port()
        code = (
            f"import asyncio, bench.gateway_load as b; asyncio.run(b.serve_gateway("
            f"{vhost.url!r}, {port}, {str(work / 'secret')!r}))"
        )
        gateway = start([sys.executable, "-c", code])
        try:
            wait_port(port)
            time.sleep(1.0)
            results.append(
                run_wrk(
                    "relay gateway (RabbitMQ confirms)",
                    f"http://127.0.0.1:{port}/hook/gh",
                    script,
                    body,
                    sig,
                    seconds,
                    gateway.pid,
                )
            )
            accepted = scrape_202(port)
        finally:
            stop(gateway)
        code = (
            "import asyncio, bench.gateway_load as b; "
            f"asyncio.run(b.publish_only({vhost.url!r}, {seconds}))"
        )
        floor = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True
        )
        results.append(
            Result(
                "bus alone: 32 publishes in flight, confirmed (no HTTP)",
                float(floor.stdout.strip().splitlines()[-1]),
                0,
                0,
                0,
                0,
                "",
            )
        )
        port = free_port()
        webhook_hooks(work / "hooks.json")
        hook = start(
            ["webhook", "-hooks", str(work / "hooks.json"), "-ip", "127.0.0.1", "-port", str(port)]
        )
        try:
            wait_port(port)
            results.append(
                run_wrk(
                    "adnanh/webhook (answers after command)",
                    f"http://127.0.0.1:{port}/hooks/gh",
                    script,
                    body,
                    sig,
                    seconds,
                    hook.pid,
                )
            )
        finally:
            stop(hook)
    finally:
        vhost.delete()
        shutil.rmtree(work, ignore_errors=True)
    return results, accepted, len(body.read_bytes()) if body.exists() else 7 * 1024


def report(results: list[Result], accepted: int, seconds: int) -> str:
    bare, gateway, floor, hook = results
    lines = [
        f"## Gateway load ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"`python -m bench.gateway_load --seconds {seconds}`: wrk -t1 -c{CONNECTIONS}, a signed "
        "7 KB GitHub push per request (unique X-GitHub-Delivery), loopback, 2 s warm-up each.",
        "",
        *[f"- {k}: {v}" for k, v in machine().items()],
        "",
        "| target | req/s | p50 ms | p99 ms | requests | non-2xx | socket errors | peak RSS MiB "
        "| CPU ms/req | broker CPU ms/req |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if not r.requests:  # the bus-alone row: a rate only
            lines.append(f"| {r.name} | {r.rps:.0f} | - | - | - | - | - | - | - | - |")
            continue
        rss = f"{r.rss_mib:.1f}" if r.rss_mib is not None else "-"
        lines.append(
            f"| {r.name} | {r.rps:.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.requests} "
            f"| {r.non_2xx} | {r.errors or '-'} | {rss} | {r.cpu_ms or 0:.3f} "
            f"| {r.broker_cpu_ms or 0:.3f} |"
        )
    lines += [
        "",
        f"- gateway / bare aiohttp: **{gateway.rps / bare.rps:.2f}x** (goal >= 0.3x)",
        f"- gateway / webhook: **{gateway.rps / hook.rps:.2f}x** (goal >= 3x)",
        f"- gateway / the bus alone (publish + confirm, same broker, no HTTP): "
        f"**{gateway.rps / floor.rps:.2f}x**",
        f"- ceiling: the bus alone, with no HTTP at all, reaches "
        f"**{floor.rps / bare.rps:.2f}x** bare aiohttp and **{floor.rps / hook.rps:.2f}x** "
        "webhook: "
        "a gateway answering each request only after its own confirm cannot pass these at "
        f"{CONNECTIONS} connections",
        f"- gateway p99 **{gateway.p99_ms:.1f} ms** (goal <= 25 ms); peak RSS "
        f"**{gateway.rss_mib or 0:.1f} MiB** (goal <= 70 MiB)",
        f"- gateway 202s counted by its /metrics (warm-up included): {accepted}; each one "
        "confirmed by RabbitMQ before the answer.",
        "",
    ]
    return "\n".join(lines)


TOOLS = ("wrk", "webhook", "rabbitmqctl")


def collect(quick: bool = True) -> list[Metric]:
    """For ``make bench``: the gateway against bare aiohttp and webhook, its p99, the bus alone."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return [skipped("gateway", f"{', '.join(missing)} not installed")]
    results, _, _ = measure(6 if quick else 10)
    bare, gateway, floor, hook = results
    rate = f"hook req/s, wrk -c{CONNECTIONS}, 7 KB signed push, RabbitMQ confirms"
    ceiling = f"ceiling: the bus alone, {CONNECTIONS} confirmed publishes in flight, no HTTP"
    rows: list[tuple[str, float, str, float | None, str, Goal | None]] = [
        (
            rate,
            gateway.rps,
            "req/s",
            bare.rps,
            "bare aiohttp",
            Goal(on="ratio", op=">=", target=0.3),
        ),
        (
            rate,
            gateway.rps,
            "req/s",
            hook.rps,
            "adnanh/webhook",
            Goal(on="ratio", op=">=", target=3),
        ),
        (
            f"p99 latency at {CONNECTIONS} connections",
            gateway.p99_ms,
            "ms",
            bare.p99_ms,
            "bare aiohttp",
            Goal(on="value", op="<=", target=25),
        ),
        (rate, gateway.rps, "req/s", floor.rps, f"the bus alone, {CONNECTIONS} in flight", None),
        (ceiling, floor.rps, "msg/s", bare.rps, "bare aiohttp", None),
        (ceiling, floor.rps, "msg/s", hook.rps, "adnanh/webhook", None),
        ("CPU per request", gateway.cpu_ms or 0.0, "ms", bare.cpu_ms, "bare aiohttp", None),
        ("peak RSS under load", gateway.rss_mib or 0.0, "MiB", bare.rss_mib, "bare aiohttp", None),
    ]
    return [
        Metric(
            bench="gateway",
            name=name,
            value=value,
            unit=unit,
            baseline=baseline,
            baseline_name=baseline_name,
            goal=goal,
        )
        for name, value, unit, baseline, baseline_name, goal in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--no-record", action="store_true", help="do not append BENCHMARKS.md")
    args = parser.parse_args()
    for tool in TOOLS:
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (Debian packages wrk, webhook, rabbitmq-server)")
    results, accepted, _ = measure(args.seconds)
    text = report(results, accepted, args.seconds)
    print(text)
    if not args.no_record:
        path = ROOT / "BENCHMARKS.md"
        head = "" if path.exists() else "# Benchmarks\n\n"
        with path.open("a", encoding="utf-8") as out:
            out.write(head + text + "\n")


if __name__ == "__main__":
    main()
