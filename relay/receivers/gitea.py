"""Gitea and Forgejo: a bare hex HMAC-SHA256 of the body, GitHub-shaped payloads.

Their delivery id changes with every attempt, so a redelivered push is recognised by what it
moved (repository, ref, after) and any other event by the digest of its body.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from relay.receivers import github
from relay.receivers.base import (
    FORM_TYPE,
    Headers,
    ParsedEvent,
    Provider,
    Receiver,
    body_digest,
    dig,
    load_object,
    other_event,
)
from relay.signing import SignatureError, verify_hex


def _first(headers: Headers, *names: str) -> str | None:
    return next((headers[n] for n in names if headers.get(n)), None)


def _make(name: str, prefixes: tuple[str, ...]) -> Provider:
    def event_name(headers: Headers) -> str:
        return _first(headers, *(f"X-{p}-Event" for p in prefixes)) or ""

    def delivery_id(headers: Headers) -> str | None:
        return _first(headers, *(f"X-{p}-Delivery" for p in prefixes))

    def verify(headers: Headers, raw_body: bytes, secrets: Sequence[str]) -> None:
        given = _first(headers, *(f"X-{p}-Signature" for p in prefixes))
        if not given:
            raise SignatureError("missing_signature", f"X-{prefixes[0]}-Signature is required")
        verify_hex(raw_body, given, secrets)

    def parse(headers: Headers, raw_body: bytes, receiver: Receiver) -> list[ParsedEvent]:
        payload = load_object(headers, raw_body)
        event = event_name(headers) or "unknown"
        if event == "push":
            found = github.push(payload, receiver, None, provider=name, event=event)
            key = f"{found.subject}:{dig(payload, 'ref')}:{dig(payload, 'after')}"
            return [_with_key(found, key)]
        return [
            other_event(
                provider=name,
                receiver=receiver,
                event=event,
                payload=payload,
                repository=github.repository(payload),
                dedupe_key=body_digest(raw_body),
            )
        ]

    return Provider(
        name=name,
        content_types=frozenset({"application/json", FORM_TYPE}),
        event_name=event_name,
        delivery_id=delivery_id,
        verify=verify,
        parse=parse,
    )


def _with_key(event: ParsedEvent, key: str) -> ParsedEvent:
    return replace(event, dedupe_key=key)


GITEA = _make("gitea", ("Gitea",))
FORGEJO = _make("forgejo", ("Forgejo", "Gitea"))
