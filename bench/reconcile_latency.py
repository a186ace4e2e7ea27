"""Reconcile latency and the memory of waiting deploys, on a real kube-apiserver and RabbitMQ.

1. Push → patch. A hook-equivalent ``git.push`` event is published to RabbitMQ (a private
   vhost) as the gateway does; the reconcile worker, a separate ``relay worker reconcile``
   process with the relay's least-privilege kubeconfig, merge-patches
   ``reconcile.fluxcd.io/requestedAt``; the time is taken when the patched GitRepository arrives
   on a watch in this process, as Flux's source-controller would see it.
   Baseline in the same run: the same patch sent straight with kubernetes-asyncio, seen on the
   same watch (the API server + watch floor). 1,000 events each, paced at RATE/s over TARGETS
   GitRepositories (each target hears from a push every TARGETS/RATE s, longer than the
   coalescing window, so every push is patched at once), in alternating rounds, open loop (a
   send never waits for the one before it), each contender warmed up alike.
2. Memory per 1,000 concurrent waits. The watch worker follows 1,000 rollouts that do not
   progress; Python heap (tracemalloc) and RSS grown once all 1,000 are waiting. Baseline: 1,000
   bare tasks each awaiting an ``asyncio.Event``.

Run: ``python -m bench.reconcile_latency`` (builds/starts the API server as the tests do;
``RELAY_TEST_AMQP_URL`` as in the tests). Prints a table and appends it to BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.reconcile_waits import WAITS, kube_and_vhost, measure
from bench.summary import Goal, Metric
from relay.bus import Ack, Bus, Incoming, Outcome, QueueSpec, connect
from relay.events import new_event
from relay.events.data import GitOther, GitPush, Repository
from relay.gctune import tune_gc
from relay.kube.base import GITREPOSITORIES
from relay.kube.client import KubeCluster
from relay.logging import configure
from relay.settings import KubernetesSettings, Settings
from tests.kube.realkube import AdminApi
from tests.kube.standins import git_repository
from tests.support.kubeapi import KubeAPIServer
from workers.reconcile.flux import REQUESTED_AT, annotation_patch, requested_at_now

N = 1000
ROUNDS = 20  # short rounds: a burst of load on the shared machine hits every contender alike
SETTLE = 0.5  # seconds after a round for its last patches to arrive
TARGETS = 40
RATE = 50.0  # events per second
WARMUP = 2 * TARGETS
ROOT = Path(__file__).resolve().parents[1]
HEAD = "b" * 40


class Arrivals:
    """A watch on flux-system's GitRepositories: when each requestedAt value arrived."""

    def __init__(self, cluster: KubeCluster) -> None:
        self.cluster = cluster
        self.at: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        listed = await self.cluster.list(GITREPOSITORIES, "flux-system")
        self._task = asyncio.create_task(self._follow(listed.resource_version))

    async def _follow(self, version: str) -> None:
        while True:
            async for event in self.cluster.watch(
                GITREPOSITORIES, "flux-system", resource_version=version
            ):
                version = event.resource_version or version
                value = _value(event.object)
                if value and value not in self.at:
                    self.at[value] = time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _value(obj: dict[str, Any]) -> str | None:
    return (obj["metadata"].get("annotations") or {}).get(REQUESTED_AT)


def config_for(server: KubeAPIServer, amqp: str, tag: str, secret: Path | None) -> dict[str, Any]:
    receivers = [
        {
            "name": f"r{i}",
            "type": "github",
            "secret_file": str(secret),
            "reconcile": [{"kind": "GitRepository", "name": f"bench-{tag}-{i}"}],
        }
        for i in range(TARGETS)
        if secret is not None
    ]
    return {
        "broker": {"url": amqp, "exchange": f"relay.events.{tag}", "queue_prefix": f"b.{tag}"},
        "receivers": receivers,
        "deploy": {"namespace": "dynamic-apps"},
        "kubernetes": {"kubeconfig": str(server.relay_kubeconfig), "rollout_deadline": 600},
        "log": {"level": "info", "format": "json"},
    }


def push(i: int) -> GitPush:
    """Push ``i``: its own commit, so that the worker's reconcile.requested names it."""
    return GitPush(
        provider="github",
        receiver=f"r{i % TARGETS}",
        repository=Repository(full_name="homelab/gitops"),
        ref="refs/heads/main",
        branch="main",
        before="0" * 40,
        after=f"{i:040x}",
    )


async def paced(count: int, first: int, send: Any) -> dict[str, float]:
    """``send(i)`` for ``count`` events at RATE/s; when each started, by the key it returns.

    Open loop: each send starts on its schedule whether or not the ones before it have
    finished. (Awaiting each send first would space the bare patches out whenever the API
    server is slow, hiding the queueing the relay's overlapping patches meet.)"""
    started: dict[str, float] = {}

    async def one(i: int) -> None:
        at = time.monotonic()
        started[await send(i)] = at

    tasks = []
    begin = time.monotonic()
    for k in range(count):
        await asyncio.sleep(max(0.0, begin + k / RATE - time.monotonic()))
        tasks.append(asyncio.create_task(one(first + k)))
    await asyncio.gather(*tasks)
    return started


def latencies(sent: dict[str, float], arrived: dict[str, float]) -> list[float]:
    missing = [key for key in sent if key not in arrived]
    if missing:
        raise RuntimeError(f"{len(missing)} of {len(sent)} patches never arrived")
    return [arrived[key] - at for key, at in sent.items()]


async def push_to_patch(server: KubeAPIServer, amqp: str, tmp: Path) -> dict[str, list[float]]:
    tune_gc()  # this process times every arrival: no collection pauses in it, for either side
    tag = uuid.uuid4().hex[:6]
    secret = tmp / "secret"
    secret.write_text("bench-secret\n")
    config = config_for(server, amqp, tag, secret)
    settings = Settings.model_validate(config)
    watcher = KubeCluster(KubernetesSettings(kubeconfig=server.admin_kubeconfig))
    bare = KubeCluster(KubernetesSettings(kubeconfig=server.relay_kubeconfig))
    bus = connect(settings.broker)
    await bus.start()
    worker = await start_worker(config, tmp)
    try:
        async with AdminApi(server.url, server.admin_token, server.ca_file) as admin:
            for i in range(TARGETS):
                await admin.create(GITREPOSITORIES, git_repository(f"bench-{tag}-{i}"))
            return await _rounds(tag, bus, bare, Arrivals(watcher), admin)
    finally:
        worker.terminate()
        await worker.wait()
        await bus.close()
        await bare.close()
        await watcher.close()


async def server_side(admin: AdminApi) -> tuple[float, int]:
    """The API server's own time spent on GitRepository PATCHes so far: (seconds, count)."""
    text = str(await admin.request("GET", "/metrics"))
    found = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        if 'verb="PATCH"' in line and 'resource="gitrepositories"' in line:
            for part in found:
                if line.startswith(f"apiserver_request_duration_seconds_{part}{{"):
                    found[part] += float(line.rsplit(" ", 1)[1])
    return found["sum"], int(found["count"])


async def start_worker(config: dict[str, Any], tmp: Path) -> asyncio.subprocess.Process:
    """``relay worker reconcile`` in its own process, logging at info to /dev/null."""
    path = tmp / "relay.yaml"
    path.write_text(yaml.safe_dump(config))
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "relay"),
        "--config",
        str(path),
        "worker",
        "reconcile",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=(tmp / "worker.stderr").open("wb"),
    )


async def _rounds(
    tag: str, bus: Bus, bare: KubeCluster, arrivals: Arrivals, admin: AdminApi
) -> dict[str, list[float]]:
    """Relay and bare rounds in turn. A relay push is known by its commit; the worker's
    reconcile.requested (tapped) tells which requestedAt value covered it (coalesced pushes
    share one); a bare patch is known by its value."""
    covered: dict[str, str] = {}
    tap = asyncio.create_task(_tap(bus, covered))

    async def via_relay(i: int) -> str:
        await bus.publish(new_event(push(i), source="/bench/gateway", subject="refs/heads/main"))
        return push(i).after

    async def direct(i: int) -> str:
        value = requested_at_now()
        await bare.patch_merge(
            GITREPOSITORIES, "flux-system", f"bench-{tag}-{i % TARGETS}", annotation_patch(value)
        )
        return value

    noise = await bus.consume(
        QueueSpec(name=f"b.{tag}.noise", keys=(NOISE,), prefetch=100), _echo(bus)
    )
    pending: set[asyncio.Task[None]] = set()

    async def direct_beside_bus(i: int) -> str:
        """The bare patch while RabbitMQ carries what the relay's path puts on it."""
        task = asyncio.create_task(
            bus.publish(new_event(_noise(), source="/bench", routing_key=NOISE))
        )
        pending.add(task)
        task.add_done_callback(pending.discard)
        return await direct(i)

    await arrivals.start()
    try:
        await _until_worker_answers(covered, via_relay)
        # Not measured: informers, connections, queues; the bare client's connection too.
        for send in (via_relay, direct, direct_beside_bus):
            await paced(WARMUP, 0, send)
        await asyncio.sleep(1.0)
        load: dict[str, list[float]] = {"relay": [], "bare": [], "beside": []}
        relay_sent: dict[str, float] = {}
        bare_sent: dict[str, float] = {}
        beside_sent: dict[str, float] = {}
        server = {k: [0.0, 0.0] for k in ("relay", "bare", "beside")}  # server seconds, count
        per_round = N // ROUNDS
        contenders = (
            ("relay", via_relay, relay_sent),
            ("bare", direct, bare_sent),
            ("beside", direct_beside_bus, beside_sent),
        )
        for r in range(ROUNDS):
            turn = r % len(contenders)  # each contender goes first, second and last in turn
            for name, send, sent in contenders[turn:] + contenders[:turn]:
                load[name].append(os.getloadavg()[0])
                before = await server_side(admin)
                sent.update(await paced(per_round, WARMUP + r * per_round, send))
                await asyncio.sleep(SETTLE)
                after = await server_side(admin)
                server[name][0] += after[0] - before[0]
                server[name][1] += after[1] - before[1]
    finally:
        tap.cancel()
        await noise.stop()
        await arrivals.stop()
    patches = {covered[commit] for commit in relay_sent if commit in covered}
    relay = [
        arrivals.at[covered[c]] - at
        for c, at in relay_sent.items()
        if covered.get(c) in arrivals.at
    ]
    if len(relay) < len(relay_sent):
        raise RuntimeError(f"{len(relay_sent) - len(relay)} relay pushes never led to a patch")
    coalesced = float(len(relay_sent) - len(patches))
    return {
        "relay": relay,
        "bare": latencies(bare_sent, arrivals.at),
        "beside": latencies(beside_sent, arrivals.at),
        "coalesced": [coalesced],
        "server": [server[k][0] / max(1, server[k][1]) for k in ("relay", "bare", "beside")],
        "load": [statistics.mean(load[k]) for k in ("relay", "bare", "beside")],
    }


NOISE = "git.benchnoise"


def _noise() -> GitOther:
    return GitOther(provider="bench", receiver="bench", event="benchnoise")


def _echo(bus: Bus) -> Any:
    """A consumer doing the relay worker's RabbitMQ share: ack, and publish one event."""

    async def handle(message: Incoming) -> Outcome:
        echo = new_event(_noise(), source="/bench", routing_key="reconcile.benchnoise")
        await bus.publish(echo)
        return Ack()

    return handle


async def _tap(bus: Bus, covered: dict[str, str]) -> None:
    async for event in bus.tap(["reconcile.requested"]):
        value, commit = event.data.get("requested_at_value"), event.data.get("commit")
        if value and commit:
            covered[commit] = value


async def _until_worker_answers(covered: dict[str, str], send: Any) -> None:
    """Push until the worker answers: its queue exists and it reaches the API server."""
    async with asyncio.timeout(60):
        while not covered:
            with contextlib.suppress(Exception):  # unroutable until the worker declared its queue
                await send(0)
            await asyncio.sleep(0.5)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] * 1000


def machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = models[0] if models else platform.processor()
    rabbit = subprocess.run(
        ["rabbitmqctl", "-q", "version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    etcd = subprocess.run(["etcd", "--version"], capture_output=True, text=True, check=False)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} cores (shared with other jobs; load average {load} at the "
        f"start), Linux {platform.release()}, Python {platform.python_version()}, kube-apiserver "
        f"v1.20.2 (Debian source, --watch-cache=false), {etcd.stdout.splitlines()[0]}, RabbitMQ "
        f"{rabbit or '?'} (quorum queues, own vhost), kubernetes-asyncio, all on loopback"
    )


def table(lat: dict[str, list[float]], memory: dict[str, Any]) -> str:
    relay, bare = lat["relay"], lat["bare"]
    rows = [
        "| push → patch seen on a watch | n | p50 ms | p90 ms | p99 ms | max ms | API server's "
        "own mean PATCH ms | load (1 min) in its rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    named = (
        ("relay: git.push on RabbitMQ → `relay worker reconcile` → patch", "relay"),
        ("bare: the same patch with kubernetes-asyncio", "bare"),
        ("bare, beside the relay's RabbitMQ traffic (2 publishes + 1 delivery each)", "beside"),
    )
    for (title, key), inside, load in zip(named, lat["server"], lat["load"], strict=True):
        values = lat[key]
        rows.append(
            f"| {title} | {len(values)} | {pct(values, 0.5):.1f} | {pct(values, 0.9):.1f} "
            f"| {pct(values, 0.99):.1f} | {max(values) * 1000:.1f} | {inside * 1000:.1f} "
            f"| {load:.1f} |"
        )
    rows.append(
        f"| relay / bare ({lat['coalesced'][0]:.0f} pushes coalesced) | | "
        f"{pct(relay, 0.5) / pct(bare, 0.5):.1f}x | {pct(relay, 0.9) / pct(bare, 0.9):.1f}x "
        f"| {pct(relay, 0.99) / pct(bare, 0.99):.1f}x | | | |"
    )
    heap, size, streams = memory["relay"]
    bare_heap, bare_rss = memory["bare"]
    waits = memory["waits"]
    rows += [
        "",
        f"| {waits:,} concurrent waits | Python heap | RSS | per wait (heap) | watch streams |",
        "|---|---:|---:|---:|---:|",
        f"| watch worker (RabbitMQ prefetch {waits}) | {heap / 2**20:.1f} MiB "
        f"| {size / 2**20:.1f} MiB | {heap / waits / 1024:.1f} KiB | {streams} |",
        f"| bare tasks awaiting an Event | {bare_heap / 2**20:.1f} MiB "
        f"| {bare_rss / 2**20:.1f} MiB | {bare_heap / waits / 1024:.1f} KiB | 0 |",
    ]
    return "\n".join(rows)


async def run(server: KubeAPIServer, amqp: str, tmp: Path) -> str:
    lat = await push_to_patch(server, amqp, tmp)
    memory = await measure(server, amqp, WAITS)
    print(f"relay p50 {statistics.median(lat['relay']) * 1000:.1f} ms")
    return table(lat, memory)


def collect(quick: bool = True) -> list[Metric]:
    """For ``make bench``: push → patch p50 and p99 against the bare patch, with the goals of
    issue 7 (p50 <= 15 ms, p99 <= 60 ms). Quick: 200 events per contender, full: 1,000."""
    global N, ROUNDS
    N, ROUNDS = (200, 4) if quick else (1000, 20)
    with kube_and_vhost() as (server, amqp, tmp):
        lat = asyncio.run(push_to_patch(server, amqp, tmp))
    metrics = []
    for q, goal in ((0.5, 15.0), (0.99, 60.0)):
        metrics.append(
            Metric(
                bench="reconcile",
                name=f"git.push on RabbitMQ -> requestedAt patch seen, p{round(q * 100)}",
                value=round(pct(lat["relay"], q), 1),
                unit="ms",
                baseline=round(pct(lat["bare"], q), 1),
                baseline_name="bare kubernetes-asyncio patch",
                goal=Goal(on="value", op="<=", target=goal),
            )
        )
    return metrics


def main() -> None:
    configure(level="info", stream=open(os.devnull, "w"))  # noqa: SIM115 - the process's sink
    facts = machine()
    with kube_and_vhost() as (server, amqp, tmp):
        text = asyncio.run(run(server, amqp, tmp))
    print(text)
    _append(facts, text)


def _append(facts: str, text: str) -> None:
    day = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    note = (
        f"{N:,} git.push events per contender after {WARMUP} unmeasured each, paced open-loop "
        f"at {RATE:.0f}/s over {TARGETS} GitRepositories in {ROUNDS} rounds, the contenders "
        "in turn; the relay's least-privilege kubeconfig; the worker in its own process "
        "(`relay worker reconcile`, logs at info to /dev/null). Latency = publish (with "
        "confirm) → the patched object arriving on an admin watch. Memory: tracemalloc heap "
        "and RSS grown from the informers being synced (their caches of the Deployments are "
        "not counted) to every wait registered; it includes the unacked RabbitMQ deliveries."
    )
    with (ROOT / "BENCHMARKS.md").open("a") as out:
        out.write(f"\n## Reconcile latency ({day}, `python -m bench.reconcile_latency`)\n\n")
        out.write(f"{facts}.\n\n{text}\n\n{note}\n")


if __name__ == "__main__":
    main()
