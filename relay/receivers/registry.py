"""Docker distribution (registry v2) notification envelopes, ``Authorization: Bearer``.

Each manifest push (by tag or digest) becomes one ``registry.push``; layer pushes, pulls,
mounts and deletes are answered 200 and not published. The registry retries any 4xx answer
forever and blocks the endpoint meanwhile, so everything accepted, duplicate or ignored is 2xx.
"""

from __future__ import annotations

from typing import Any

from relay.events.data import RegistryPush
from relay.receivers.base import (
    Headers,
    ParsedEvent,
    PayloadError,
    Provider,
    Receiver,
    dig,
    load_object,
)
from relay.receivers.generic import verify_bearer

MEDIA_TYPE = "application/vnd.docker.distribution.events.v2+json"


def _is_manifest_push(event: Any) -> bool:
    if not isinstance(event, dict) or event.get("action") != "push":
        return False
    media = str(dig(event, "target.mediaType", ""))
    return bool(dig(event, "target.tag")) or "manifest" in media or "image.index" in media


def _push(event: dict[str, Any], receiver: Receiver) -> ParsedEvent:
    repository, digest = dig(event, "target.repository"), dig(event, "target.digest")
    if not isinstance(repository, str) or not isinstance(digest, str) or not event.get("id"):
        raise PayloadError("a push event needs id, target.repository and target.digest")
    data = RegistryPush(
        receiver=receiver.name,
        registry_event_id=str(event["id"]),
        repository=repository,
        tag=dig(event, "target.tag"),
        digest=digest,
        media_type=dig(event, "target.mediaType"),
        url=dig(event, "target.url"),
        actor=dig(event, "actor.name"),
        source=dig(event, "source.addr"),
    )
    return ParsedEvent(
        routing_key=data.ROUTING_KEY,
        data=data,
        event="push",
        dedupe_key=f"event:{event['id']}",
        subject=f"{repository}:{data.tag}" if data.tag else f"{repository}@{digest}",
    )


def parse(headers: Headers, raw_body: bytes, receiver: Receiver) -> list[ParsedEvent]:
    events = load_object(headers, raw_body).get("events")
    if not isinstance(events, list):
        raise PayloadError("a notification envelope needs an events list")
    return [_push(e, receiver) for e in events if _is_manifest_push(e)]


PROVIDER = Provider(
    name="registry",
    content_types=frozenset({MEDIA_TYPE, "application/json"}),
    event_name=lambda headers: "",
    delivery_id=lambda headers: None,
    verify=verify_bearer,
    parse=parse,
)
