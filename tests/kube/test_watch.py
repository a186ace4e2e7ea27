"""The watch worker's shared watches against the real API server: one stream per kind and
namespace for a thousand waits, resumed after a dropped connection, re-listed after 410 Gone.
The test writes Deployment status itself, as the deployment controller would (no
kube-controller-manager runs in this module)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from relay.events.data import ReconcileCompleted
from relay.kube.base import DEPLOYMENTS
from relay.kube.client import KubeCluster
from tests.kube.config import make_settings
from tests.kube.objects import NAMESPACE, deployment, rolling
from tests.kube.pipeline import Pipeline
from tests.kube.realfixtures import in_thread
from tests.kube.realkube import AdminApi, Proxy
from tests.support.kube_status import rolled_out
from tests.support.kubeapi import KubeAPIServer
from workers.watch import WatchWorker, create

pytestmark = pytest.mark.kube
IMAGE = "127.0.0.1:5000/app:v1@sha256:" + "f" * 64


def completed() -> ReconcileCompleted:
    return ReconcileCompleted(commit="f" * 40, image=IMAGE, stages={"reconcile": 1.0})


@contextlib.asynccontextmanager
async def watching(kubeconfig: Path, **kube: Any) -> AsyncIterator[tuple[Pipeline, WatchWorker]]:
    settings = make_settings(
        Path("/dev/null"), receivers=[], kubernetes={"kubeconfig": str(kubeconfig), **kube}
    )
    worker = create(settings)
    assert isinstance(worker, WatchWorker)
    async with Pipeline(settings, [worker]) as pipeline:
        yield pipeline, worker


async def rolling_deployment(admin: AdminApi, app: str, tag: str) -> dict[str, Any]:
    body = deployment(app, image=IMAGE, deployment_id=f"d-{app}")
    body["metadata"]["labels"]["relay-test"] = tag
    created = await admin.create(DEPLOYMENTS, body)
    await admin.write_status(DEPLOYMENTS, NAMESPACE, app, rolling(created))
    return created


async def until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


async def test_a_watch_dropped_mid_rollout_resumes_without_missing_ready(
    admin: AdminApi, proxy: Proxy, relay_kubeconfig: Path, tag: str
) -> None:
    app = f"drop-{tag}"
    created = await rolling_deployment(admin, app, tag)
    async with watching(relay_kubeconfig) as (pipeline, worker):
        await pipeline.publish(completed(), app=app, deploymentid=f"d-{app}")
        await until(lambda: worker.deployments().waiting == 1)
        proxy.down = True
        proxy.cut()  # the stream breaks; the ready transition happens while nobody watches
        await until(lambda: worker.deployments().error is not None)
        await admin.write_status(DEPLOYMENTS, NAMESPACE, app, rolled_out(created))
        await asyncio.sleep(0.5)
        assert pipeline.of("deploy.ready") == []
        proxy.down = False
        ready = await pipeline.next("deploy.ready", app=app, timeout=15)
        informer = worker.deployments()
        assert informer.lists == 1 and informer.watches >= 2  # resumed from its resourceVersion
    assert ready.deploymentid == f"d-{app}"


async def test_a_quiet_watch_resumed_after_an_outage_no_longer_blames_the_api_server(
    admin: AdminApi, proxy: Proxy, relay_kubeconfig: Path, tag: str
) -> None:
    """No event comes on a quiet collection (no pods, a Deployment that does not change): the
    watch being accepted again must end the outage, or a later timeout blames the API server."""
    app = f"quiet-{tag}"
    await rolling_deployment(admin, app, tag)  # never rolls out
    async with watching(relay_kubeconfig, rollout_deadline=10) as (pipeline, worker):
        await pipeline.publish(completed(), app=app, deploymentid=f"d-{app}")
        informers = (worker.deployments(), worker.pods())
        await until(lambda: all(i.waiting == 1 for i in informers))
        proxy.down = True
        proxy.cut()
        await until(lambda: all(i.error is not None for i in informers))
        proxy.down = False
        await until(lambda: all(i.error is None for i in informers))
        assert all(i.describe_outage() is None for i in informers)
        assert all(i.lists == 1 for i in informers)  # resumed, not listed again
        failed = await pipeline.next("deploy.failed", app=app, timeout=20)
    assert failed.data["reason"] == "timeout"
    assert "not answering" not in failed.data["detail"], failed.data["detail"]


async def test_the_shared_watches_log_an_outage_as_their_own_not_a_deploys(
    admin: AdminApi, proxy: Proxy, relay_kubeconfig: Path, tag: str
) -> None:
    """The informers are started by the first deploy that needs them, inside its handler: their
    lines must not carry that deploy's ids (every outage would be blamed on one deploy)."""
    app = f"ctx-{tag}"
    created = await rolling_deployment(admin, app, tag)
    merge = [structlog.contextvars.merge_contextvars]
    with structlog.testing.capture_logs(processors=merge) as logs:
        async with watching(relay_kubeconfig) as (pipeline, worker):
            await pipeline.publish(completed(), app=app, deploymentid=f"d-{app}")
            await until(lambda: worker.deployments().waiting == 1)
            proxy.down = True
            proxy.cut()
            await until(lambda: worker.deployments().error is not None)
            proxy.down = False
            await admin.write_status(DEPLOYMENTS, NAMESPACE, app, rolled_out(created))
            await pipeline.next("deploy.ready", app=app, timeout=15)
    said = [e for e in logs if str(e["event"]).startswith("kubernetes watch")]
    assert {e["event"] for e in said} == {
        "kubernetes watch interrupted",
        "kubernetes watch resumed",
    }
    assert [e for e in said if "deployment_id" in e or "app" in e or "event_id" in e] == []


async def test_410_gone_after_etcd_compaction_is_followed_by_a_new_list(
    kube_api: KubeAPIServer, admin: AdminApi, proxy: Proxy, relay_kubeconfig: Path, tag: str
) -> None:
    app = f"gone-{tag}"
    created = await rolling_deployment(admin, app, tag)
    async with watching(relay_kubeconfig) as (pipeline, worker):
        await pipeline.publish(completed(), app=app, deploymentid=f"d-{app}")
        await until(lambda: worker.deployments().waiting == 1)
        proxy.down = True
        proxy.cut()
        await admin.write_status(DEPLOYMENTS, NAMESPACE, app, rolled_out(created))
        await admin.patch(DEPLOYMENTS, NAMESPACE, app, {"metadata": {"labels": {"seen": "later"}}})
        # Compacted past our resourceVersion + 1: the watch from it answers 410 Gone.
        await in_thread(kube_api.compact_etcd)
        proxy.down = False
        await pipeline.next("deploy.ready", app=app, timeout=20)
        assert worker.deployments().gone == 1 and worker.deployments().lists == 2


async def test_a_thousand_waits_are_served_by_one_watch_per_kind(
    admin: AdminApi, kube_api: KubeAPIServer, tag: str
) -> None:
    apps = [f"k{i:04d}-{tag}" for i in range(1000)]
    gate = asyncio.Semaphore(16)

    async def make(app: str) -> dict[str, Any]:
        async with gate:
            return await rolling_deployment(admin, app, tag)

    created = dict(zip(apps, await asyncio.gather(*(make(a) for a in apps)), strict=True))
    before = {r: await admin.watch_connections(r) for r in ("deployments", "pods")}
    try:
        async with watching(kube_api.relay_kubeconfig, rollout_deadline=300) as (pipeline, worker):
            for app in apps:
                await pipeline.publish(completed(), app=app, deploymentid=f"d-{app}")
            await until(
                lambda: worker.deployments().waiting == 1000 and worker.pods().waiting == 1000, 60
            )
            cluster = worker.cluster
            assert isinstance(cluster, KubeCluster)
            await until(lambda: cluster.open_watches == 2)  # both streams answered
            during = {r: await admin.watch_connections(r) for r in ("deployments", "pods")}
            assert during == {r: before[r] + 1 for r in before}

            async def finish(app: str) -> None:
                async with gate:
                    await admin.write_status(DEPLOYMENTS, NAMESPACE, app, rolled_out(created[app]))

            await asyncio.gather(*(finish(a) for a in apps))
            ready = await pipeline.count("deploy.ready", 1000, timeout=120)
            assert {e.app for e in ready} == set(apps)
            assert worker.deployments().watches == 1 and worker.deployments().lists == 1
    finally:
        await admin.request(
            "DELETE", f"{DEPLOYMENTS.path(NAMESPACE)}?labelSelector=relay-test%3D{tag}"
        )


async def test_a_namespace_the_relay_may_not_watch_fails_clearly(
    kube_api: KubeAPIServer, tag: str
) -> None:
    settings = make_settings(
        Path("/dev/null"),
        receivers=[],
        kubernetes={"kubeconfig": str(kube_api.relay_kubeconfig), "rollout_deadline": 60},
        deploy={"namespace": "default"},  # the relay's Role is in dynamic-apps only
    )
    worker = create(settings)
    async with Pipeline(settings, [worker]) as pipeline:
        await pipeline.publish(completed(), app=f"nope-{tag}", deploymentid=f"d-{tag}")
        failed = await pipeline.next("deploy.failed", timeout=30)
    assert failed.data["reason"] == "forbidden"
    assert 'cannot list resource "deployments"' in failed.data["detail"]
