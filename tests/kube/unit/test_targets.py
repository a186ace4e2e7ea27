"""Which pushes reconcile which Flux objects (CONTRACT 3 receiver filters)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from relay.events.data import GitPush, Repository
from relay.settings import ReceiverSettings
from tests.kube.standins import git_repository, kustomization
from workers.reconcile.targets import ignore_reason, tracks


def receiver(secret_file: Path, **kw: Any) -> ReceiverSettings:
    targets = kw.pop("reconcile", [{"kind": "GitRepository", "name": "flux-system"}])
    return ReceiverSettings(
        name="gh", type="github", secret_file=secret_file, reconcile=targets, **kw
    )


def push(ref: str = "refs/heads/main", **kw: Any) -> GitPush:
    branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
    tag = ref.removeprefix("refs/tags/") if ref.startswith("refs/tags/") else None
    return GitPush(
        provider="github",
        receiver="gh",
        repository=Repository(full_name="o/r"),
        ref=ref,
        branch=branch,
        tag=tag,
        before="0" * 40,
        after="1" * 40,
        **kw,
    )


def test_filters_of_the_receiver(secret_file: Path) -> None:
    assert ignore_reason(receiver(secret_file), push()) is None
    assert (
        ignore_reason(receiver(secret_file, reconcile=[]), push())
        == "receiver names no Flux objects"
    )
    assert ignore_reason(receiver(secret_file), push(deleted=True)) == "the ref was deleted"
    assert "tags: false" in (ignore_reason(receiver(secret_file), push("refs/tags/v1")) or "")
    assert ignore_reason(receiver(secret_file, tags=True), push("refs/tags/v1")) is None
    globbed = receiver(secret_file, branches=["main", "release/*"])
    assert ignore_reason(globbed, push("refs/heads/release/2.0")) is None
    assert (
        ignore_reason(globbed, push("refs/heads/feature/x")) == "branch feature/x is not subscribed"
    )


def no_sources(namespace: str, name: str) -> None:
    return None


def test_without_branches_only_the_tracked_ref_reconciles(secret_file: Path) -> None:
    rx = receiver(secret_file)
    repo = git_repository("flux-system", branch="main")
    assert tracks(repo, push("refs/heads/main"), receiver=rx, sources=no_sources)
    assert not tracks(repo, push("refs/heads/dev"), receiver=rx, sources=no_sources)
    # No spec.ref: source-controller's default branch, master.
    bare = git_repository("flux-system")
    del bare["spec"]["ref"]
    assert tracks(bare, push("refs/heads/master"), receiver=rx, sources=no_sources)
    assert not tracks(bare, push("refs/heads/main"), receiver=rx, sources=no_sources)
    pinned = git_repository("flux-system", ref={"tag": "v1.0.0"})
    assert not tracks(pinned, push("refs/heads/main"), receiver=rx, sources=no_sources)
    named = git_repository("flux-system", ref={"name": "refs/heads/main"})
    assert tracks(named, push("refs/heads/main"), receiver=rx, sources=no_sources)


def test_a_kustomization_follows_its_source_ref(secret_file: Path) -> None:
    rx = receiver(secret_file)
    ks = kustomization("apps", source="flux-system")
    repo = git_repository("flux-system", branch="main")
    sources = lambda ns, name: repo if (ns, name) == ("flux-system", "flux-system") else None  # noqa: E731
    assert tracks(ks, push("refs/heads/main"), receiver=rx, sources=sources)
    assert not tracks(ks, push("refs/heads/other"), receiver=rx, sources=sources)
    assert not tracks(ks, push("refs/heads/main"), receiver=rx, sources=no_sources)


def test_branch_globs_or_tags_reconcile_every_target(secret_file: Path) -> None:
    repo = git_repository("flux-system", branch="main")
    globbed = receiver(secret_file, branches=["*"])
    assert tracks(repo, push("refs/heads/dev"), receiver=globbed, sources=no_sources)
    tagged = receiver(secret_file, tags=True)
    assert tracks(repo, push("refs/tags/v2"), receiver=tagged, sources=no_sources)
