"""The reconcile worker against the real API server, as the relay user, with a stand-in Flux
writing status through the API the way source-controller and kustomize-controller do."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.errors import StageError
from relay.events.data import GitPush, ManifestsCommitted, Repository
from relay.kube.base import GITREPOSITORIES, KUSTOMIZATIONS
from relay.kube.client import KubeCluster
from relay.settings import Settings
from tests.kube.pipeline import Pipeline
from tests.kube.realfixtures import in_thread, real_settings
from tests.kube.realkube import AdminApi, Proxy
from tests.kube.standins import StandInFlux, kustomization
from tests.support.kubeapi import KubeAPIServer
from workers.reconcile import ReconcileWorker, create
from workers.reconcile.flux import REQUESTED_AT
from workers.reconcile.patcher import Target

pytestmark = pytest.mark.kube
HEAD = "d" * 40


def push(tag: str) -> GitPush:
    return GitPush(
        provider="github",
        receiver="gh",
        repository=Repository(full_name="o/homelab"),
        ref="refs/heads/main",
        branch="main",
        before="0" * 40,
        after=HEAD,
    )


def committed(**kw: Any) -> ManifestsCommitted:
    return ManifestsCommitted(
        commit=HEAD,
        paths=["apps/x"],
        image="r/x:v1@sha256:" + "e" * 64,
        stages={"build": 1.0},
        **kw,
    )


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Pipeline]:
    worker = create(settings)
    assert isinstance(worker, ReconcileWorker)
    async with Pipeline(settings, [worker]) as pipeline:
        yield pipeline


async def annotation_values(admin_cluster: KubeCluster, name: str, seen: list[str]) -> None:
    """Record every distinct requestedAt the API server stores on the GitRepository."""
    listed = await admin_cluster.list(GITREPOSITORIES, "flux-system")
    async for event in admin_cluster.watch(
        GITREPOSITORIES, "flux-system", resource_version=listed.resource_version
    ):
        if event.name == name:
            value = (event.object["metadata"].get("annotations") or {}).get(REQUESTED_AT)
            if value and value not in seen:
                seen.append(value)


async def test_a_deploy_is_reconciled_to_completion(
    secret_file: Path,
    relay_kubeconfig: Path,
    tag: str,
    admin: AdminApi,
    flux_objects: dict[str, str],
    standin_flux: StandInFlux,
) -> None:
    app = f"app-{tag}"
    await admin.create(
        KUSTOMIZATIONS,
        kustomization(app, source=flux_objects["source"], labels={"relay-test": tag}),
    )
    async with running(
        real_settings(secret_file, relay_kubeconfig, tag, reconcile_timeout=20)
    ) as pipeline:
        await pipeline.publish(committed(), app=app, deploymentid=f"d-{tag}")
        done = await pipeline.next("reconcile.completed", app=app, timeout=20)
    assert done.data["revision"] == f"main@sha1:{HEAD}" and "reconcile" in done.data["stages"]
    stored = await admin.get(KUSTOMIZATIONS, "flux-system", app)
    assert (
        stored["status"]["lastHandledReconcileAt"]
        == stored["metadata"]["annotations"][REQUESTED_AT]
    )


async def test_a_new_apps_kustomization_is_awaited_after_the_parent_applies(
    secret_file: Path,
    relay_kubeconfig: Path,
    tag: str,
    admin: AdminApi,
    flux_objects: dict[str, str],
    standin_flux: StandInFlux,
) -> None:
    app = f"new-{tag}"

    async def apply_parent() -> None:
        await admin.create(
            KUSTOMIZATIONS,
            kustomization(app, source=flux_objects["source"], labels={"relay-test": tag}),
        )

    standin_flux.on_parent = apply_parent
    async with running(
        real_settings(secret_file, relay_kubeconfig, tag, reconcile_timeout=20)
    ) as pipeline:
        await pipeline.publish(committed(), app=app, deploymentid=f"d-{tag}")
        done = await pipeline.next("reconcile.completed", app=app, timeout=20)
    assert done.data["commit"] == HEAD


async def test_pushes_in_a_burst_are_coalesced(
    secret_file: Path,
    relay_kubeconfig: Path,
    tag: str,
    admin_cluster: KubeCluster,
    flux_objects: dict[str, str],
) -> None:
    seen: list[str] = []
    recorder = asyncio.create_task(annotation_values(admin_cluster, flux_objects["source"], seen))
    await asyncio.sleep(0.3)
    async with running(
        real_settings(secret_file, relay_kubeconfig, tag, coalesce_ms=1000)
    ) as pipeline:
        for _ in range(20):
            await pipeline.publish(push(tag))
        requested = await pipeline.count("reconcile.requested", 20, timeout=15)
    await asyncio.sleep(0.5)
    recorder.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await recorder
    values = {e.data["requested_at_value"] for e in requested}
    assert len(seen) == 2 and values == set(seen)  # 20 pushes: two patches reached the server


async def test_a_suspended_source_is_reported_and_left_alone(
    secret_file: Path,
    relay_kubeconfig: Path,
    tag: str,
    admin: AdminApi,
    flux_objects: dict[str, str],
) -> None:
    await admin.patch(
        GITREPOSITORIES, "flux-system", flux_objects["source"], {"spec": {"suspend": True}}
    )
    async with running(real_settings(secret_file, relay_kubeconfig, tag)) as pipeline:
        await pipeline.publish(push(tag))
        requested = await pipeline.next("reconcile.requested", timeout=10)
        await pipeline.publish(committed(), app=f"app-{tag}", deploymentid=f"d-{tag}")
        failed = await pipeline.next("deploy.failed", timeout=10)
    assert requested.data["suspended"] == [
        {"kind": "GitRepository", "name": flux_objects["source"], "namespace": "flux-system"}
    ]
    assert failed.data["reason"] == "flux_suspended"
    stored = await admin.get(GITREPOSITORIES, "flux-system", flux_objects["source"])
    assert REQUESTED_AT not in (stored["metadata"].get("annotations") or {})


async def test_flux_failure_message_is_passed_through(
    secret_file: Path,
    relay_kubeconfig: Path,
    tag: str,
    admin: AdminApi,
    flux_objects: dict[str, str],
    standin_flux: StandInFlux,
) -> None:
    app = f"bad-{tag}"
    await admin.create(
        KUSTOMIZATIONS,
        kustomization(app, source=flux_objects["source"], labels={"relay-test": tag}),
    )
    message = (
        "Deployment/dynamic-apps/x dry-run failed: "
        "spec.template.spec.containers[0].image: Required value"
    )
    standin_flux.fail[app] = ("ReconciliationFailed", message)
    async with running(
        real_settings(secret_file, relay_kubeconfig, tag, reconcile_timeout=20)
    ) as pipeline:
        await pipeline.publish(committed(), app=app, deploymentid=f"d-{tag}")
        failed = await pipeline.next("deploy.failed", app=app, timeout=20)
    assert failed.data["stage"] == "reconcile" and failed.data["reason"] == "flux_failed"
    assert message in failed.data["detail"]


async def test_the_api_server_stopped_then_started_mid_deploy(
    kube_api: KubeAPIServer,
    secret_file: Path,
    relay_kubeconfig: Path,
    tag: str,
    admin: AdminApi,
    flux_objects: dict[str, str],
    standin_flux: StandInFlux,
) -> None:
    app = f"dark-{tag}"
    await admin.create(
        KUSTOMIZATIONS,
        kustomization(app, source=flux_objects["source"], labels={"relay-test": tag}),
    )
    standin_flux.delay = 1.0  # the request is still in Flux's hands when the server goes
    async with running(
        real_settings(secret_file, relay_kubeconfig, tag, reconcile_timeout=60)
    ) as pipeline:
        await pipeline.publish(committed(), app=app, deploymentid=f"d-{tag}")
        await pipeline.next("reconcile.requested", app=app, timeout=10)
        await in_thread(kube_api.stop_apiserver)
        await asyncio.sleep(2)
        await in_thread(kube_api.start_apiserver)
        done = await pipeline.next("reconcile.completed", app=app, timeout=45)
    assert done.data["revision"] == f"main@sha1:{HEAD}"


async def test_a_push_while_the_api_server_is_down_is_retried_until_it_is_back(
    kube_api: KubeAPIServer,
    secret_file: Path,
    relay_kubeconfig: Path,
    tag: str,
    flux_objects: dict[str, str],
    admin: AdminApi,
) -> None:
    settings = real_settings(secret_file, relay_kubeconfig, tag)
    async with running(settings) as pipeline:
        await pipeline.publish(push(tag))  # warms the informer while the server is up
        await pipeline.next("reconcile.requested", timeout=10)
        await in_thread(kube_api.stop_apiserver)
        try:
            await pipeline.publish(push(tag))
            await asyncio.sleep(1.5)
        finally:
            await in_thread(kube_api.start_apiserver)
        second = await pipeline.next("reconcile.requested", index=1, timeout=30)
    stored = await admin.get(GITREPOSITORIES, "flux-system", flux_objects["source"])
    assert stored["metadata"]["annotations"][REQUESTED_AT] == second.data["requested_at_value"]


async def test_a_restarted_api_server_refusing_everyone_at_first_fails_no_read(
    kube_api: KubeAPIServer, secret_file: Path, tag: str, flux_objects: dict[str, str]
) -> None:
    """The first answers of a restarted kube-apiserver, before its RBAC cache is filled, are 403
    for everyone (the harness waits for /readyz; the relay does not). A new app's Kustomization
    is read directly (no cache has it): that read must not fail the deploy as ``forbidden``."""
    worker = create(real_settings(secret_file, kube_api.relay_kubeconfig, tag))
    assert isinstance(worker, ReconcileWorker)
    absent = Target(KUSTOMIZATIONS, "flux-system", f"absent-{tag}")
    seen: list[str] = []

    async def keep_reading() -> None:
        while True:
            try:
                seen.append("answered" if await worker.read(absent) is None else "found")
            except StageError as exc:
                seen.append(exc.reason)
            await asyncio.sleep(0.005)

    try:
        assert await worker.read(absent) is None
        reader = asyncio.create_task(keep_reading())
        await in_thread(functools.partial(kube_api.stop_apiserver, grace=2.0))
        await in_thread(kube_api.start_apiserver)
        await asyncio.sleep(0.5)
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
    finally:
        await worker.close()
    assert "kubernetes_unavailable" in seen and seen[-1] == "answered"
    assert "forbidden" not in seen


async def test_an_api_server_that_stays_away_ends_in_a_clear_failure(
    proxy: Proxy,
    secret_file: Path,
    relay_kubeconfig: Path,
    tag: str,
    admin: AdminApi,
    flux_objects: dict[str, str],
) -> None:
    app = f"gone-{tag}"
    await admin.create(KUSTOMIZATIONS, kustomization(app, source=flux_objects["source"]))
    async with running(
        real_settings(secret_file, relay_kubeconfig, tag, reconcile_timeout=4)
    ) as pipeline:
        await pipeline.publish(committed(), app=app, deploymentid=f"d-{tag}")
        await pipeline.next("reconcile.requested", app=app, timeout=10)
        proxy.down = True  # from the relay's side the API server is gone
        proxy.cut()
        failed = await pipeline.next("deploy.failed", app=app, timeout=15)
    assert failed.data["reason"] == "timeout"
    assert "Kubernetes API not answering" in failed.data["detail"]
