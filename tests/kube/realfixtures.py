"""Fixtures of the tests on the real API server (imported by ``tests/kube/conftest.py``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay.kube.client import KubeCluster
from relay.settings import Settings
from tests.kube.config import make_settings
from tests.kube.realkube import AdminApi, Proxy, kubeconfig_via, relay_cluster
from tests.kube.standins import StandInFlux, git_repository, kustomization
from tests.support.kubeapi import KubeAPIServer


@pytest.fixture
def tag() -> str:
    """A short id making this test's object names its own on the shared API server."""
    return uuid.uuid4().hex[:6]


@pytest.fixture
async def admin(kube_api: KubeAPIServer) -> AsyncIterator[AdminApi]:
    async with AdminApi(kube_api.url, kube_api.admin_token, kube_api.ca_file) as api:
        yield api


@pytest.fixture
async def admin_cluster(kube_api: KubeAPIServer) -> AsyncIterator[KubeCluster]:
    cluster = relay_cluster(kube_api.admin_kubeconfig)
    yield cluster
    await cluster.close()


@pytest.fixture
async def proxy(kube_api: KubeAPIServer) -> AsyncIterator[Proxy]:
    async with Proxy(kube_api.url) as running:
        yield running


@pytest.fixture
def relay_kubeconfig(kube_api: KubeAPIServer, proxy: Proxy, tmp_path: Path) -> Path:
    """The relay's least-privilege kubeconfig, through the proxy (so tests can cut it)."""
    return kubeconfig_via(kube_api.relay_kubeconfig, proxy.url, tmp_path / "relay.kubeconfig")


def real_settings(secret_file: Path, kubeconfig: Path, tag: str, **kube: Any) -> Settings:
    receivers = [
        {
            "name": "gh",
            "type": "github",
            "secret_file": str(secret_file),
            "reconcile": [{"kind": "GitRepository", "name": f"src-{tag}"}],
        }
    ]
    return make_settings(
        secret_file,
        receivers=receivers,
        kubernetes={"kubeconfig": str(kubeconfig), "parent_kustomization": f"parent-{tag}", **kube},
        deploy={
            "namespace": "dynamic-apps",
            "domain": "apps.example.com",
            "gitops": {"source_name": f"src-{tag}", "source_namespace": "flux-system"},
        },
    )


@pytest.fixture
async def flux_objects(admin: AdminApi, tag: str) -> dict[str, str]:
    """This test's GitRepository and parent Kustomization, labelled for its stand-in Flux."""
    from relay.kube.base import GITREPOSITORIES, KUSTOMIZATIONS

    labels = {"relay-test": tag}
    await admin.create(GITREPOSITORIES, git_repository(f"src-{tag}", labels=labels))
    await admin.create(
        KUSTOMIZATIONS, kustomization(f"parent-{tag}", source=f"src-{tag}", labels=labels)
    )
    return {"source": f"src-{tag}", "parent": f"parent-{tag}", "selector": f"relay-test={tag}"}


@pytest.fixture
async def standin_flux(
    admin: AdminApi, admin_cluster: KubeCluster, flux_objects: dict[str, str]
) -> AsyncIterator[StandInFlux]:
    async with StandInFlux(
        admin_cluster,
        admin.write_status,
        head="d" * 40,
        parent=flux_objects["parent"],
        selector=flux_objects["selector"],
    ) as flux:
        yield flux


@pytest.fixture(scope="module")
def controller_manager(kube_api: KubeAPIServer) -> Iterator[None]:
    """kube-controller-manager (deployment, replicaset... controllers) for one module's tests."""
    kube_api.start_controller_manager()
    yield
    kube_api.stop_controller_manager()


async def in_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking harness call (stop/start the API server) off the event loop."""
    return await asyncio.to_thread(fn, *args)
