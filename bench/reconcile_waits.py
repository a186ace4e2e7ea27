"""Memory of waiting deploys: the watch worker following WAITS rollouts that do not progress
(a real kube-apiserver, RabbitMQ in a private vhost), against bare tasks each awaiting an
``asyncio.Event``; and the watch streams all those waits cost.

Both measure Python heap (tracemalloc) and RSS grown once every wait is registered; the
informers are synced first, so their caches of the Deployments are not counted.

Run: ``python -m bench.reconcile_waits`` (prints the figures), or within ``make bench``
(``collect``); ``bench.reconcile_latency`` runs it too and records both in BENCHMARKS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tempfile
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.summary import Goal, Metric
from relay.bus import connect
from relay.events import new_event
from relay.events.data import ReconcileCompleted
from relay.kube.base import DEPLOYMENTS
from relay.kube.client import KubeCluster
from relay.logging import configure
from relay.settings import Settings
from tests.kube.objects import deployment
from tests.kube.realkube import AdminApi
from tests.support.kube_fixtures import ensure_kube_binaries
from tests.support.kubeapi import KubeAPIServer
from tests.support.rabbitmq import create_vhost, delete_vhost, url_for
from workers.runtime import WorkerHost
from workers.watch import WatchWorker

WAITS = 1000
COMMIT = "b" * 40


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


async def bare_waits(waits: int = WAITS) -> tuple[int, int]:
    """Heap and RSS grown by ``waits`` tasks each awaiting an Event: the floor of a wait."""
    gc.collect()
    heap0, rss0 = tracemalloc.get_traced_memory()[0], rss()
    events = [asyncio.Event() for _ in range(waits)]
    tasks = [asyncio.create_task(e.wait()) for e in events]
    await asyncio.sleep(0.1)
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - heap0, rss() - rss0
    for e in events:
        e.set()
    await asyncio.gather(*tasks)
    return grown


async def relay_waits(
    server: KubeAPIServer, settings: Settings, waits: int = WAITS
) -> tuple[int, int, int]:
    """Heap and RSS grown while the watch worker follows ``waits`` rollouts; watch streams open."""
    tag = uuid.uuid4().hex[:6]
    assert settings.kubernetes is not None
    async with AdminApi(server.url, server.admin_token, server.ca_file) as admin:
        gate = asyncio.Semaphore(16)

        async def make(i: int) -> None:
            body = deployment(f"w{i:04d}-{tag}", deployment_id=f"d{i}")
            body["metadata"]["labels"]["relay-bench"] = tag
            async with gate:
                await admin.create(DEPLOYMENTS, body)

        await asyncio.gather(*(make(i) for i in range(waits)))
        cluster = KubeCluster(settings.kubernetes)
        worker = WatchWorker(settings, cluster, settings.kubernetes)
        bus = connect(settings.broker)
        await bus.start()
        host = WorkerHost(bus, settings, [worker])
        await host.start()
        try:
            await _warm(worker)
            gc.collect()
            heap0, rss0 = tracemalloc.get_traced_memory()[0], rss()
            for i in range(waits):
                data = ReconcileCompleted(commit=COMMIT, image="127.0.0.1:5000/app:v1")
                app = f"w{i:04d}-{tag}"
                await bus.publish(new_event(data, source="/bench", app=app, deploymentid=f"d{i}"))
            async with asyncio.timeout(120):
                while sum(inf.waiting for inf in worker.informers.all()) < 2 * waits:
                    await asyncio.sleep(0.1)
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - heap0, rss() - rss0, cluster.open_watches
        finally:
            await host.stop(grace=0)
            await bus.close()
            path = f"{DEPLOYMENTS.path('dynamic-apps')}?labelSelector=relay-bench%3D{tag}"
            await admin.request("DELETE", path)
    return grown


async def _warm(worker: WatchWorker) -> None:
    """Start the informers (their caches of the waits Deployments are not counted as waits)."""
    worker.deployments()
    worker.pods()
    async with asyncio.timeout(60):
        while not all(inf.synced.is_set() for inf in worker.informers.all()):
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def kube_and_vhost() -> Iterator[tuple[KubeAPIServer, str, Path]]:
    """A started API server (built once, cached) and a private RabbitMQ vhost; both go after."""
    vhost = create_vhost("relay-bench")
    try:
        with tempfile.TemporaryDirectory(prefix="relay-bench-kube-") as raw:
            tmp = Path(raw)
            server = KubeAPIServer(cache_dir=ensure_kube_binaries(), work_dir=tmp / "kube")
            server.start()
            try:
                yield server, url_for(vhost), tmp
            finally:
                server.stop()
    finally:
        delete_vhost(vhost)


def waits_settings(server: KubeAPIServer, amqp: str) -> Settings:
    tag = uuid.uuid4().hex[:6]
    return Settings.model_validate(
        {
            "broker": {"url": amqp, "exchange": f"relay.events.{tag}", "queue_prefix": f"w.{tag}"},
            "deploy": {"namespace": "dynamic-apps"},
            "kubernetes": {"kubeconfig": str(server.relay_kubeconfig), "rollout_deadline": 600},
        }
    )


async def measure(server: KubeAPIServer, amqp: str, waits: int = WAITS) -> dict[str, Any]:
    tracemalloc.start()
    try:
        bare = await bare_waits(waits)
        relay = await relay_waits(server, waits_settings(server, amqp), waits)
    finally:
        tracemalloc.stop()
    return {"bare": bare, "relay": relay, "waits": waits}


def collect(quick: bool = True) -> list[Metric]:
    """For ``make bench``: heap per wait against a bare task's, and watch streams in all."""
    waits = 500 if quick else WAITS
    with kube_and_vhost() as (server, amqp, _):
        result = asyncio.run(measure(server, amqp, waits))
    (heap, _rss, streams), (bare_heap, _) = result["relay"], result["bare"]
    return [
        Metric(
            bench="reconcile",
            name=f"heap per concurrent rollout wait ({waits:,} waiting)",
            value=round(heap / waits / 1024, 1),
            unit="KiB",
            baseline=round(bare_heap / waits / 1024, 1),
            baseline_name="a bare task awaiting an Event",
        ),
        Metric(
            bench="reconcile",
            name=f"watch streams serving {waits:,} waits",
            value=streams,
            unit="",
            goal=Goal(on="value", op="<=", target=2),
            note="one per kind (Deployments, Pods) and namespace",
        ),
    ]


def main() -> None:
    configure(level="warning", stream=open(os.devnull, "w"))  # noqa: SIM115 - the process's sink
    with kube_and_vhost() as (server, amqp, _):
        result = asyncio.run(measure(server, amqp))
    (heap, rss, streams), (bare_heap, bare_rss) = result["relay"], result["bare"]
    print(
        f"{WAITS:,} waits: heap {heap / 2**20:.1f} MiB ({heap / WAITS / 1024:.1f} KiB each), "
        f"RSS {rss / 2**20:.1f} MiB, {streams} watch streams; bare tasks: heap "
        f"{bare_heap / 2**20:.1f} MiB, RSS {bare_rss / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    main()
