"""``POST /hook/{receiver}``: verify, normalise, filter, deduplicate, publish, answer.

Order matters: the rate limit and content type before reading; the capped body; the signature on
the raw bytes before any parsing; then filters (200 ``ignored``), duplicates (200 ``duplicate``)
and the publish (202 only after the broker confirmed).
"""

from __future__ import annotations

import hashlib
import uuid
from fnmatch import fnmatchcase
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from relay.events import CloudEvent
from relay.gateway.body import read_body, require_media_type
from relay.gateway.errors import NotFound
from relay.gateway.publish import event_for, publish_confirmed
from relay.gateway.state import STATE, GatewayState
from relay.logging import bind_context
from relay.receivers import PROVIDERS, ParsedEvent, PayloadError, Provider, Receiver
from relay.receivers.base import routing_word
from relay.signing import header_bytes

log = structlog.get_logger(__name__)
EVENT_NAMESPACE = uuid.UUID("6b1d3f2e-5f43-4c53-9a7e-2f0c1b7c9e11")


def event_id(receiver: Receiver, event: ParsedEvent) -> str:
    """Stable for a redelivered event (consumers skip ids they saw), random without a key."""
    if event.dedupe_key is None:
        return str(uuid.uuid4())
    # uuid5 over the bytes sent: a delivery header need not be UTF-8 (aiohttp surrogate-escapes)
    name = header_bytes(f"{receiver.name}\n{event.dedupe_key}")
    digest = hashlib.sha1(EVENT_NAMESPACE.bytes + name, usedforsecurity=False).digest()
    return str(uuid.UUID(bytes=digest[:16], version=5))


def excluded(receiver: Receiver, event: ParsedEvent) -> str | None:
    """Why the receiver's filters exclude ``event``, or None."""
    if event.ping:
        return None
    if receiver.events is not None:
        names = {event.event.lower(), routing_word(event.event)}
        if not names & {e.lower() for e in receiver.events}:
            return f"event {event.event!r} is not in this receiver's events"
    branch, globs = event.branch, receiver.branches
    if branch is not None and globs is not None and not any(fnmatchcase(branch, g) for g in globs):
        return f"branch {event.branch!r} matches none of this receiver's branches"
    return None


async def hook(request: web.Request) -> web.Response:
    state = request.app[STATE]
    name = request.match_info["receiver"]
    receiver = state.receivers.get(name)
    if receiver is None:
        raise NotFound(f"no receiver is named {name!r}", code="unknown_receiver")
    state.limit(request, f"hook:{name}")
    provider = PROVIDERS[receiver.type]
    require_media_type(request, provider.content_types)
    http = state.settings.http
    body = await read_body(request, limit=http.max_body_bytes, within=http.read_timeout)
    with bind_context(receiver=name, delivery=provider.delivery_id(request.headers)):
        provider.verify(request.headers, body, receiver.secrets)
        events = _parse(provider, request, body, receiver)
        return await _publish(state, receiver, events)


def _parse(
    provider: Provider, request: web.Request, body: bytes, receiver: Receiver
) -> list[ParsedEvent]:
    """The provider's events; a field of the wrong type for its event model is a bad payload."""
    try:
        return provider.parse(request.headers, body, receiver)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "(body)"
        raise PayloadError(f"the payload does not fit {exc.title}: {where}: {err['msg']}") from None


async def _publish(
    state: GatewayState, receiver: Receiver, events: list[ParsedEvent]
) -> web.Response:
    verdicts = [(e, excluded(receiver, e)) for e in events]
    wanted = [e for e, why in verdicts if why is None]
    reasons = [why for _, why in verdicts if why is not None]
    if not wanted:
        why = reasons[0] if reasons else "nothing in this delivery is published"
        log.info("hook ignored", why=why)
        return web.json_response({"ignored": why})
    published, duplicates, unrouted = await _publish_each(state, receiver, wanted)
    return _answer(wanted, published, duplicates, unrouted)


async def _publish_each(
    state: GatewayState, receiver: Receiver, events: list[ParsedEvent]
) -> tuple[list[str], list[str], list[str]]:
    published: list[str] = []
    duplicates: list[str] = []
    unrouted: list[str] = []
    for parsed in events:
        ident = event_id(receiver, parsed)
        # a delivery's event id is its key: every replica derives the same one (learn_delivery)
        key = ident if parsed.dedupe_key is not None else None
        if key is not None:
            fresh, seen = await state.deliveries.begin(key)
            if not fresh:
                duplicates.append(str(seen))
                continue
        try:
            routed = await _publish_one(state, receiver, parsed, ident)
        except BaseException:
            if key is not None:
                state.deliveries.abandon(key)
            raise
        if key is not None and routed:
            state.deliveries.finish(key, ident)
        elif key is not None:
            state.deliveries.abandon(key)
        (published if routed else unrouted).append(ident if routed else parsed.routing_key)
    return published, duplicates, unrouted


async def _publish_one(
    state: GatewayState, receiver: Receiver, parsed: ParsedEvent, ident: str
) -> bool:
    event = event_for(
        parsed.data,
        source=f"/hook/{receiver.name}",
        routing_key=parsed.routing_key,
        subject=parsed.subject,
        event_id=ident,
    )
    if not await publish_confirmed(state, event, essential=parsed.essential):
        return False
    log.debug("event published", routing_key=parsed.routing_key, event_id=event.id)
    return True


def learn_delivery(state: GatewayState, event: CloudEvent) -> None:
    """A webhook event another replica (or this one) published: its delivery is done."""
    if event.source.startswith("/hook/"):
        state.deliveries.learn(event.id, event.id)


def _answer(
    events: list[ParsedEvent], published: list[str], duplicates: list[str], unrouted: list[str]
) -> web.Response:
    body: dict[str, Any] = {}
    if any(e.ping for e in events):
        body["ping"] = True
    if published:
        body.update(event_id=published[0], event_ids=published)
    if duplicates:
        body.update(duplicate=True, duplicate_event_ids=duplicates)
        body.setdefault("event_id", duplicates[0])
    if unrouted and not published and not duplicates:
        body["ignored"] = f"no consumer is subscribed to {', '.join(sorted(set(unrouted)))}"
    status = 202 if published and not body.get("ping") else 200
    return web.json_response(body, status=status)
