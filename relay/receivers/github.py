"""GitHub: ``X-Hub-Signature-256`` (falling back to the legacy ``X-Hub-Signature``), JSON or form.

Pushes become ``git.push`` / ``git.tag``; ``ping`` answers 200; every other event is published as
``git.<event>``. ``X-GitHub-Delivery`` stays the same on a redelivery, so it keys duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.events.data import GitPing, Repository
from relay.receivers.base import (
    FORM_TYPE,
    Headers,
    ParsedEvent,
    Provider,
    Receiver,
    dig,
    load_object,
    need_text,
    other_event,
    ref_change,
    text,
)
from relay.signing import HEX_ALGORITHMS, SignatureError, verify_prefixed

SHA256_ONLY = frozenset({"sha256"})
LEGACY = HEX_ALGORITHMS & {"sha1", "sha256", "sha512"}


def event_name(headers: Headers) -> str:
    return headers.get("X-GitHub-Event", "")


def delivery_id(headers: Headers) -> str | None:
    return headers.get("X-GitHub-Delivery") or None


def verify(headers: Headers, raw_body: bytes, secrets: Sequence[str]) -> None:
    modern = headers.get("X-Hub-Signature-256")
    if modern:
        verify_prefixed(raw_body, modern, secrets, allowed=SHA256_ONLY)
        return
    legacy = headers.get("X-Hub-Signature")
    if not legacy:
        raise SignatureError("missing_signature", "X-Hub-Signature-256 is required")
    verify_prefixed(raw_body, legacy, secrets, allowed=LEGACY)


def repository(payload: dict[str, object]) -> Repository | None:
    name = dig(payload, "repository.full_name")
    if not isinstance(name, str):
        return None
    return Repository(full_name=name, clone_url=text(dig(payload, "repository.clone_url")))


def parse(headers: Headers, raw_body: bytes, receiver: Receiver) -> list[ParsedEvent]:
    payload = load_object(headers, raw_body)
    event = event_name(headers) or "unknown"
    delivery = delivery_id(headers)
    if event == "ping":
        return [ping(payload, receiver, delivery, provider="github")]
    if event == "push":
        return [push(payload, receiver, delivery, provider="github", event=event)]
    return [
        other_event(
            provider="github",
            receiver=receiver,
            event=event,
            payload=payload,
            repository=repository(payload),
            dedupe_key=delivery,
        )
    ]


def push(
    payload: dict[str, object],
    receiver: Receiver,
    delivery: str | None,
    *,
    provider: str,
    event: str,
) -> ParsedEvent:
    """A GitHub-shaped push body (GitHub, Gitea, Forgejo, generic receivers)."""
    repo = repository(payload) or Repository(full_name=need_text(payload, "repository.full_name"))
    commits = dig(payload, "total_commits")
    if not isinstance(commits, int):
        listed = dig(payload, "commits", [])
        commits = len(listed) if isinstance(listed, list) else 0
    pusher = next(
        (v for k in ("name", "login", "username") if (v := dig(payload, f"pusher.{k}"))), None
    )
    return ref_change(
        provider=provider,
        receiver=receiver,
        repository=repo,
        ref=need_text(payload, "ref"),
        before=need_text(payload, "before"),
        after=need_text(payload, "after"),
        commits=commits,
        pusher=pusher if isinstance(pusher, str) else None,
        event=event,
        dedupe_key=delivery,
    )


def ping(
    payload: dict[str, object], receiver: Receiver, delivery: str | None, *, provider: str
) -> ParsedEvent:
    summary: dict[str, object] = {k: payload[k] for k in ("zen", "hook_id") if k in payload}
    name = dig(payload, "repository.full_name")
    if isinstance(name, str):
        summary["repository"] = name
    data = GitPing(provider=provider, receiver=receiver.name, summary=summary)
    return ParsedEvent(
        routing_key=data.ROUTING_KEY,
        data=data,
        event="ping",
        dedupe_key=delivery,
        ping=True,
        essential=False,
    )


PROVIDER = Provider(
    name="github",
    content_types=frozenset({"application/json", FORM_TYPE}),
    event_name=event_name,
    delivery_id=delivery_id,
    verify=verify,
    parse=parse,
)
