"""CloudEvents 1.0 envelope and its exact mapping onto AMQP messages.

Body: the structured-mode JSON envelope; content type ``application/cloudevents+json``;
``message_id`` is the CloudEvent ``id``; the routing key is the ``type`` without ``PREFIX``.
``decode`` is the only way a body becomes an event, and it raises ``InvalidEvent`` with a
sentence saying what is wrong.
"""

from __future__ import annotations

import builtins
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from relay.errors import InvalidEvent
from relay.events.data import EventData, model_for

PREFIX = "dev.relay."
CONTENT_TYPE = "application/cloudevents+json"
ROUTING_KEY = re.compile(r"^[a-z][a-z0-9_-]*(\.[a-z0-9_-]+)+$")

D = TypeVar("D", bound=EventData)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 structured-mode envelope with the relay's two extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    specversion: str = Field(default="1.0", pattern=r"^1\.0$")
    id: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1)
    type: str = Field(min_length=len(PREFIX) + 1)
    subject: str | None = None
    time: datetime
    datacontenttype: str = "application/json"
    data: dict[str, Any]
    deploymentid: str | None = None
    app: str | None = None

    @property
    def routing_key(self) -> str:
        return self.type.removeprefix(PREFIX)

    def payload(self, model: builtins.type[D]) -> D:
        """The data validated as ``model`` (raises ``InvalidEvent``)."""
        try:
            return model.model_validate(self.data)
        except ValidationError as exc:
            raise InvalidEvent(f"{self.routing_key} data is invalid: {_first(exc)}") from None


def new_event(
    data: EventData,
    *,
    source: str,
    routing_key: str | None = None,
    subject: str | None = None,
    deploymentid: str | None = None,
    app: str | None = None,
    event_id: str | None = None,
) -> CloudEvent:
    """Build an envelope for ``data``; ``routing_key`` is needed only for ``git.<other>``."""
    key = routing_key or data.ROUTING_KEY
    if not ROUTING_KEY.fullmatch(key):
        raise ValueError(f"not a routing key: {key!r}")
    return CloudEvent(
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=PREFIX + key,
        subject=subject,
        time=datetime.now(UTC),
        data=data.model_dump(mode="json", exclude_none=True),
        deploymentid=deploymentid,
        app=app,
    )


def encode(event: CloudEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def decode(
    body: bytes, *, routing_key: str | None = None, message_id: str | None = None
) -> CloudEvent:
    """Parse and validate a message body; the AMQP properties must agree with it."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidEvent(f"body is not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise InvalidEvent("body is not a JSON object")
    try:
        event = CloudEvent.model_validate(raw)
    except ValidationError as exc:
        raise InvalidEvent(f"not a CloudEvent: {_first(exc)}") from None
    if not event.type.startswith(PREFIX) or not ROUTING_KEY.fullmatch(event.routing_key):
        raise InvalidEvent(f"type {event.type!r} is not a relay event type")
    if routing_key is not None and routing_key != event.routing_key:
        raise InvalidEvent(f"routing key {routing_key!r} does not match type {event.type!r}")
    if message_id is not None and message_id != event.id:
        raise InvalidEvent(f"message_id {message_id!r} does not match id {event.id!r}")
    model = model_for(event.routing_key)
    if model is None:
        raise InvalidEvent(f"unknown event type {event.type!r}")
    event.payload(model)
    return event


def _first(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(p) for p in err["loc"]) or "(body)"
    return f"{where}: {err['msg']}"
