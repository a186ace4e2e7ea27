"""The reconcile worker end to end on the in-process fake, with a stand-in Flux."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.events.data import GitPush, GitTag, ManifestsCommitted, Repository
from relay.kube.base import DEPLOYMENTS, GITREPOSITORIES, KUSTOMIZATIONS, PODS, REPLICASETS
from relay.kube.fake import FakeCluster
from relay.settings import Settings
from tests.kube.config import make_settings
from tests.kube.objects import NAMESPACE, deployment, pod, replicaset, waiting
from tests.kube.pipeline import Pipeline
from tests.kube.standins import StandInFlux, fake_writer, git_repository, kustomization
from workers.reconcile import Skipping, create
from workers.reconcile.flux import REQUESTED_AT
from workers.reconcile.worker import ReconcileWorker
from workers.watch.rollout import REVISION

SHA = "c0ffee" + "0" * 34


@dataclass
class Env:
    fake: FakeCluster
    flux: StandInFlux
    pipeline: Pipeline
    settings: Settings
    worker: ReconcileWorker


def settings_for(secret_file: Path, **kube: Any) -> Settings:
    receivers: list[dict[str, Any]] = [
        {
            "name": "gh",
            "type": "github",
            "secret_file": str(secret_file),
            "reconcile": [{"kind": "GitRepository", "name": "flux-system"}],
        },
        {
            "name": "globbed",
            "type": "gitea",
            "secret_file": str(secret_file),
            "branches": ["release/*"],
            "tags": True,
            "reconcile": [{"kind": "Kustomization", "name": "*", "match_labels": {"tier": "apps"}}],
        },
        {
            "name": "ghost",
            "type": "github",
            "secret_file": str(secret_file),
            "reconcile": [{"kind": "GitRepository", "name": "does-not-exist"}],
        },
    ]
    return make_settings(
        secret_file,
        receivers=receivers,
        kubernetes={"reconcile_timeout": 5, "coalesce_ms": 200, **kube},
    )


@pytest.fixture
async def env(secret_file: Path) -> AsyncIterator[Env]:
    fake = FakeCluster()
    fake.create(GITREPOSITORIES, git_repository("flux-system", branch="main"))
    fake.create(KUSTOMIZATIONS, kustomization("flux-system"))
    settings = settings_for(secret_file)
    assert settings.kubernetes is not None
    worker = ReconcileWorker(settings, fake, settings.kubernetes)
    async with (
        StandInFlux(fake, fake_writer(fake), head=SHA) as flux,
        Pipeline(settings, [worker]) as pipeline,
    ):
        yield Env(fake, flux, pipeline, settings, worker)


def push(ref: str = "refs/heads/main", receiver: str = "gh", **kw: Any) -> GitPush:
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    tag = ref.removeprefix("refs/tags/") if ref.startswith("refs/tags/") else None
    return GitPush(
        provider="github",
        receiver=receiver,
        repository=Repository(full_name="o/r"),
        ref=ref,
        branch=branch,
        tag=tag,
        before="0" * 40,
        after=SHA,
        **kw,
    )


def committed(**kw: Any) -> ManifestsCommitted:
    return ManifestsCommitted(
        commit=SHA,
        paths=["apps/hello/app/deployment.yaml"],
        image="127.0.0.1:5000/hello:v1@sha256:" + "a" * 64,
        version="v1",
        stages={"build": 1.5, "commit": 0.4},
        **kw,
    )


async def test_a_push_to_the_tracked_branch_patches_and_reports(env: Env) -> None:
    await env.pipeline.publish(push())
    requested = await env.pipeline.next("reconcile.requested")
    assert requested.data["targets"] == [
        {"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"}
    ]
    assert requested.data["commit"] == SHA and requested.data["trigger"] == "git.push"
    [patch] = env.fake.patches
    assert (
        patch.patch["metadata"]["annotations"][REQUESTED_AT] == requested.data["requested_at_value"]
    )
    assert patch.content_type == "application/merge-patch+json"


async def test_a_push_to_another_branch_or_a_tag_reconciles_nothing(env: Env) -> None:
    await env.pipeline.publish(push("refs/heads/dev"))
    tag = GitTag(**push("refs/tags/v1").model_dump())
    await env.pipeline.publish(tag)
    await asyncio.sleep(0.3)
    assert env.fake.patches == [] and env.pipeline.of("reconcile.requested") == []


async def test_branch_globs_tags_and_match_labels(env: Env) -> None:
    for name, tier in (("apps-a", "apps"), ("apps-b", "apps"), ("infra", "infra")):
        env.fake.create(KUSTOMIZATIONS, kustomization(name, labels={"tier": tier}))
    await env.pipeline.publish(push("refs/heads/release/1.2", receiver="globbed"))
    requested = await env.pipeline.next("reconcile.requested")
    assert sorted(t["name"] for t in requested.data["targets"]) == ["apps-a", "apps-b"]
    await env.pipeline.publish(GitTag(**push("refs/tags/v1.2.0", receiver="globbed").model_dump()))
    tagged = await env.pipeline.next("reconcile.requested", index=1)
    assert tagged.data["trigger"] == "git.tag" and len(tagged.data["targets"]) == 2
    await env.pipeline.publish(push("refs/heads/main", receiver="globbed"))
    await asyncio.sleep(0.3)
    assert len(env.pipeline.of("reconcile.requested")) == 2


async def test_a_suspended_target_is_reported_not_patched(env: Env) -> None:
    env.fake.update(GITREPOSITORIES, "flux-system", "flux-system", {"spec": {"suspend": True}})
    await env.pipeline.publish(push())
    requested = await env.pipeline.next("reconcile.requested")
    assert requested.data["suspended"] == [
        {"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"}
    ]
    assert requested.data.get("targets", []) == [] and env.fake.patches == []


async def test_a_missing_target_is_dead_lettered_with_its_name(env: Env) -> None:
    await env.pipeline.publish(push(receiver="ghost"))
    async with asyncio.timeout(5):
        while not await env.pipeline.bus.dead_letters():
            await asyncio.sleep(0.02)
    [dead] = await env.pipeline.bus.dead_letters()
    assert "flux_object_not_found" in dead.error and "does-not-exist" in dead.error


async def test_a_burst_of_pushes_is_coalesced(env: Env) -> None:
    for _ in range(10):
        await env.pipeline.publish(push())
    events = await env.pipeline.count("reconcile.requested", 10)
    assert len(env.fake.patches) == 2
    assert len({e.data["requested_at_value"] for e in events}) == 2


async def test_a_deploy_reconciles_source_then_kustomization_to_completion(env: Env) -> None:
    env.fake.create(KUSTOMIZATIONS, kustomization("hello"))
    await env.pipeline.publish(committed(), app="hello", deploymentid="dep-1")
    requested = await env.pipeline.next("reconcile.requested", app="hello")
    assert requested.deploymentid == "dep-1" and requested.data["commit"] == SHA
    completed = await env.pipeline.next("reconcile.completed", app="hello")
    assert completed.data["revision"] == f"main@sha1:{SHA}"
    assert completed.data["image"].endswith("a" * 64) and completed.data["version"] == "v1"
    assert set(completed.data["stages"]) == {"build", "commit", "reconcile"}
    kinds = [k for k, _, _ in env.flux.handled]
    assert kinds == ["GitRepository", "Kustomization"]
    assert [(p.resource.kind, p.name) for p in env.fake.patches] == [
        ("GitRepository", "flux-system"),
        ("Kustomization", "hello"),
    ]


async def test_a_new_app_waits_for_the_parent_to_create_its_kustomization(env: Env) -> None:
    async def apply_parent() -> None:
        await asyncio.sleep(0.1)
        env.fake.create(KUSTOMIZATIONS, kustomization("fresh"))

    env.flux.on_parent = apply_parent
    await env.pipeline.publish(committed(), app="fresh", deploymentid="dep-2")
    completed = await env.pipeline.next("reconcile.completed", app="fresh")
    assert completed.data["commit"] == SHA
    assert [p.name for p in env.fake.patches] == ["flux-system", "flux-system", "fresh"]
    # GETs only of the app's Kustomization, which no cache had: the parent came from the cache.
    assert env.fake.calls["get"] == 2


async def test_flux_failure_message_reaches_deploy_failed(env: Env) -> None:
    env.fake.create(KUSTOMIZATIONS, kustomization("broken"))
    message = "kustomize build failed: accumulating resources: 'app/missing.yaml' not found"
    env.flux.fail["broken"] = ("BuildFailed", message)
    await env.pipeline.publish(committed(), app="broken", deploymentid="dep-3")
    failed = await env.pipeline.next("deploy.failed", app="broken")
    assert failed.data["stage"] == "reconcile" and failed.data["reason"] == "flux_failed"
    assert message in failed.data["detail"] and "BuildFailed" in failed.data["detail"]
    assert failed.data["stages"] == {"build": 1.5, "commit": 0.4}


async def test_a_stalled_source_fails_the_deploy(env: Env) -> None:
    env.fake.create(KUSTOMIZATIONS, kustomization("hello"))
    env.flux.stall["flux-system"] = ("InvalidURL", "unsupported URL scheme")
    await env.pipeline.publish(committed(), app="hello", deploymentid="dep-4")
    failed = await env.pipeline.next("deploy.failed", app="hello")
    assert (
        failed.data["reason"] == "flux_failed" and "unsupported URL scheme" in failed.data["detail"]
    )


async def test_a_suspended_kustomization_fails_the_deploy_at_once(env: Env) -> None:
    env.fake.create(KUSTOMIZATIONS, kustomization("paused", suspend=True))
    await env.pipeline.publish(committed(), app="paused", deploymentid="dep-5")
    failed = await env.pipeline.next("deploy.failed", app="paused")
    assert failed.data["reason"] == "flux_suspended"
    requested = await env.pipeline.next("reconcile.requested", app="paused")
    assert requested.data["suspended"][0]["name"] == "paused"
    assert env.fake.patches == []


async def test_flux_that_never_answers_times_out_with_what_it_waited_for(env: Env) -> None:
    env.fake.create(KUSTOMIZATIONS, kustomization("slow"))
    env.flux.ignore.add("slow")
    await env.pipeline.publish(committed(), app="slow", deploymentid="dep-6")
    failed = await env.pipeline.next("deploy.failed", app="slow", timeout=10)
    assert failed.data["reason"] == "timeout"
    assert "Kustomization flux-system/slow" in failed.data["detail"]
    assert "not yet handled our request" in failed.data["detail"]


async def test_a_teardown_completes_when_the_kustomization_is_pruned(env: Env) -> None:
    env.fake.create(KUSTOMIZATIONS, kustomization("gone"))

    async def prune() -> None:
        env.fake.delete(KUSTOMIZATIONS, "flux-system", "gone")

    env.flux.on_parent = prune
    await env.pipeline.publish(committed(deleted=True), app="gone", deploymentid="dep-7")
    completed = await env.pipeline.next("reconcile.completed", app="gone")
    assert completed.data["deleted"] is True


async def test_api_server_away_during_a_deploy_then_back(env: Env) -> None:
    env.fake.create(KUSTOMIZATIONS, kustomization("hello"))
    env.fake.go_away()
    await env.pipeline.publish(committed(), app="hello", deploymentid="dep-8")
    await asyncio.sleep(0.5)
    env.fake.come_back()
    completed = await env.pipeline.next("reconcile.completed", app="hello", timeout=10)
    assert completed.data["revision"] == f"main@sha1:{SHA}"


async def test_without_kubernetes_the_stage_is_skipped(secret_file: Path) -> None:
    settings = make_settings(secret_file)
    worker = create(settings)
    assert isinstance(worker, Skipping)
    async with Pipeline(settings, [worker]) as pipeline:
        await pipeline.publish(committed(), app="hello", deploymentid="dep-9")
        requested = await pipeline.next("reconcile.requested")
        completed = await pipeline.next("reconcile.completed")
    assert requested.data["skipped"] == completed.data["skipped"] == "no Kubernetes configured"
    assert completed.deploymentid == "dep-9" and completed.data["image"].endswith("a" * 64)


def failing_rollout(fake: FakeCluster, app: str, deployment_id: str) -> None:
    """What Flux applying the commit started: a Deployment whose new pods cannot pull."""
    dep = fake.create(DEPLOYMENTS, deployment(app, deployment_id=deployment_id))
    fake.update(DEPLOYMENTS, NAMESPACE, app, {"metadata": {"annotations": {REVISION: "1"}}})
    rs = fake.create(REPLICASETS, replicaset(dep, revision="1"))
    created = fake.create(PODS, pod(rs))
    fake.update_status(
        PODS, NAMESPACE, created["metadata"]["name"], waiting("ErrImagePull", "not found")
    )


async def test_a_failing_rollout_is_named_while_flux_health_checks(env: Env) -> None:
    """With wait: true Flux is Ready only after the rollout: do not wait for its timeout."""
    env.fake.create(KUSTOMIZATIONS, kustomization("pull"))
    env.flux.ignore.add("pull")  # Flux is health-checking: no Ready, no lastAppliedRevision
    failing_rollout(env.fake, "pull", "dep-10")
    await env.pipeline.publish(committed(), app="pull", deploymentid="dep-10")
    failed = await env.pipeline.next("deploy.failed", app="pull")
    assert failed.data["stage"] == "rollout" and failed.data["reason"] == "image_pull_backoff"


async def test_an_earlier_deploys_failing_pods_do_not_fail_this_one(env: Env) -> None:
    env.fake.create(KUSTOMIZATIONS, kustomization("fixed"))
    failing_rollout(env.fake, "fixed", "dep-old")  # Flux has not applied dep-11 yet
    env.flux.delay = 0.5  # long enough for the pods to be looked at while Flux works
    await env.pipeline.publish(committed(), app="fixed", deploymentid="dep-11")
    completed = await env.pipeline.next("reconcile.completed", app="fixed")
    assert env.pipeline.of("deploy.failed") == [] and completed.deploymentid == "dep-11"


async def test_a_push_while_the_api_server_was_never_reached_is_retried(env: Env) -> None:
    """A worker that starts during an outage keeps the push for a later attempt."""
    env.worker.sync_timeout = 0.2
    env.fake.go_away()
    await env.pipeline.publish(push())
    await asyncio.sleep(0.5)  # the first attempt gave up and was put back on the bus
    env.fake.come_back()
    requested = await env.pipeline.next("reconcile.requested", timeout=20)
    assert requested.data["targets"][0]["name"] == "flux-system"
    assert await env.pipeline.bus.dead_letters() == []
