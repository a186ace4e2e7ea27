"""The deployment projection: events in, one ``Deployment`` per deployment id out.

Applying an event is idempotent (by event id) and order-tolerant enough for redeliveries: ``ready``
and ``deleted`` are never left, and ``failed`` only for a stage event *newer* than the failure,
which is what a ``relay dlq replay`` of the failed work produces (a redelivered older event does
not revive it). Followers (the SSE route, ``relay deploy --wait``) subscribe to one deployment
and get every event from where they say they are, until the end it has reached.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from relay.events import CloudEvent
from relay.metrics import DEPLOYMENTS, IN_FLIGHT, STAGE_SECONDS

TERMINAL_KEYS = frozenset({"deploy.ready", "deploy.failed", "app.deleted"})
TERMINAL_STATUS = frozenset({"ready", "failed", "deleted"})

# routing key -> (stage it finishes, status after it, stage it starts)
TRANSITIONS: dict[str, tuple[str | None, str, str | None]] = {
    "deploy.requested": (None, "building", "build"),
    "image.pushed": ("build", "committing", "commit"),
    "app.delete.requested": (None, "committing", "commit"),
    "manifests.committed": ("commit", "reconciling", "reconcile"),
    "reconcile.completed": ("reconcile", "rolling-out", "rollout"),
    "deploy.ready": ("rollout", "ready", None),
    "app.deleted": ("rollout", "deleted", None),
}


class Stage(BaseModel):
    name: str
    started: datetime
    finished: datetime | None = None
    seconds: float | None = None
    note: str | None = None


class Deployment(BaseModel):
    deployment_id: str
    app: str | None = None
    version: str | None = None
    status: str = "pending"
    stages: list[Stage] = Field(default_factory=list)
    image: str | None = None
    commit: str | None = None
    url: str | None = None
    error: dict[str, str] | None = None
    created: datetime
    updated: datetime

    def public(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def stage(self, name: str) -> Stage | None:
        return next((s for s in reversed(self.stages) if s.name == name), None)


class _Record:
    def __init__(self, deployment: Deployment) -> None:
        self.deployment = deployment
        self.events: list[CloudEvent] = []
        self.changed = asyncio.Event()
        self.failed_at: datetime | None = None

    def resumes(self, event: CloudEvent) -> bool:
        """A stage event after the failure: the failed work was replayed and goes on."""
        return (
            self.deployment.status == "failed"
            and event.routing_key in TRANSITIONS
            and self.failed_at is not None
            and event.time > self.failed_at
        )


class Tracker:
    """In-memory projection of deployments (bounded: the oldest are forgotten first)."""

    def __init__(self, *, capacity: int = 5000) -> None:
        self._capacity = capacity
        self._records: OrderedDict[str, _Record] = OrderedDict()
        self._seen: set[str] = set()

    def apply(self, event: CloudEvent) -> Deployment | None:
        if not event.deploymentid or event.id in self._seen:
            return None
        self._seen.add(event.id)
        record = self._record(event)
        record.events.append(event)
        before = record.deployment.status
        if record.resumes(event):
            record.deployment.status = "resumed"  # not terminal: _advance sets the stage's status
            record.deployment.error = None
        _advance(record.deployment, event)
        if event.routing_key == "deploy.failed":
            record.failed_at = max(event.time, record.failed_at or event.time)
        _count(before, record.deployment)
        record.changed.set()
        record.changed = asyncio.Event()
        return record.deployment

    def _record(self, event: CloudEvent) -> _Record:
        assert event.deploymentid is not None
        record = self._records.get(event.deploymentid)
        if record is None:
            record = _Record(
                Deployment(
                    deployment_id=event.deploymentid,
                    app=event.app,
                    created=event.time,
                    updated=event.time,
                )
            )
            self._records[event.deploymentid] = record
            self._trim()
        return record

    def _trim(self) -> None:
        while len(self._records) > self._capacity:
            _, old = self._records.popitem(last=False)
            self._seen.difference_update(e.id for e in old.events)

    def get(self, deployment_id: str) -> Deployment | None:
        record = self._records.get(deployment_id)
        return record.deployment if record else None

    def list(
        self, *, app: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[Deployment]:
        found = [
            r.deployment
            for r in reversed(self._records.values())
            if (app is None or r.deployment.app == app)
            and (status is None or r.deployment.status == status)
        ]
        found.sort(key=lambda d: d.created, reverse=True)
        return found[offset : offset + limit]

    async def follow(
        self, deployment_id: str, *, after: str | None = None
    ) -> AsyncIterator[CloudEvent]:
        """Every event of a deployment after the one with id ``after``, live, until terminal."""
        sent = 0
        record = self._records.get(deployment_id)
        if record is not None and after is not None:
            ids = [e.id for e in record.events]
            sent = ids.index(after) + 1 if after in ids else 0
        while True:
            record = self._records.get(deployment_id)
            if record is None:
                return
            for event in record.events[sent:]:
                sent += 1
                yield event
                if event.routing_key in TERMINAL_KEYS and sent >= len(record.events):
                    return  # the end so far (a replayed failure goes on with later events)
            if record.deployment.status in TERMINAL_STATUS and sent >= len(record.events):
                return
            await record.changed.wait()


def _count(before: str, deployment: Deployment) -> None:
    after = deployment.status
    if before == after:
        return
    if before == "pending" or (before in TERMINAL_STATUS and after not in TERMINAL_STATUS):
        IN_FLIGHT.inc()
    if after in TERMINAL_STATUS and before not in TERMINAL_STATUS:
        IN_FLIGHT.dec()
        DEPLOYMENTS.labels(after).inc()
        for stage in deployment.stages:
            if stage.seconds is not None:
                STAGE_SECONDS.labels(stage.name).observe(stage.seconds)


def _advance(deployment: Deployment, event: CloudEvent) -> None:
    data = event.data
    deployment.updated = max(deployment.updated, event.time)
    deployment.app = deployment.app or event.app
    deployment.version = deployment.version or data.get("version")
    for key in ("image", "commit", "url"):
        if isinstance(data.get(key), str):
            setattr(deployment, key, data[key])
    if event.routing_key == "deploy.failed":
        _finish_open(deployment, event.time)
        deployment.status = "failed"
        deployment.error = {k: str(data.get(k, "")) for k in ("stage", "reason", "detail")}
        return
    transition = TRANSITIONS.get(event.routing_key)
    if transition is None or deployment.status in TERMINAL_STATUS:
        return
    finishes, status, starts = transition
    if finishes:
        _finish(deployment, finishes, event.time, data.get("skipped"))
    deployment.status = status
    if starts and deployment.stage(starts) is None:
        deployment.stages.append(Stage(name=starts, started=event.time))


def _finish(deployment: Deployment, name: str, when: datetime, note: Any) -> None:
    stage = deployment.stage(name)
    if stage is None or stage.finished is not None:
        return
    stage.finished = when
    stage.seconds = round((when - stage.started).total_seconds(), 3)
    if isinstance(note, str):
        stage.note = f"skipped: {note}"


def _finish_open(deployment: Deployment, when: datetime) -> None:
    for stage in deployment.stages:
        if stage.finished is None:
            _finish(deployment, stage.name, when, None)
