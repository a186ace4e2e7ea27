"""The small interface the workers use to reach Kubernetes, and the kinds they touch.

Objects travel as the API server's own JSON (``Obj``): the workers read a handful of fields, so
decoding whole typed models would cost time and memory for nothing. Two implementations exist:
``relay.kube.client`` (kubernetes-asyncio, the only module importing it) and ``relay.kube.fake``
(in-process, for fast tests).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Obj = dict[str, Any]
WatchType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]


@dataclass(frozen=True)
class Resource:
    """A namespaced API resource: where it is served and what its objects are called."""

    group: str
    version: str
    plural: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str, name: str | None = None) -> str:
        """The REST path of the collection in ``namespace`` (or of one object in it)."""
        root = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        base = f"{root}/namespaces/{namespace}/{self.plural}"
        return f"{base}/{name}" if name else base


GITREPOSITORIES = Resource("source.toolkit.fluxcd.io", "v1", "gitrepositories", "GitRepository")
OCIREPOSITORIES = Resource("source.toolkit.fluxcd.io", "v1", "ocirepositories", "OCIRepository")
BUCKETS = Resource("source.toolkit.fluxcd.io", "v1", "buckets", "Bucket")
KUSTOMIZATIONS = Resource("kustomize.toolkit.fluxcd.io", "v1", "kustomizations", "Kustomization")
HELMRELEASES = Resource("helm.toolkit.fluxcd.io", "v2", "helmreleases", "HelmRelease")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
REPLICASETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
PODS = Resource("", "v1", "pods", "Pod")
EVENTS = Resource("", "v1", "events", "Event")

FLUX_KINDS: dict[str, Resource] = {
    r.kind: r for r in (GITREPOSITORIES, OCIREPOSITORIES, BUCKETS, KUSTOMIZATIONS, HELMRELEASES)
}


@dataclass(frozen=True)
class ObjectList:
    """A list answer: its items and the resourceVersion to watch from."""

    items: list[Obj]
    resource_version: str


@dataclass(frozen=True)
class WatchEvent:
    type: WatchType
    object: Obj

    @property
    def resource_version(self) -> str:
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))

    @property
    def name(self) -> str:
        return str(self.object.get("metadata", {}).get("name", ""))


class Cluster(Protocol):
    """What the reconcile and watch workers need from the API server, no more.

    Every method raises a ``relay.kube.errors.KubeError`` subclass on failure. ``watch`` yields
    events after ``resource_version`` (bookmarks included, as asked with allowWatchBookmarks) and
    ends when the server closes the stream; a compacted ``resource_version`` raises ``Gone``.
    It calls ``opened`` once the server has accepted the watch, before any event: on a quiet
    collection no event may come for minutes, and the caller must still know it is connected.
    """

    async def get(self, resource: Resource, namespace: str, name: str) -> Obj: ...

    async def patch_merge(
        self, resource: Resource, namespace: str, name: str, patch: Mapping[str, Any]
    ) -> Obj:
        """Apply a JSON merge patch (``application/merge-patch+json``, RFC 7386)."""

    async def list(
        self,
        resource: Resource,
        namespace: str,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> ObjectList: ...

    def watch(
        self,
        resource: Resource,
        namespace: str,
        *,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 300,
        opened: Callable[[], None] | None = None,
    ) -> AsyncGenerator[WatchEvent, None]: ...

    async def close(self) -> None: ...


def label_selector(labels: Mapping[str, str]) -> str:
    """``matchLabels`` as a label selector string (``k=v,k2=v2``)."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def events_selector(kind: str, name: str) -> str:
    """The field selector of the events about one object."""
    return f"involvedObject.kind={kind},involvedObject.name={name}"


def meta(obj: Obj) -> dict[str, Any]:
    found = obj.get("metadata")
    return found if isinstance(found, dict) else {}


def status_of(obj: Obj | None) -> dict[str, Any]:
    found = (obj or {}).get("status")
    return found if isinstance(found, dict) else {}


def spec_of(obj: Obj | None) -> dict[str, Any]:
    found = (obj or {}).get("spec")
    return found if isinstance(found, dict) else {}


def condition(obj: Obj | None, kind: str) -> dict[str, Any] | None:
    """The status condition of type ``kind``, if present."""
    for cond in status_of(obj).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None
