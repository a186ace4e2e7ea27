"""Which Flux objects a Git push should reconcile (CONTRACT section 3, receiver filters).

- A deleted ref reconciles nothing; a tag reconciles only on receivers with ``tags: true``.
- With ``branches`` globs on the receiver, a push to a matching branch reconciles every target.
- Without them, a target is reconciled only when it tracks the pushed ref: a GitRepository by its
  ``spec.ref`` (``branch``, default ``master``, or ``name``); a Kustomization or HelmRelease by
  the ref of its GitRepository source. Kinds that follow no Git ref (OCIRepository, Bucket) are
  reconciled on every push, as they cannot be told apart.
- ``name: "*"`` selects the objects of that kind matching ``match_labels``, as Flux's Receiver does.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable

from relay.events.data import GitRefChange
from relay.kube.base import GITREPOSITORIES, Obj, spec_of
from relay.settings import ReceiverSettings

DEFAULT_BRANCH = "master"  # source-controller's default when spec.ref is absent

Lookup = Callable[[str, str], Obj | None]  # (namespace, name) of a GitRepository -> object


def ignore_reason(receiver: ReceiverSettings, push: GitRefChange) -> str | None:
    """Why this push reconciles nothing on this receiver, or None when it may."""
    if not receiver.reconcile:
        return "receiver names no Flux objects"
    if push.deleted:
        return "the ref was deleted"
    if push.tag is not None:
        return None if receiver.tags else "tag pushes are not enabled (tags: false)"
    branch = push.branch or push.ref.removeprefix("refs/heads/")
    if receiver.branches is not None and not any(
        fnmatch.fnmatchcase(branch, glob) for glob in receiver.branches
    ):
        return f"branch {branch} is not subscribed"
    return None


def tracks(obj: Obj, push: GitRefChange, *, receiver: ReceiverSettings, sources: Lookup) -> bool:
    """Whether ``obj`` should be reconciled for ``push`` (see the module docstring)."""
    if push.tag is not None or receiver.branches is not None:
        return True
    kind = str(obj.get("kind", ""))
    if kind == GITREPOSITORIES.kind:
        return _ref_is(spec_of(obj).get("ref"), push)
    source_ref = spec_of(obj).get("sourceRef")
    if isinstance(source_ref, dict) and source_ref.get("kind") == GITREPOSITORIES.kind:
        namespace = str(source_ref.get("namespace") or obj.get("metadata", {}).get("namespace"))
        source = sources(namespace, str(source_ref.get("name")))
        return source is not None and _ref_is(spec_of(source).get("ref"), push)
    return True  # follows no Git ref we can compare (OCI, Bucket, Helm chart sources)


def _ref_is(ref: object, push: GitRefChange) -> bool:
    if not isinstance(ref, dict) or not ref:
        return push.ref == f"refs/heads/{DEFAULT_BRANCH}"
    if ref.get("name"):
        return bool(ref["name"] == push.ref)
    if ref.get("commit") or ref.get("tag") or ref.get("semver"):
        return False  # pinned to a commit or a tag: a branch push changes nothing
    return push.ref == f"refs/heads/{ref.get('branch') or DEFAULT_BRANCH}"
