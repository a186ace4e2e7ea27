"""Typed ``data`` of every event on the bus, one model per routing key (CONTRACT section 5).

Deploy-chain events share ``DeployChain`` so that whatever stage fails, the failure carries the
version, the callback URL and the per-stage seconds gathered so far.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from relay.events.deploy import DeployRequest


class EventData(BaseModel):
    """Base of every event's data; ``ROUTING_KEY`` is the key it is published under."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ROUTING_KEY: ClassVar[str] = ""


class Repository(EventData):
    full_name: str
    clone_url: str | None = None


class GitRefChange(EventData):
    """A branch or tag moved, normalised across providers (``git.push`` and ``git.tag``)."""

    ROUTING_KEY: ClassVar[str] = "git.push"
    provider: str
    receiver: str
    repository: Repository
    ref: str
    branch: str | None = None
    tag: str | None = None
    before: str
    after: str
    commits: int = 0
    pusher: str | None = None
    created: bool = False
    deleted: bool = False


class GitPush(GitRefChange):
    ROUTING_KEY: ClassVar[str] = "git.push"


class GitTag(GitRefChange):
    ROUTING_KEY: ClassVar[str] = "git.tag"


class GitPing(EventData):
    ROUTING_KEY: ClassVar[str] = "git.ping"
    provider: str
    receiver: str
    summary: dict[str, Any] = Field(default_factory=dict)


class GitOther(EventData):
    """Any other provider event: a compact summary and the original payload."""

    ROUTING_KEY: ClassVar[str] = "git.other"
    provider: str
    receiver: str
    event: str
    action: str | None = None
    repository: Repository | None = None
    summary: dict[str, Any] = Field(default_factory=dict)
    payload: Any = None


class DeployChain(EventData):
    version: str | None = None
    callback_url: str | None = None
    requested_at: datetime | None = None
    stages: dict[str, float] = Field(default_factory=dict, description="Seconds per stage so far.")


class DeployRequested(DeployChain):
    ROUTING_KEY: ClassVar[str] = "deploy.requested"
    request: DeployRequest


class ImagePushed(DeployChain):
    ROUTING_KEY: ClassVar[str] = "image.pushed"
    image: str = Field(description="<registry>/<repo>:<tag>@sha256:<digest>")
    request: DeployRequest
    source_digest: str | None = None
    built: bool = False


class ManifestsCommitted(DeployChain):
    ROUTING_KEY: ClassVar[str] = "manifests.committed"
    commit: str
    paths: list[str]
    image: str | None = None
    deleted: bool = Field(default=False, description="True when the app was removed (teardown).")


class ObjectRef(EventData):
    kind: str
    name: str
    namespace: str


class ReconcileRequested(DeployChain):
    ROUTING_KEY: ClassVar[str] = "reconcile.requested"
    targets: list[ObjectRef] = Field(default_factory=list)
    requested_at_value: str | None = Field(default=None, description="The annotation value set.")
    commit: str | None = None
    trigger: str = "manifests.committed"
    skipped: str | None = None
    suspended: list[ObjectRef] = Field(default_factory=list)
    requested_at_values: dict[str, str] = Field(
        default_factory=dict,
        description='The value set per target ("Kind/namespace/name"); coalesced targets differ.',
    )
    missing: list[ObjectRef] = Field(
        default_factory=list, description="Named targets that do not exist (not patched)."
    )


class ReconcileCompleted(DeployChain):
    ROUTING_KEY: ClassVar[str] = "reconcile.completed"
    commit: str | None = None
    revision: str | None = None
    image: str | None = None
    deleted: bool = False
    skipped: str | None = None


class DeployReady(DeployChain):
    ROUTING_KEY: ClassVar[str] = "deploy.ready"
    url: str | None = None
    image: str | None = None
    commit: str | None = None
    skipped: str | None = None


class DeployFailed(DeployChain):
    ROUTING_KEY: ClassVar[str] = "deploy.failed"
    stage: str
    reason: str
    detail: str


class AppDeleteRequested(DeployChain):
    ROUTING_KEY: ClassVar[str] = "app.delete.requested"


class AppDeleted(DeployChain):
    ROUTING_KEY: ClassVar[str] = "app.deleted"
    commit: str | None = None
    skipped: str | None = None


class FluxObject(EventData):
    model_config = ConfigDict(extra="allow", frozen=True)
    kind: str
    name: str
    namespace: str | None = None


class FluxEvent(EventData):
    ROUTING_KEY: ClassVar[str] = "flux.event"
    receiver: str
    involved_object: FluxObject
    severity: str
    reason: str
    message: str
    revision: str | None = None
    reporting_controller: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    timestamp: datetime | None = None


class RegistryPush(EventData):
    ROUTING_KEY: ClassVar[str] = "registry.push"
    receiver: str
    registry_event_id: str
    repository: str
    tag: str | None = None
    digest: str
    media_type: str | None = None
    url: str | None = None
    actor: str | None = None
    source: str | None = None


DATA_MODELS: dict[str, type[EventData]] = {
    m.ROUTING_KEY: m
    for m in (
        GitPush,
        GitTag,
        GitPing,
        DeployRequested,
        ImagePushed,
        ManifestsCommitted,
        ReconcileRequested,
        ReconcileCompleted,
        DeployReady,
        DeployFailed,
        AppDeleteRequested,
        AppDeleted,
        FluxEvent,
        RegistryPush,
    )
}


def model_for(routing_key: str) -> type[EventData] | None:
    """The data model of a routing key; other ``git.<event>`` keys share ``GitOther``."""
    found = DATA_MODELS.get(routing_key)
    if found is None and routing_key.startswith("git."):
        return GitOther
    return found
