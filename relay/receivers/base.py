"""What every webhook receiver shares: its shape, its results and the push normaliser.

A provider is a ``Provider``: ``verify(headers, raw_body, secrets)`` checks the signature on the
raw bytes before anything is parsed (raising ``SignatureError``), ``parse(headers, raw_body,
receiver)`` turns a verified body into ``ParsedEvent``s (raising ``PayloadError`` for a body that
is not what the provider sends, ``Ignored`` for one with nothing to publish). ``ref_change``
builds the one ``git.push`` / ``git.tag`` shape every provider's pushes become.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.errors import RelayError
from relay.events.data import EventData, GitOther, GitPush, GitTag, Repository

Headers = Mapping[str, str]
ZERO_SHA = "0" * 40
JSON_TYPES = frozenset({"application/json"})
FORM_TYPE = "application/x-www-form-urlencoded"
_NOT_WORD = re.compile(r"[^a-z0-9]+")
TYPED_WORDS = frozenset({"push", "tag", "ping"})  # git.<word> keys whose data has its own model
_SUMMARY_KEYS = ("action", "number", "iid", "ref", "ref_type", "state", "status", "title", "tag")
_NESTED = ("pull_request", "pullrequest", "object_attributes", "release", "workflow_run", "package")


class PayloadError(RelayError):
    """A verified body that is not what the provider sends (HTTP 400)."""


class Ignored(RelayError):
    """A verified body with nothing to publish (HTTP 200 ``ignored``)."""


@dataclass(frozen=True, kw_only=True)
class Receiver:
    """A configured receiver as the gateway uses it (secrets as plain strings, in memory only)."""

    name: str
    type: str
    secrets: tuple[str, ...]
    events: tuple[str, ...] | None = None
    branches: tuple[str, ...] | None = None

    def __repr__(self) -> str:
        return f"Receiver(name={self.name!r}, type={self.type!r}, secrets=<{len(self.secrets)}>)"


@dataclass(frozen=True, kw_only=True)
class ParsedEvent:
    """One event to publish; ``dedupe_key`` is stable across redeliveries of the same event."""

    routing_key: str
    data: EventData
    event: str
    dedupe_key: str | None = None
    subject: str | None = None
    branch: str | None = None
    ping: bool = False
    essential: bool = True


@dataclass(frozen=True, kw_only=True)
class Provider:
    name: str
    content_types: frozenset[str]
    event_name: Callable[[Headers], str]
    delivery_id: Callable[[Headers], str | None]
    verify: Callable[[Headers, bytes, Sequence[str]], None]
    parse: Callable[[Headers, bytes, Receiver], list[ParsedEvent]]


def media_type(headers: Headers) -> str:
    return headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def load_json(raw: bytes) -> Any:
    """The JSON value of a body, or ``PayloadError``: not UTF-8 or not JSON, an integer longer
    than Python converts, or nesting deeper than it parses."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PayloadError(f"the body is not valid JSON: {exc}") from None


def load_object(headers: Headers, raw: bytes) -> dict[str, Any]:
    """The JSON object of a body, from JSON or a form field ``payload=`` (GitHub, Gitea)."""
    if media_type(headers) == FORM_TYPE:
        try:
            fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"), max_num_fields=50)
        except ValueError as exc:
            raise PayloadError(f"the form body is not acceptable: {exc}") from None
        if "payload" not in fields:
            raise PayloadError("a form-encoded body needs a payload= field")
        raw = fields["payload"][0].encode()
    value = load_json(raw)
    if not isinstance(value, dict):
        raise PayloadError("the body is not a JSON object")
    return value


def dig(value: Any, path: str, default: Any = None) -> Any:
    """``dig(payload, "repository.full_name")``; ``default`` when any step is missing."""
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return default
        value = value[part]
    return default if value is None else value


def need(value: Any, path: str) -> Any:
    found = dig(value, path)
    if found is None or found == "":
        raise PayloadError(f"the payload has no {path}")
    return found


def need_text(value: Any, path: str) -> str:
    """Like ``need``, for a field that must be a string."""
    found = need(value, path)
    if not isinstance(found, str):
        raise PayloadError(f"the payload's {path} is not a string")
    return found


def text(value: Any) -> str | None:
    """``value`` if it is a string, else None (an optional field of the wrong type)."""
    return value if isinstance(value, str) else None


def routing_word(name: str) -> str:
    """A provider event name as one routing-key word: ``Merge Request Hook`` → ``merge_request``."""
    word = name.strip().lower()
    word = word.removesuffix(" hook")
    word = _NOT_WORD.sub("_", word).strip("_")[:64]
    return word or "unknown"


def body_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def ref_change(
    *,
    provider: str,
    receiver: Receiver,
    repository: Repository,
    ref: str,
    before: str,
    after: str,
    event: str,
    commits: int = 0,
    pusher: str | None = None,
    dedupe_key: str | None = None,
) -> ParsedEvent:
    """``git.push`` for a branch, ``git.tag`` for a tag; created/deleted from the zero SHA."""
    before, after = before or ZERO_SHA, after or ZERO_SHA
    fields: dict[str, Any] = {
        "provider": provider,
        "receiver": receiver.name,
        "repository": repository,
        "ref": ref,
        "before": before,
        "after": after,
        "commits": commits,
        "pusher": pusher or None,
        "created": set(before) == {"0"},
        "deleted": set(after) == {"0"},
    }
    if ref.startswith("refs/tags/"):
        data: EventData = GitTag(**fields, tag=ref.removeprefix("refs/tags/"))
        branch = None
    else:
        branch = ref.removeprefix("refs/heads/")
        data = GitPush(**fields, branch=branch)
    return ParsedEvent(
        routing_key=data.ROUTING_KEY,
        data=data,
        event=event,
        dedupe_key=dedupe_key,
        subject=repository.full_name,
        branch=branch,
    )


def summarise(payload: dict[str, Any]) -> dict[str, Any]:
    """A compact summary of any provider event: its scalar headline fields and who sent it."""
    summary = {k: payload[k] for k in _SUMMARY_KEYS if _scalar(payload.get(k))}
    for nested in _NESTED:
        inner = payload.get(nested)
        if isinstance(inner, dict):
            for key in (*_SUMMARY_KEYS, "id", "name", "conclusion", "merged", "html_url", "url"):
                if _scalar(inner.get(key)):
                    summary.setdefault(f"{nested}.{key}", inner[key])
    for who in ("sender.login", "user.username", "actor.username", "actor.name", "user_username"):
        if _scalar(dig(payload, who)):
            summary.setdefault("sender", dig(payload, who))
    return summary


def other_event(
    *,
    provider: str,
    receiver: Receiver,
    event: str,
    payload: dict[str, Any],
    repository: Repository | None,
    dedupe_key: str | None,
) -> ParsedEvent:
    """Any event that is not a push: ``git.<event>`` with a summary and the original payload.

    An event named like a typed one (``push``, ``tag``, ``ping``) whose payload lacks its fields
    is refused: published as ``git.push`` with other data, every consumer would reject it.
    """
    word = routing_word(event)
    if word in TYPED_WORDS:
        raise PayloadError(f"a {event!r} event needs the payload of one (ref, before, after, ...)")
    action = payload.get("action")
    data = GitOther(
        provider=provider,
        receiver=receiver.name,
        event=event,
        action=action if isinstance(action, str) else None,
        repository=repository,
        summary=summarise(payload),
        payload=payload,
    )
    return ParsedEvent(
        routing_key=f"git.{word}",
        data=data,
        event=event,
        dedupe_key=dedupe_key,
        subject=repository.full_name if repository else None,
        essential=False,
    )


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) and value != ""
