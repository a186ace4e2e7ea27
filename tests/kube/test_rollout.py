"""Real rollouts: kube-controller-manager's deployment and replicaset controllers make real
ReplicaSets and Pods, a stand-in kubelet writes pod status, and the watch worker follows it all
through the relay's own least-privilege identity."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.events.data import ManifestsCommitted, ReconcileCompleted
from relay.kube.base import DEPLOYMENTS, KUSTOMIZATIONS
from relay.kube.client import KubeCluster
from tests.kube.config import make_settings
from tests.kube.objects import NAMESPACE, deployment
from tests.kube.pipeline import Pipeline
from tests.kube.realfixtures import real_settings
from tests.kube.realkube import AdminApi, StandInKubelet
from tests.kube.standins import StandInFlux, kustomization
from tests.support.kubeapi import KubeAPIServer
from workers.reconcile import create as create_reconcile
from workers.watch import WatchWorker, create

pytestmark = [pytest.mark.kube, pytest.mark.usefixtures("controller_manager")]


@contextlib.asynccontextmanager
async def watching(kube_api: KubeAPIServer, **kube: Any) -> AsyncIterator[Pipeline]:
    settings = make_settings(
        Path("/dev/null"),
        receivers=[],
        kubernetes={"kubeconfig": str(kube_api.relay_kubeconfig), **kube},
    )
    worker = create(settings)
    assert isinstance(worker, WatchWorker)
    async with Pipeline(settings, [worker]) as pipeline:
        yield pipeline


@pytest.fixture
async def kubelet(admin: AdminApi, admin_cluster: KubeCluster) -> AsyncIterator[StandInKubelet]:
    async with StandInKubelet(admin, admin_cluster) as running:
        yield running


def completed(image: str) -> ReconcileCompleted:
    return ReconcileCompleted(commit="a" * 40, image=image, stages={"reconcile": 2.0})


async def rolled_out(admin: AdminApi, app: str, timeout: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            dep = await admin.get(DEPLOYMENTS, NAMESPACE, app)
            status = dep.get("status") or {}
            if status.get("observedGeneration") == dep["metadata"]["generation"] and status.get(
                "availableReplicas"
            ) == dep["spec"]["replicas"] == status.get("updatedReplicas") == status.get("replicas"):
                return dep
            await asyncio.sleep(0.2)


async def test_a_real_rolling_update_ends_ready(
    kube_api: KubeAPIServer, admin: AdminApi, kubelet: StandInKubelet, tag: str
) -> None:
    app = f"roll-{tag}"
    await admin.create(
        DEPLOYMENTS, deployment(app, image="r/app:v1", deployment_id="d-1", replicas=2)
    )
    await rolled_out(admin, app)
    v2 = "r/app:v2@sha256:" + "2" * 64
    async with watching(kube_api, rollout_deadline=60) as pipeline:
        # What Flux applying the new commit does: a new pod template (and deploy id).
        await admin.patch(
            DEPLOYMENTS, NAMESPACE, app, deployment(app, image=v2, deployment_id="d-2", replicas=2)
        )
        await pipeline.publish(completed(v2), app=app, deploymentid="d-2")
        ready = await pipeline.next("deploy.ready", app=app, timeout=60)
    final = await admin.get(DEPLOYMENTS, NAMESPACE, app)
    assert final["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert final["status"]["updatedReplicas"] == final["status"]["availableReplicas"] == 2
    assert ready.data["image"] == v2 and ready.data["stages"]["rollout"] > 0


async def test_image_pull_backoff_is_caught_before_the_deadline(
    kube_api: KubeAPIServer, admin: AdminApi, kubelet: StandInKubelet, tag: str
) -> None:
    app = f"pull-{tag}"
    image = "r/pull-fails:v1@sha256:" + "3" * 64
    async with watching(kube_api, rollout_deadline=120) as pipeline:
        started = time.monotonic()
        await admin.create(DEPLOYMENTS, deployment(app, image=image, deployment_id="d-3"))
        await pipeline.publish(completed(image), app=app, deploymentid="d-3")
        failed = await pipeline.next("deploy.failed", app=app, timeout=60)
    assert failed.data["stage"] == "rollout"
    assert failed.data["reason"] == "image_pull_backoff"
    assert "ErrImagePull" in failed.data["detail"] or "ImagePullBackOff" in failed.data["detail"]
    assert "not found" in failed.data["detail"]  # the kubelet's event, quoted
    assert (
        time.monotonic() - started < 30
    )  # far before the 120 s deadline (and the 600 s progress deadline)


async def test_crash_loop_is_caught(
    kube_api: KubeAPIServer, admin: AdminApi, kubelet: StandInKubelet, tag: str
) -> None:
    app = f"crash-{tag}"
    image = "r/crash:v1"
    async with watching(kube_api, rollout_deadline=60) as pipeline:
        await admin.create(DEPLOYMENTS, deployment(app, image=image, deployment_id="d-4"))
        await pipeline.publish(completed(image), app=app, deploymentid="d-4")
        failed = await pipeline.next("deploy.failed", app=app, timeout=60)
    assert failed.data["reason"] == "crash_loop" and "CrashLoopBackOff" in failed.data["detail"]


async def test_progress_deadline_exceeded_from_the_deployment_controller(
    kube_api: KubeAPIServer, admin: AdminApi, kubelet: StandInKubelet, tag: str
) -> None:
    app = f"late-{tag}"
    image = "r/never-ready:v1"  # the kubelet leaves its pods Pending: no progress at all
    async with watching(kube_api, rollout_deadline=90) as pipeline:
        await admin.create(
            DEPLOYMENTS, deployment(app, image=image, deployment_id="d-5", progress_deadline=3)
        )
        await pipeline.publish(completed(image), app=app, deploymentid="d-5")
        failed = await pipeline.next("deploy.failed", app=app, timeout=80)
    assert failed.data["reason"] == "progress_deadline_exceeded"
    assert f'deployment "{app}" exceeded its progress deadline' in failed.data["detail"]


async def test_reconcile_names_a_failing_rollout_while_flux_health_checks(
    secret_file: Path,
    relay_kubeconfig: Path,
    admin: AdminApi,
    kubelet: StandInKubelet,
    flux_objects: dict[str, str],
    standin_flux: StandInFlux,
    tag: str,
) -> None:
    """Flux (wait: true) would call the Kustomization Ready only after a healthy rollout, and
    fail only at its timeout: the reconcile worker names the pull failure at once."""
    app = f"hc-{tag}"
    image = "r/pull-fails:v9@sha256:" + "9" * 64
    await admin.create(
        KUSTOMIZATIONS,
        kustomization(app, source=flux_objects["source"], labels={"relay-test": tag}),
    )
    standin_flux.ignore.add(app)  # health checks running: no Ready, no lastAppliedRevision
    settings = real_settings(secret_file, relay_kubeconfig, tag, reconcile_timeout=120)
    worker = create_reconcile(settings)
    async with Pipeline(settings, [worker]) as pipeline:
        await admin.create(DEPLOYMENTS, deployment(app, image=image, deployment_id=f"d-{tag}"))
        started = time.monotonic()
        await pipeline.publish(
            ManifestsCommitted(commit="d" * 40, paths=[f"apps/{app}"], image=image),
            app=app,
            deploymentid=f"d-{tag}",
        )
        failed = await pipeline.next("deploy.failed", app=app, timeout=60)
    assert failed.data["stage"] == "rollout" and failed.data["reason"] == "image_pull_backoff"
    assert time.monotonic() - started < 30
