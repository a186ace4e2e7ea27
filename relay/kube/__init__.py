"""Kubernetes access for the reconcile and watch workers, behind the small ``Cluster`` interface.

``connect(settings)`` gives the real client (``settings.kubernetes.kubeconfig``, or the pod's
service account when running in a cluster), or ``None`` when neither is there: the workers then
report their stages as skipped. Only ``relay.kube.client`` imports kubernetes-asyncio.
"""

from __future__ import annotations

import os

from relay.kube.base import (
    DEPLOYMENTS,
    EVENTS,
    FLUX_KINDS,
    GITREPOSITORIES,
    KUSTOMIZATIONS,
    PODS,
    REPLICASETS,
    Cluster,
    Obj,
    ObjectList,
    Resource,
    WatchEvent,
)
from relay.kube.errors import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeError,
    NotFound,
    ServerError,
    Unreachable,
)
from relay.settings import KubernetesSettings, Settings

SKIPPED = "no Kubernetes configured"

__all__ = [
    "DEPLOYMENTS",
    "EVENTS",
    "FLUX_KINDS",
    "GITREPOSITORIES",
    "KUSTOMIZATIONS",
    "PODS",
    "REPLICASETS",
    "SKIPPED",
    "Cluster",
    "Conflict",
    "Forbidden",
    "Gone",
    "Invalid",
    "KubeError",
    "NotFound",
    "Obj",
    "ObjectList",
    "Resource",
    "ServerError",
    "Unreachable",
    "WatchEvent",
    "connect",
    "kube_settings",
]


def kube_settings(settings: Settings) -> KubernetesSettings | None:
    """The Kubernetes settings in force: configured, defaults inside a cluster, else None."""
    if settings.kubernetes is not None:
        return settings.kubernetes
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return KubernetesSettings()
    return None


def connect(settings: Settings) -> Cluster | None:
    """The API client for these settings (connects on first use), or None without a cluster."""
    found = kube_settings(settings)
    if found is None:
        return None
    from relay.kube.client import KubeCluster

    return KubeCluster(found)
