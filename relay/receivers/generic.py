"""Generic receivers: ``generic`` (``Authorization: Bearer <secret>``) and ``generic-hmac``
(``X-Signature: <sha1|sha256|sha512…>=<hex>``, as Flux's generic-hmac provider signs).

A GitHub-shaped push body (``ref``, ``before``, ``after``, ``repository.full_name``) becomes
``git.push`` / ``git.tag``, so a script or CI job can stand in for a Git server; anything else is
published as ``git.<X-Event header, else "webhook">`` with the original payload; an event named
``ping`` is a ping (200).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from relay.receivers import github
from relay.receivers.base import (
    Headers,
    ParsedEvent,
    Provider,
    Receiver,
    dig,
    load_object,
    other_event,
)
from relay.signing import HEX_ALGORITHMS, SignatureError, verify_prefixed, verify_token

DELIVERY_HEADERS = ("Idempotency-Key", "webhook-id", "X-Request-Id", "X-GitHub-Delivery")


def event_name(headers: Headers) -> str:
    return headers.get("X-Event", "") or headers.get("X-GitHub-Event", "")


def delivery_id(headers: Headers) -> str | None:
    return next((headers[n] for n in DELIVERY_HEADERS if headers.get(n)), None)


def verify_bearer(headers: Headers, raw_body: bytes, secrets: Sequence[str]) -> None:
    scheme, _, token = headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignatureError("missing_signature", "Authorization: Bearer <token> is required")
    verify_token(token.strip(), secrets)


def verify_hmac(headers: Headers, raw_body: bytes, secrets: Sequence[str]) -> None:
    given = headers.get("X-Signature")
    if not given:
        raise SignatureError("missing_signature", "X-Signature is required")
    verify_prefixed(raw_body, given, secrets, allowed=HEX_ALGORITHMS)


def _parser(provider: str) -> Callable[[Headers, bytes, Receiver], list[ParsedEvent]]:
    def parse(headers: Headers, raw_body: bytes, receiver: Receiver) -> list[ParsedEvent]:
        payload = load_object(headers, raw_body)
        delivery = delivery_id(headers)
        if event_name(headers) == "ping":
            return [github.ping(payload, receiver, delivery, provider=provider)]
        if all(dig(payload, k) for k in ("ref", "before", "after", "repository.full_name")):
            return [github.push(payload, receiver, delivery, provider=provider, event="push")]
        return [
            other_event(
                provider=provider,
                receiver=receiver,
                event=event_name(headers) or "webhook",
                payload=payload,
                repository=github.repository(payload),
                dedupe_key=delivery,
            )
        ]

    return parse


GENERIC = Provider(
    name="generic",
    content_types=frozenset({"application/json"}),
    event_name=event_name,
    delivery_id=delivery_id,
    verify=verify_bearer,
    parse=_parser("generic"),
)
GENERIC_HMAC = Provider(
    name="generic-hmac",
    content_types=frozenset({"application/json"}),
    event_name=event_name,
    delivery_id=delivery_id,
    verify=verify_hmac,
    parse=_parser("generic-hmac"),
)
