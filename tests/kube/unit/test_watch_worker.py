"""The watch worker end to end on the in-process fake: the test plays the controllers."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.events.data import ReconcileCompleted
from relay.kube.base import DEPLOYMENTS, EVENTS, PODS, REPLICASETS
from relay.kube.fake import FakeCluster
from relay.settings import Settings
from tests.kube.config import make_settings
from tests.kube.objects import (
    NAMESPACE,
    deadline_exceeded,
    deployment,
    pod,
    replicaset,
    rolling,
    waiting,
)
from tests.kube.pipeline import Pipeline
from tests.support.kube_status import rolled_out
from workers.watch import Skipping, create
from workers.watch.worker import WatchWorker

IMAGE = "127.0.0.1:5000/hello:v2@sha256:" + "b" * 64


@dataclass
class Env:
    fake: FakeCluster
    pipeline: Pipeline
    worker: WatchWorker


@pytest.fixture
async def env(secret_file: Path) -> AsyncIterator[Env]:
    fake = FakeCluster()
    settings = make_settings(secret_file, kubernetes={"rollout_deadline": 3})
    assert settings.kubernetes is not None
    worker = WatchWorker(settings, fake, settings.kubernetes)
    async with Pipeline(settings, [worker]) as pipeline:
        yield Env(fake, pipeline, worker)


def completed(**kw: Any) -> ReconcileCompleted:
    return ReconcileCompleted(
        commit="c" * 40,
        revision="main@sha1:" + "c" * 40,
        image=IMAGE,
        version="v2",
        stages={"build": 2.0, "reconcile": 1.0},
        **kw,
    )


def start_rollout(fake: FakeCluster, app: str, deployment_id: str) -> dict[str, Any]:
    dep = fake.create(DEPLOYMENTS, deployment(app, image=IMAGE, deployment_id=deployment_id))
    fake.update_status(DEPLOYMENTS, NAMESPACE, app, rolling(dep))
    return dep


async def test_a_complete_rollout_is_ready_with_url_and_stages(env: Env) -> None:
    dep = start_rollout(env.fake, "hello", "d-1")
    await env.pipeline.publish(completed(), app="hello", deploymentid="d-1")
    await asyncio.sleep(0.2)
    assert env.pipeline.of("deploy.ready") == []
    env.fake.update_status(DEPLOYMENTS, NAMESPACE, "hello", rolling(dep, updated=1))
    await asyncio.sleep(0.1)
    assert env.pipeline.of("deploy.ready") == []
    env.fake.update_status(DEPLOYMENTS, NAMESPACE, "hello", rolled_out(dep))
    ready = await env.pipeline.next("deploy.ready", app="hello")
    assert ready.data["url"] == "https://hello.apps.example.com"
    assert ready.data["image"] == IMAGE and ready.data["commit"] == "c" * 40
    assert set(ready.data["stages"]) == {"build", "reconcile", "rollout"}
    assert ready.data["stages"]["rollout"] >= 0.2 and ready.deploymentid == "d-1"


async def test_the_previous_deploys_complete_rollout_does_not_count(env: Env) -> None:
    old = env.fake.create(DEPLOYMENTS, deployment("hello", image="old", deployment_id="d-0"))
    env.fake.update_status(DEPLOYMENTS, NAMESPACE, "hello", rolled_out(old))
    await env.pipeline.publish(completed(), app="hello", deploymentid="d-1")
    await asyncio.sleep(0.2)
    assert env.pipeline.of("deploy.ready") == []
    new = env.fake.update(
        DEPLOYMENTS, NAMESPACE, "hello", deployment("hello", image=IMAGE, deployment_id="d-1")
    )
    env.fake.update_status(DEPLOYMENTS, NAMESPACE, "hello", rolled_out(new))
    await env.pipeline.next("deploy.ready", app="hello")


async def test_a_deploy_a_newer_one_superseded_fails_after_the_grace_though_nothing_changes(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deploys of one app in quick succession: Flux applied the newer one, the Deployment
    carries it and never changes again; the older deploy must end (superseded), not wait for
    its rollout deadline."""
    monkeypatch.setattr("workers.watch.worker.SUPERSEDED_GRACE", 0.3)
    newer = env.fake.create(DEPLOYMENTS, deployment("hello", image=IMAGE, deployment_id="d-2"))
    env.fake.update_status(DEPLOYMENTS, NAMESPACE, "hello", rolled_out(newer))
    await env.pipeline.publish(completed(), app="hello", deploymentid="d-1")
    failed = await env.pipeline.next("deploy.failed", app="hello", timeout=2.0)
    assert failed.deploymentid == "d-1" and failed.data["reason"] == "superseded"


async def test_progress_deadline_exceeded_fails_the_deploy(env: Env) -> None:
    dep = start_rollout(env.fake, "stuck", "d-2")
    await env.pipeline.publish(completed(), app="stuck", deploymentid="d-2")
    env.fake.update_status(DEPLOYMENTS, NAMESPACE, "stuck", deadline_exceeded(dep))
    failed = await env.pipeline.next("deploy.failed", app="stuck")
    assert (
        failed.data["stage"] == "rollout" and failed.data["reason"] == "progress_deadline_exceeded"
    )
    assert 'deployment "stuck" exceeded its progress deadline' in failed.data["detail"]


def failing_pod(fake: FakeCluster, dep: dict[str, Any], state: str, message: str, **kw: Any) -> str:
    fake.update(
        DEPLOYMENTS,
        NAMESPACE,
        dep["metadata"]["name"],
        {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "1"}}},
    )
    rs = fake.create(REPLICASETS, replicaset(dep, revision="1"))
    created = fake.create(PODS, pod(rs))
    name: str = created["metadata"]["name"]
    fake.update_status(PODS, NAMESPACE, name, waiting(state, message, **kw))
    return name


async def test_image_pull_backoff_is_caught_early_with_the_kubelet_event(env: Env) -> None:
    dep = start_rollout(env.fake, "badimage", "d-3")
    started = time.monotonic()
    await env.pipeline.publish(completed(), app="badimage", deploymentid="d-3")
    name = failing_pod(env.fake, dep, "ImagePullBackOff", f'Back-off pulling image "{IMAGE}"')
    env.fake.create(
        EVENTS,
        {
            "metadata": {"name": f"{name}.1", "namespace": NAMESPACE},
            "involvedObject": {"kind": "Pod", "name": name, "namespace": NAMESPACE},
            "type": "Warning",
            "reason": "Failed",
            "lastTimestamp": "2026-01-01T00:00:00Z",
            "message": f'Failed to pull image "{IMAGE}": manifest unknown',
        },
    )
    failed = await env.pipeline.next("deploy.failed", app="badimage")
    assert failed.data["reason"] == "image_pull_backoff"
    assert (
        "ImagePullBackOff" in failed.data["detail"] and "manifest unknown" in failed.data["detail"]
    )
    assert time.monotonic() - started < 2.0  # well before the 3 s deadline


@pytest.mark.parametrize(
    ("state", "kw", "reason"),
    [
        ("CrashLoopBackOff", {"restarts": 3}, "crash_loop"),
        ("CreateContainerConfigError", {}, "create_container_config_error"),
        ("CrashLoopBackOff", {"restarts": 2, "last_terminated": "OOMKilled"}, "oom_killed"),
    ],
)
async def test_other_pod_failures_are_named(
    env: Env, state: str, kw: dict[str, Any], reason: str
) -> None:
    dep = start_rollout(env.fake, "crashy", "d-4")
    await env.pipeline.publish(completed(), app="crashy", deploymentid="d-4")
    failing_pod(env.fake, dep, state, "back-off restarting failed container", **kw)
    failed = await env.pipeline.next("deploy.failed", app="crashy")
    assert failed.data["reason"] == reason


async def test_a_failing_pod_of_an_old_replicaset_is_ignored(env: Env) -> None:
    dep = start_rollout(env.fake, "hello", "d-5")
    env.fake.update(
        DEPLOYMENTS,
        NAMESPACE,
        "hello",
        {"metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}},
    )
    old = env.fake.create(REPLICASETS, replicaset(dep, suffix="old", revision="1"))
    bad = env.fake.create(PODS, pod(old))
    env.fake.update_status(
        PODS, NAMESPACE, bad["metadata"]["name"], waiting("CrashLoopBackOff", "old crash")
    )
    await env.pipeline.publish(completed(), app="hello", deploymentid="d-5")
    await asyncio.sleep(0.3)
    assert env.pipeline.of("deploy.failed") == []
    env.fake.update_status(DEPLOYMENTS, NAMESPACE, "hello", rolled_out(dep))
    await env.pipeline.next("deploy.ready", app="hello")


async def test_a_rollout_past_the_deadline_times_out_saying_where_it_stood(env: Env) -> None:
    start_rollout(env.fake, "slow", "d-6")
    await env.pipeline.publish(completed(), app="slow", deploymentid="d-6")
    failed = await env.pipeline.next("deploy.failed", app="slow", timeout=8)
    assert failed.data["reason"] == "timeout"
    assert "0 out of 1 new replicas have been updated" in failed.data["detail"]


async def test_the_api_server_away_past_the_deadline_is_named(env: Env) -> None:
    start_rollout(env.fake, "dark", "d-7")
    await env.pipeline.publish(completed(), app="dark", deploymentid="d-7")
    await asyncio.sleep(0.2)
    env.fake.go_away()
    failed = await env.pipeline.next("deploy.failed", app="dark", timeout=8)
    assert (
        failed.data["reason"] == "timeout"
        and "Kubernetes API not answering" in failed.data["detail"]
    )
    env.fake.come_back()


async def test_a_delete_ends_when_the_deployment_is_gone(env: Env) -> None:
    start_rollout(env.fake, "bye", "d-8")
    await env.pipeline.publish(completed(deleted=True), app="bye", deploymentid="d-8")
    await asyncio.sleep(0.2)
    assert env.pipeline.of("app.deleted") == []
    env.fake.delete(DEPLOYMENTS, NAMESPACE, "bye")
    deleted = await env.pipeline.next("app.deleted", app="bye")
    assert deleted.data["commit"] == "c" * 40


@pytest.fixture
async def patient(secret_file: Path) -> AsyncIterator[Env]:
    fake = FakeCluster()
    settings = make_settings(secret_file, kubernetes={"rollout_deadline": 120})
    assert settings.kubernetes is not None
    worker = WatchWorker(settings, fake, settings.kubernetes)
    async with Pipeline(settings, [worker]) as pipeline:
        yield Env(fake, pipeline, worker)


async def test_a_thousand_waits_share_one_watch_per_kind(patient: Env) -> None:
    env = patient
    apps = [f"app-{i:04d}" for i in range(1000)]
    deps = {app: start_rollout(env.fake, app, f"id-{app}") for app in apps}
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for app in apps:
        await env.pipeline.publish(completed(), app=app, deploymentid=f"id-{app}")
    async with asyncio.timeout(20):
        while sum(i.waiting for i in env.worker.informers.all()) < 2000:
            await asyncio.sleep(0.05)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert env.fake.open_watches == 2 and env.fake.watches_opened == 2  # deployments + pods
    assert env.fake.calls["list"] == 2
    for app in apps:
        env.fake.update_status(DEPLOYMENTS, NAMESPACE, app, rolled_out(deps[app]))
    ready = await env.pipeline.count("deploy.ready", 1000, timeout=60)
    assert {e.app for e in ready} == set(apps)
    assert env.fake.watches_opened == 2
    assert held < 100 * 1024 * 1024  # bounded; the figure per wait is in BENCHMARKS.md


async def test_without_kubernetes_the_stage_is_skipped(secret_file: Path) -> None:
    settings: Settings = make_settings(secret_file)
    worker = create(settings)
    assert isinstance(worker, Skipping)
    async with Pipeline(settings, [worker]) as pipeline:
        await pipeline.publish(completed(), app="hello", deploymentid="d-9")
        await pipeline.publish(completed(deleted=True), app="gone", deploymentid="d-10")
        ready = await pipeline.next("deploy.ready")
        deleted = await pipeline.next("app.deleted")
    assert ready.data["skipped"] == deleted.data["skipped"] == "no Kubernetes configured"
    assert ready.data["url"] == "https://hello.apps.example.com"
