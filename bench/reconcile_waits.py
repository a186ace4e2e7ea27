"""Memory of waiting deploys for ``bench.reconcile_latency``: the watch worker following WAITS
rollouts that do not progress, against bare tasks each awaiting an ``asyncio.Event``.

Both measure Python heap (tracemalloc, started by the caller) and RSS grown once every wait is
registered; the informers are synced first, so their caches of the Deployments are not counted.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
import uuid
from pathlib import Path

from relay.bus import connect
from relay.events import new_event
from relay.events.data import ReconcileCompleted
from relay.kube.base import DEPLOYMENTS
from relay.kube.client import KubeCluster
from relay.settings import Settings
from tests.kube.objects import deployment
from tests.kube.realkube import AdminApi
from tests.support.kubeapi import KubeAPIServer
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
