"""How to read a Flux object's status: has it handled our request, fetched or applied the
commit, or failed? (CONTRACT section 7; PROTOCOLS 3.1, as ``flux reconcile`` and kstatus do.)

Pure functions over the object's JSON, so that the rules are tested without any server.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from relay.kube.base import Obj, condition, meta, spec_of, status_of

REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"
# Ready=False with these reasons means "still working on it", not "failed".
TRANSIENT_REASONS = frozenset({"Progressing", "ProgressingWithRetry", "DependencyNotReady"})
_OUR_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z$")
_last_ns = 0


def requested_at_now() -> str:
    """A fresh RFC 3339 timestamp with nanoseconds, strictly later than the previous one."""
    global _last_ns  # noqa: PLW0603 - one process-wide monotonic sequence
    now = max(time.time_ns(), _last_ns + 1)
    _last_ns = now
    seconds, nanos = divmod(now, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def annotation_patch(value: str) -> dict[str, object]:
    return {"metadata": {"annotations": {REQUESTED_AT: value}}}


def handled_since(obj: Obj | None, value: str) -> bool:
    """Whether the object handled our request: ``lastHandledReconcileAt`` is ours or later.

    A later value counts because a coalesced patch after ours supersedes it; values in any other
    format (set by someone else) must match exactly.
    """
    handled = status_of(obj).get("lastHandledReconcileAt")
    if not isinstance(handled, str):
        return False
    if handled == value:
        return True
    return bool(_OUR_FORMAT.match(handled) and _OUR_FORMAT.match(value) and handled > value)


def revision_has(revision: str | None, commit: str) -> bool:
    """Whether a Flux revision (``main@sha1:<sha>``, or the older ``main/<sha>``) is ``commit``."""
    if not revision or not commit:
        return False
    sha = re.split(r"[:/]", revision)[-1].lower()
    wanted = commit.lower()
    return len(wanted) >= 7 and (sha == wanted or sha.startswith(wanted) or wanted.startswith(sha))


def suspended(obj: Obj | None) -> bool:
    return spec_of(obj).get("suspend") is True


@dataclass(frozen=True)
class Waiting:
    why: str


@dataclass(frozen=True)
class Done:
    revision: str


@dataclass(frozen=True)
class Failed:
    message: str


Verdict = Waiting | Done | Failed


def source_verdict(obj: Obj | None, value: str, commit: str) -> Verdict:
    """A source (GitRepository) has fetched ``commit`` or later, failed, or is still working."""
    if obj is None:
        return Waiting("the source does not exist")
    revision = str((status_of(obj).get("artifact") or {}).get("revision") or "")
    failure = failure_of(obj, value)
    if revision_has(revision, commit):
        return Done(revision)
    if failure:
        return Failed(failure)
    if handled_since(obj, value) and _current(obj) and _ready(obj):
        # Fetched after our commit was pushed: the branch head is the commit or a descendant.
        return Done(revision)
    return Waiting(_progress(obj, value, f"fetched {revision or 'nothing yet'}"))


def kustomization_verdict(obj: Obj | None, value: str, commit: str) -> Verdict:
    """An app's Kustomization has applied ``commit`` (or later) and is Ready, or failed."""
    if obj is None:
        return Waiting("the Kustomization does not exist yet")
    applied = str(status_of(obj).get("lastAppliedRevision") or "")
    failure = failure_of(obj, value)
    if failure:
        return Failed(failure)
    has_commit = revision_has(applied, commit) or (handled_since(obj, value) and bool(applied))
    if _ready(obj) and _current(obj) and has_commit:
        return Done(applied)
    return Waiting(_progress(obj, value, f"applied {applied or 'nothing yet'}"))


def failure_of(obj: Obj, value: str) -> str | None:
    """Flux's message when the object failed: Stalled, or Ready=False once our request ran."""
    stalled = condition(obj, "Stalled")
    if stalled and stalled.get("status") == "True":
        return _say(obj, stalled)
    ready = condition(obj, "Ready")
    if not ready or ready.get("status") != "False" or ready.get("reason") in TRANSIENT_REASONS:
        return None
    reconciling = condition(obj, "Reconciling") or {}
    # Reconciling with ProgressingWithRetry: the attempt failed and Flux will try again later.
    busy = (
        reconciling.get("status") == "True" and reconciling.get("reason") != "ProgressingWithRetry"
    )
    if handled_since(obj, value) and _observed(obj) and not busy:
        return _say(obj, ready)
    return None


def _say(obj: Obj, cond: dict[str, object]) -> str:
    md = meta(obj)
    where = f"{obj.get('kind', 'object')} {md.get('namespace')}/{md.get('name')}"
    return f"{where}: {cond.get('reason') or 'Failed'}: {cond.get('message') or 'no message'}"


def _ready(obj: Obj) -> bool:
    ready = condition(obj, "Ready")
    return ready is not None and ready.get("status") == "True"


def _observed(obj: Obj) -> bool:
    """Flux has seen the latest spec (observedGeneration)."""
    generation = meta(obj).get("generation")
    return generation is None or status_of(obj).get("observedGeneration") == generation


def _current(obj: Obj) -> bool:
    """Flux has seen the latest spec and is not mid-reconcile."""
    reconciling = condition(obj, "Reconciling")
    return _observed(obj) and not (reconciling and reconciling.get("status") == "True")


def _progress(obj: Obj, value: str, what: str) -> str:
    handled = "handled our request" if handled_since(obj, value) else "not yet handled our request"
    ready = condition(obj, "Ready") or {}
    state = f"Ready={ready.get('status', 'Unknown')}"
    if ready.get("message"):
        state += f" ({ready.get('reason')}: {ready.get('message')})"
    return f"{handled}; {what}; {state}"
