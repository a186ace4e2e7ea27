"""The fake API server's semantics, and the shared informer on top of it."""

from __future__ import annotations

import asyncio

import pytest

from relay.kube.base import DEPLOYMENTS, GITREPOSITORIES
from relay.kube.errors import Forbidden, Gone, NotFound, ServerError, Unreachable
from relay.kube.fake import FakeCluster, merge_patch
from relay.kube.informer import Informer
from tests.kube.objects import NAMESPACE, deployment
from tests.kube.standins import git_repository
from tests.support.kube_status import rolled_out

MANAGED = "app.kubernetes.io/managed-by=relay"


def test_merge_patch_follows_rfc_7386() -> None:
    target = {"a": {"b": 1, "c": 2}, "d": [1, 2], "e": "x"}
    assert merge_patch(target, {"a": {"b": None, "f": 3}, "d": [3], "e": None}) == {
        "a": {"c": 2, "f": 3},
        "d": [3],
    }


async def test_metadata_patches_keep_the_generation_spec_changes_bump_it() -> None:
    fake = FakeCluster()
    fake.create(GITREPOSITORIES, git_repository("flux-system"))
    patched = await fake.patch_merge(
        GITREPOSITORIES, "flux-system", "flux-system", {"metadata": {"annotations": {"k": "v"}}}
    )
    assert patched["metadata"]["generation"] == 1
    patched = await fake.patch_merge(
        GITREPOSITORIES, "flux-system", "flux-system", {"spec": {"suspend": True}}
    )
    assert patched["metadata"]["generation"] == 2
    with pytest.raises(NotFound):
        await fake.patch_merge(GITREPOSITORIES, "flux-system", "nope", {})


async def test_watch_replays_from_a_resource_version_and_refuses_a_compacted_one() -> None:
    fake = FakeCluster()
    listed = await fake.list(DEPLOYMENTS, NAMESPACE)
    fake.create(DEPLOYMENTS, deployment("a"))
    fake.create(DEPLOYMENTS, deployment("b"))
    stream = fake.watch(DEPLOYMENTS, NAMESPACE, resource_version=listed.resource_version)
    first = await anext(stream)
    second = await anext(stream)
    assert [first.name, second.name] == ["a", "b"]
    await stream.aclose()
    fake.compact()
    with pytest.raises(Gone):
        await anext(fake.watch(DEPLOYMENTS, NAMESPACE, resource_version=listed.resource_version))


async def informer_on(fake: FakeCluster) -> Informer:
    informer = Informer(fake, DEPLOYMENTS, NAMESPACE, label_selector=MANAGED)
    informer.start()
    await asyncio.wait_for(informer.synced.wait(), 2)
    return informer


async def settle(condition, timeout: float = 2.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_informer_resumes_after_a_dropped_stream_without_listing_again() -> None:
    fake = FakeCluster()
    fake.create(DEPLOYMENTS, deployment("a"))
    informer = await informer_on(fake)
    try:
        assert set(informer.cache) == {"a"}
        fake.end_watches()  # the server closed the stream (timeout, load balancer...)
        fake.create(DEPLOYMENTS, deployment("b"))  # happens while nobody is watching
        await settle(lambda: "b" in informer.cache)
        assert informer.lists == 1 and informer.watches == 2
    finally:
        await informer.stop()


async def test_informer_lists_again_after_gone() -> None:
    fake = FakeCluster()
    informer = await informer_on(fake)
    try:
        fake.end_watches()
        fake.create(DEPLOYMENTS, deployment("missed"))
        fake.compact()  # the events since our resourceVersion are gone
        await settle(lambda: "missed" in informer.cache)
        assert informer.lists == 2
    finally:
        await informer.stop()


async def test_informer_reconnects_after_an_outage_and_says_why_meanwhile() -> None:
    fake = FakeCluster()
    informer = await informer_on(fake)
    try:
        fake.go_away()
        await settle(lambda: informer.error is not None)
        assert isinstance(informer.error, Unreachable)
        assert "not answering" in (informer.describe_outage() or "")
        fake.come_back()
        fake.create(DEPLOYMENTS, deployment("after"))
        await settle(lambda: "after" in informer.cache, timeout=5)
        assert informer.error is None and informer.describe_outage() is None
    finally:
        await informer.stop()


async def test_informer_lists_again_after_a_watch_refused_by_the_server() -> None:
    fake = FakeCluster()
    informer = await informer_on(fake)
    try:
        fake.fail_next("watch", ServerError("etcd event received with PrevKv=nil"), times=1)
        fake.end_watches()
        await settle(lambda: informer.lists == 2, timeout=5)
    finally:
        await informer.stop()


async def test_informer_records_forbidden() -> None:
    fake = FakeCluster()
    fake.fail_next("list", Forbidden("deployments is forbidden: User relay cannot list"), times=1)
    informer = Informer(fake, DEPLOYMENTS, NAMESPACE)
    informer.start()
    try:
        await settle(lambda: informer.error is not None)
        assert isinstance(informer.error, Forbidden)
    finally:
        await informer.stop()


async def test_one_watch_wakes_only_the_waiters_of_the_changed_object() -> None:
    fake = FakeCluster()
    apps = [f"app-{i}" for i in range(1000)]
    for app in apps:
        fake.create(DEPLOYMENTS, deployment(app))
    informer = await informer_on(fake)
    signals = {app: asyncio.Event() for app in apps}
    try:
        subscriptions = [informer.subscribe(app, signals[app]) for app in apps]
        for sub in subscriptions:
            sub.__enter__()
        assert informer.waiting == 1000 and fake.open_watches == 1
        dep = fake.stored(DEPLOYMENTS, NAMESPACE, "app-7")
        assert dep is not None
        fake.update_status(DEPLOYMENTS, NAMESPACE, "app-7", rolled_out(dep))
        await asyncio.wait_for(signals["app-7"].wait(), 2)
        assert [a for a, s in signals.items() if s.is_set()] == ["app-7"]
        for sub in subscriptions:
            sub.__exit__(None, None, None)
        assert informer.waiting == 0
    finally:
        await informer.stop()


async def test_missing_credentials_are_reported_as_forbidden(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from relay.kube.client import KubeCluster
    from relay.settings import KubernetesSettings

    cluster = KubeCluster(KubernetesSettings(kubeconfig=tmp_path / "absent.kubeconfig"))
    with pytest.raises(Forbidden, match="no usable Kubernetes credentials"):
        await cluster.list(DEPLOYMENTS, NAMESPACE)
    await cluster.close()


def test_only_relay_kube_client_imports_kubernetes_asyncio() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    offenders = [
        str(path.relative_to(root))
        for folder in ("relay", "workers")
        for path in (root / folder).rglob("*.py")
        if "kubernetes_asyncio" in path.read_text()
        and path.relative_to(root).parts[:2] != ("relay", "kube")
    ]
    assert offenders == []
