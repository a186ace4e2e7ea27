"""The API connection kept open while the relay is idle (``kubernetes.keepalive_s``), on the real
API server as the least-privilege user, through a proxy that counts connections."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from relay.kube.base import GITREPOSITORIES
from tests.kube.realkube import AdminApi, Proxy, relay_cluster
from tests.kube.standins import git_repository
from workers.reconcile.flux import REQUESTED_AT, annotation_patch, requested_at_now

pytestmark = pytest.mark.kube


async def test_an_idle_client_patches_on_the_connection_it_kept(
    relay_kubeconfig: Path, proxy: Proxy, admin: AdminApi, tag: str
) -> None:
    name = f"warm-{tag}"
    await admin.create(GITREPOSITORIES, git_repository(name))
    relay = relay_cluster(relay_kubeconfig, keepalive_s=1.0)  # pooled connections kept 2 s
    try:
        await relay.patch_merge(GITREPOSITORIES, "flux-system", name, annotation_patch("a"))
        opened = proxy.connections
        await asyncio.sleep(4.5)  # longer than an idle connection is kept; between two pings
        value = requested_at_now()
        patched = await relay.patch_merge(
            GITREPOSITORIES, "flux-system", name, annotation_patch(value)
        )
        assert patched["metadata"]["annotations"][REQUESTED_AT] == value
        assert relay.pings >= 3  # GET /version, answered for the least-privilege user
        assert proxy.connections == opened  # no new connection, no new TLS handshake
    finally:
        await relay.close()


async def test_without_keepalive_an_idle_client_is_left_alone(
    relay_kubeconfig: Path, proxy: Proxy, admin: AdminApi, tag: str
) -> None:
    name = f"cold-{tag}"
    await admin.create(GITREPOSITORIES, git_repository(name))
    relay = relay_cluster(relay_kubeconfig, keepalive_s=0)
    try:
        await relay.patch_merge(GITREPOSITORIES, "flux-system", name, annotation_patch("a"))
        opened = proxy.connections
        await asyncio.sleep(1.0)
        assert relay.pings == 0 and proxy.connections == opened
    finally:
        await relay.close()
