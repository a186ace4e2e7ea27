"""What the notify worker sends: the terminal callback of CONTRACT section 4 and sink messages."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict

from relay.events import CloudEvent

TERMINAL = {"deploy.ready": "ready", "deploy.failed": "failed", "app.deleted": "deleted"}

DEFAULT_TEMPLATE = {
    "ready": "✅ {app} {version} is ready at {url} ({seconds:.1f}s)",
    "failed": "❌ {app} {version} failed at {stage}: {reason}: {detail}",
    "deleted": "🗑 {app} was deleted",
}


class CallbackError(BaseModel):
    model_config = ConfigDict(frozen=True)
    stage: str
    reason: str
    detail: str


class Callback(BaseModel):
    """The body POSTed to a deploy's ``callback_url`` when it ends."""

    model_config = ConfigDict(frozen=True)
    deployment_id: str | None
    app: str | None
    version: str | None
    status: str
    url: str | None
    image: str | None
    commit: str | None
    stages: dict[str, float]
    error: CallbackError | None


def callback_for(event: CloudEvent) -> Callback:
    data = event.data
    status = TERMINAL[event.routing_key]
    error = None
    if status == "failed":
        error = CallbackError(stage=data["stage"], reason=data["reason"], detail=data["detail"])
    return Callback(
        deployment_id=event.deploymentid,
        app=event.app,
        version=data.get("version"),
        status=status,
        url=data.get("url"),
        image=data.get("image"),
        commit=data.get("commit"),
        stages=dict(data.get("stages", {})),
        error=error,
    )


def message_fields(callback: Callback) -> dict[str, Any]:
    err = callback.error
    return {
        "app": callback.app or "",
        "version": callback.version or "",
        "status": callback.status,
        "url": callback.url or "",
        "image": callback.image or "",
        "commit": callback.commit or "",
        "deployment_id": callback.deployment_id or "",
        "stage": err.stage if err else "",
        "reason": err.reason if err else "",
        "detail": err.detail if err else "",
        "seconds": sum(callback.stages.values()),
    }


def render_message(callback: Callback, template: str | None) -> str:
    """The sink's text; a template with an unknown field falls back to the default one."""
    fields = message_fields(callback)
    try:
        return (template or DEFAULT_TEMPLATE[callback.status]).format(**fields)
    except (KeyError, IndexError, ValueError):
        return DEFAULT_TEMPLATE[callback.status].format(**fields)


def sink_body(kind: str, event: CloudEvent, text: str) -> bytes:
    if kind == "slack":
        return json.dumps({"text": text}).encode()
    if kind == "discord":
        return json.dumps({"content": text[:2000]}).encode()
    return json.dumps(
        {"text": text, "event": event.model_dump(mode="json", exclude_none=True)}
    ).encode()
