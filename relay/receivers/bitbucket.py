"""Bitbucket Cloud and Bitbucket Server / Data Center: ``X-Hub-Signature: sha256=<hex>``.

The header shares GitHub's name but not its algorithm, so the algorithm comes from the prefix.
A push carries several ref changes; each becomes its own ``git.push`` / ``git.tag`` event.
Server's "Test connection" (``diagnostics:ping``) answers 200.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.events.data import GitPing, Repository
from relay.receivers.base import (
    ZERO_SHA,
    Headers,
    ParsedEvent,
    PayloadError,
    Provider,
    Receiver,
    dig,
    load_object,
    need,
    need_text,
    other_event,
    ref_change,
    text,
)
from relay.signing import SignatureError, verify_prefixed

ALGORITHMS = frozenset({"sha1", "sha256", "sha512"})


def event_name(headers: Headers) -> str:
    return headers.get("X-Event-Key", "")


def verify(headers: Headers, raw_body: bytes, secrets: Sequence[str]) -> None:
    given = headers.get("X-Hub-Signature")
    if not given:
        raise SignatureError("missing_signature", "X-Hub-Signature is required")
    verify_prefixed(raw_body, given, secrets, allowed=ALGORITHMS)


def _cloud_repository(payload: dict[str, Any]) -> Repository | None:
    name = dig(payload, "repository.full_name")
    if not isinstance(name, str):
        return None
    html = dig(payload, "repository.links.html.href")
    return Repository(full_name=name, clone_url=f"{html}.git" if isinstance(html, str) else None)


def _cloud_ref(side: Any) -> tuple[str | None, str]:
    if not isinstance(side, dict):
        return None, ZERO_SHA
    kind = "refs/tags/" if side.get("type") == "tag" else "refs/heads/"
    return kind + str(side.get("name", "")), str(dig(side, "target.hash", ZERO_SHA))


def parse_cloud(headers: Headers, raw_body: bytes, receiver: Receiver) -> list[ParsedEvent]:
    payload = load_object(headers, raw_body)
    event = event_name(headers) or "unknown"
    delivery = headers.get("X-Request-UUID") or None
    repo = _cloud_repository(payload)
    if event != "repo:push":
        return [
            _other(
                "bitbucket",
                receiver=receiver,
                event=event,
                payload=payload,
                repo=repo,
                delivery=delivery,
            )
        ]
    changes = need(payload, "push.changes")
    actor = dig(payload, "actor.username") or dig(payload, "actor.nickname")
    found = []
    for index, change in enumerate(changes if isinstance(changes, list) else []):
        if not isinstance(change, dict):
            raise PayloadError(f"push.changes[{index}] is not an object")
        old_ref, before = _cloud_ref(change.get("old"))
        new_ref, after = _cloud_ref(change.get("new"))
        commits = change.get("commits")
        found.append(
            ref_change(
                provider="bitbucket",
                receiver=receiver,
                repository=repo or Repository(full_name=need_text(payload, "repository.full_name")),
                ref=new_ref or old_ref or need_text(change, "new.name"),
                before=before,
                after=after,
                commits=len(commits) if isinstance(commits, list) else 0,
                pusher=actor if isinstance(actor, str) else None,
                event=event,
                dedupe_key=f"{delivery}:{index}" if delivery else None,
            )
        )
    return found


def _server_repository(repo: Any) -> Repository | None:
    key, slug = dig(repo, "project.key"), dig(repo, "slug")
    if not isinstance(key, str) or not isinstance(slug, str):
        return None
    clones = dig(repo, "links.clone", [])
    http = [
        c.get("href")
        for c in (clones if isinstance(clones, list) else [])
        if isinstance(c, dict) and c.get("name") == "http"
    ]
    return Repository(full_name=f"{key}/{slug}", clone_url=text(http[0]) if http else None)


def parse_server(headers: Headers, raw_body: bytes, receiver: Receiver) -> list[ParsedEvent]:
    payload = load_object(headers, raw_body)
    event = event_name(headers) or "unknown"
    delivery = headers.get("X-Request-Id") or None
    if event == "diagnostics:ping":
        data = GitPing(provider="bitbucket-server", receiver=receiver.name)
        return [
            ParsedEvent(
                routing_key=data.ROUTING_KEY,
                data=data,
                event=event,
                ping=True,
                essential=False,
                dedupe_key=delivery,
            )
        ]
    repo = _server_repository(payload.get("repository"))
    if event != "repo:refs_changed":
        return [
            _other(
                "bitbucket-server",
                receiver=receiver,
                event=event,
                payload=payload,
                repo=repo,
                delivery=delivery,
            )
        ]
    if repo is None:
        raise PayloadError("the payload has no repository.project.key / repository.slug")
    actor = dig(payload, "actor.slug") or dig(payload, "actor.name")
    changes = need(payload, "changes")
    return [
        ref_change(
            provider="bitbucket-server",
            receiver=receiver,
            repository=repo,
            ref=need_text(change, "refId") if "refId" in change else need_text(change, "ref.id"),
            before=str(change.get("fromHash") or ZERO_SHA),
            after=str(change.get("toHash") or ZERO_SHA),
            pusher=actor if isinstance(actor, str) else None,
            event=event,
            dedupe_key=f"{delivery}:{index}" if delivery else None,
        )
        for index, change in enumerate(changes if isinstance(changes, list) else [])
        if isinstance(change, dict)
    ]


def _other(
    provider: str,
    *,
    receiver: Receiver,
    event: str,
    payload: dict[str, Any],
    repo: Repository | None,
    delivery: str | None,
) -> ParsedEvent:
    return other_event(
        provider=provider,
        receiver=receiver,
        event=event,
        payload=payload,
        repository=repo,
        dedupe_key=delivery,
    )


CLOUD = Provider(
    name="bitbucket",
    content_types=frozenset({"application/json"}),
    event_name=event_name,
    delivery_id=lambda h: h.get("X-Request-UUID") or None,
    verify=verify,
    parse=parse_cloud,
)
SERVER = Provider(
    name="bitbucket-server",
    content_types=frozenset({"application/json"}),
    event_name=event_name,
    delivery_id=lambda h: h.get("X-Request-Id") or None,
    verify=verify,
    parse=parse_server,
)
