"""GitLab: the ``X-Gitlab-Token`` shared token, or its signing token (Standard Webhooks).

``Push Hook`` and ``Tag Push Hook`` (and system hooks of those kinds) become ``git.push`` /
``git.tag``; other events ``git.<event>`` (``Merge Request Hook`` → ``git.merge_request``).
``Idempotency-Key`` is the same on retries and resends, so it keys duplicates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from relay.events.data import Repository
from relay.receivers.base import (
    Headers,
    ParsedEvent,
    PayloadError,
    Provider,
    Receiver,
    dig,
    load_object,
    need_text,
    other_event,
    ref_change,
    text,
)
from relay.signing import WEBHOOK_SIGNATURE, SignatureError, verify_standard, verify_token

PUSH_KINDS = frozenset({"push", "tag_push"})


def event_name(headers: Headers) -> str:
    return headers.get("X-Gitlab-Event", "")


def delivery_id(headers: Headers) -> str | None:
    for name in ("Idempotency-Key", "webhook-id", "X-Gitlab-Event-UUID"):
        if headers.get(name):
            return headers[name]
    return None


def verify(headers: Headers, raw_body: bytes, secrets: Sequence[str]) -> None:
    if headers.get(WEBHOOK_SIGNATURE):
        verify_standard(headers, raw_body, secrets)
        return
    token = headers.get("X-Gitlab-Token")
    if not token:
        raise SignatureError("missing_signature", "X-Gitlab-Token or webhook-signature needed")
    verify_token(token, secrets)


def repository(payload: dict[str, Any]) -> Repository | None:
    name = dig(payload, "project.path_with_namespace")
    if not isinstance(name, str):
        return None
    clone = dig(payload, "project.git_http_url") or dig(payload, "repository.git_http_url")
    return Repository(full_name=name, clone_url=text(clone))


def parse(headers: Headers, raw_body: bytes, receiver: Receiver) -> list[ParsedEvent]:
    payload = load_object(headers, raw_body)
    event = event_name(headers) or str(payload.get("object_kind") or "unknown")
    delivery = delivery_id(headers)
    if text(payload.get("object_kind")) in PUSH_KINDS:
        repo = repository(payload)
        if repo is None:
            raise PayloadError("the payload has no project.path_with_namespace")
        commits = payload.get("total_commits_count")
        pusher = payload.get("user_username") or payload.get("user_name")
        return [
            ref_change(
                provider="gitlab",
                receiver=receiver,
                repository=repo,
                ref=need_text(payload, "ref"),
                before=need_text(payload, "before"),
                after=need_text(payload, "after"),
                commits=commits if isinstance(commits, int) else 0,
                pusher=pusher if isinstance(pusher, str) else None,
                event=event,
                dedupe_key=delivery,
            )
        ]
    return [
        other_event(
            provider="gitlab",
            receiver=receiver,
            event=event,
            payload=payload,
            repository=repository(payload),
            dedupe_key=delivery,
        )
    ]


PROVIDER = Provider(
    name="gitlab",
    content_types=frozenset({"application/json"}),
    event_name=event_name,
    delivery_id=delivery_id,
    verify=verify,
    parse=parse,
)
