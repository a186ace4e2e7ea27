"""The commit worker end to end: real runtime, memory bus, real Git smart-HTTP server.

Pushes are counted from the server's own access log (every POST to git-receive-pack, accepted
or refused), commits from the bare repository's history.
"""

from __future__ import annotations

import asyncio
import base64
import io
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from relay.events.data import ImagePushed
from tests.commit.conftest import (
    GITOPS_PATH,
    Harness,
    argv_recorder,
    delete_requested,
    image_pushed,
    later,
    make_settings,
    receive_pack_posts,
    relay_commits,
)
from tests.support.gitserver import GitServer
from workers.commit import committer
from workers.commit.render import render_app
from workers.commit.worker import deploy_op

PARENT = f"{GITOPS_PATH}/kustomization.yaml"


def parent_entries(server: GitServer) -> list[str]:
    return list(yaml.safe_load(server.read_file(PARENT) or "{}")["resources"])


def image_of(harness: Harness, app: str) -> str:
    deployment = yaml.safe_load(harness.file(app) or "{}")
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def changed_files(server: GitServer, old: str, new: str) -> list[str]:
    out = server.git("--git-dir", str(server.bare_path), "diff", "--name-only", old, new).stdout
    return out.split()


async def test_one_deploy_lands_on_the_remote(harness: Harness) -> None:
    event = image_pushed("hello", "v1", port=9000, env={"GREETING": "hi"})
    [done] = await harness.run(event)
    assert done.routing_key == "manifests.committed", done.data
    assert done.data["commit"] == harness.server.head()
    assert done.data["image"] == event.data["image"]
    assert done.data["deleted"] is False
    assert set(done.data["stages"]) == {"build", "commit"}
    assert f"{GITOPS_PATH}/hello/app/deployment.yaml" in done.data["paths"]
    assert PARENT in done.data["paths"]
    assert image_of(harness, "hello") == event.data["image"]
    assert parent_entries(harness.server) == ["./hello/ks.yaml"]
    [entry] = harness.server.log(1)
    assert (entry.author_name, entry.author_email) == ("Relay Bot", "relay@example.invalid")
    assert "hello v1" in entry.subject
    assert event.deploymentid and event.deploymentid in entry.body
    assert receive_pack_posts(harness.server) == 1


async def test_twenty_concurrent_deploys_share_few_pushes(harness: Harness) -> None:
    events = [image_pushed(f"app-{i:02d}", "v1") for i in range(20)]
    results = await harness.run(*events)
    failed = [r.data for r in results if r.routing_key != "manifests.committed"]
    assert failed == []
    assert parent_entries(harness.server) == [f"./app-{i:02d}/ks.yaml" for i in range(20)]
    for event, result in zip(events, results, strict=True):
        app = event.app or ""
        assert image_of(harness, app) == event.data["image"]
        assert harness.server.read_file(f"{GITOPS_PATH}/{app}/ks.yaml")
        assert result.data["commit"] in {e.sha for e in harness.server.log(10)}
    pushes = receive_pack_posts(harness.server)
    assert 1 <= pushes <= 5
    assert relay_commits(harness.server) == pushes


def install_foreign_pusher(clone: Path, server: GitServer, marker: Path | None) -> None:
    """A pre-push hook in the worker's clone: someone else pushes first (a real race between
    our commit and our push), once when ``marker`` is given, else every time."""
    hook = clone / ".git" / "hooks" / "pre-push"
    once = f"[ -e '{marker}' ] && exit 0\ntouch '{marker}'" if marker else ""
    hook.write_text(
        f"""#!/bin/sh
{once}
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE GIT_PREFIX GIT_AUTHOR_NAME GIT_AUTHOR_EMAIL
unset GIT_COMMITTER_NAME GIT_COMMITTER_EMAIL
work=$(mktemp -d '{clone.parent}/foreign.XXXXXX')
git clone -q '{server.authed_url()}' "$work" >&2 || exit 0
cd "$work" && mkdir -p other && date +%s%N > other/change.txt && git add -A &&
git -c user.name=Someone -c user.email=someone@example.invalid commit -qm 'foreign change' &&
git push -q origin HEAD:refs/heads/main >&2
exit 0
"""
    )
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR)


async def test_foreign_push_mid_batch_is_retried_and_both_kept(
    harness: Harness, tmp_path: Path
) -> None:
    [first] = await harness.run(image_pushed("warm", "v1"))
    assert first.routing_key == "manifests.committed"
    marker = tmp_path / "foreign-pushed"
    install_foreign_pusher(harness.clone, harness.server, marker)
    events = [image_pushed(f"app{i}", "v1") for i in range(5)]
    results = await harness.run(*events)
    assert marker.exists(), "the foreign push did not run"
    assert [r.routing_key for r in results] == ["manifests.committed"] * 5
    assert harness.server.read_file("other/change.txt")
    for event in events:
        assert image_of(harness, event.app or "") == event.data["image"]
    subjects = [e.subject for e in harness.server.log(5)]
    assert subjects[1] == "foreign change"  # ours went on top of theirs
    # warm-up push, the foreign push, our refused push, our retried push
    assert receive_pack_posts(harness.server) == 4
    assert relay_commits(harness.server) == 2


async def test_a_branch_that_keeps_moving_fails_with_git_push_failed(
    harness_factory: Callable[..., Any], git_server: GitServer, tmp_path: Path
) -> None:
    harness = await harness_factory(gitops={"push_attempts": 2})
    [warm] = await harness.run(image_pushed("warm", "v1"))
    assert warm.routing_key == "manifests.committed"
    install_foreign_pusher(harness.clone, git_server, None)
    [failed] = await harness.run(image_pushed("app", "v1"))
    assert (failed.data["stage"], failed.data["reason"]) == ("commit", "git_push_failed")
    assert "2 pushes were refused" in failed.data["detail"]
    attempts = harness.settings.broker.retry.max_attempts
    assert harness.worker.batcher.batches == 1 + attempts
    # every runtime attempt tried twice, and the other pusher landed each time
    assert receive_pack_posts(git_server) == 1 + attempts * 2 * 2
    assert harness.file("app") is None


async def test_a_push_the_server_declines_is_reported(harness: Harness) -> None:
    hook = harness.server.bare_path / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'branch main is protected' >&2\nexit 1\n")
    hook.chmod(0o755)
    [failed] = await harness.run(image_pushed("app", "v1"))
    assert (failed.data["stage"], failed.data["reason"]) == ("commit", "git_push_failed")
    assert "branch main is protected" in failed.data["detail"]
    assert harness.file("app") is None


async def test_old_after_new_keeps_the_newer(harness: Harness) -> None:
    newer = image_pushed("app", "v2", requested_at=later(10))
    older = image_pushed("app", "v1", requested_at=later(0))
    [done] = await harness.run(newer)
    assert done.routing_key == "manifests.committed"
    [stale] = await harness.run(older)
    assert stale.routing_key == "deploy.failed"
    assert (stale.data["stage"], stale.data["reason"]) == ("commit", "superseded")
    assert image_of(harness, "app") == newer.data["image"]
    assert receive_pack_posts(harness.server) == 1


@pytest.mark.parametrize("older_first", [True, False])
async def test_old_and_new_in_one_batch_keeps_the_newer(
    harness: Harness, older_first: bool
) -> None:
    newer = image_pushed("app", "v2", requested_at=later(10))
    older = image_pushed("app", "v1", requested_at=later(0))
    events = [older, newer] if older_first else [newer, older]
    results = {r.deploymentid: r for r in await harness.run(*events)}
    assert harness.worker.batcher.batches == 1
    assert results[newer.deploymentid].routing_key == "manifests.committed"
    assert results[older.deploymentid].routing_key == "deploy.failed"
    assert results[older.deploymentid].data["reason"] == "superseded"
    assert image_of(harness, "app") == newer.data["image"]
    assert relay_commits(harness.server) == 1


async def test_redelivered_deploy_makes_no_new_commit(harness: Harness) -> None:
    first = image_pushed("app", "v1", deployment_id="dep-1")
    [done] = await harness.run(first)
    # The same request again, as after a crash between push and ack (a new message id).
    again = image_pushed("app", "v1", deployment_id="dep-1")
    other = image_pushed("other", "v1")
    await harness.run(other)
    [repeat] = await harness.run(again)
    assert repeat.routing_key == "manifests.committed"
    assert repeat.data["commit"] == done.data["commit"]  # the commit holding the app
    assert repeat.data["commit"] != harness.server.head()
    assert receive_pack_posts(harness.server) == 2
    assert sorted(repeat.data["paths"]) == sorted(p for p in done.data["paths"] if p != PARENT)


@pytest.mark.parametrize("same_batch", [False, True])
async def test_redelivery_after_a_newer_deploy_reports_its_commit(
    harness: Harness, same_batch: bool
) -> None:
    """A deploy committed, then a newer version of its app, then the first one's event again (a
    build worker killed before its ack publishes image.pushed twice): the first deployment was
    committed, so it is reported committed, not failed as superseded."""
    first = image_pushed("app", "v1", requested_at=later(0), deployment_id="dep-first")
    [done] = await harness.run(first)
    newer = image_pushed("app", "v2", requested_at=later(10))
    again = image_pushed("app", "v1", requested_at=later(0), deployment_id="dep-first")
    if same_batch:
        results = {r.deploymentid: r for r in await harness.run(newer, again)}
        repeat = results["dep-first"]
        assert results[newer.deploymentid].routing_key == "manifests.committed"
    else:
        await harness.run(newer)
        [repeat] = await harness.run(again)
    assert repeat.routing_key == "manifests.committed", repeat.data
    assert repeat.data["commit"] == done.data["commit"]
    assert image_of(harness, "app") == newer.data["image"]
    assert relay_commits(harness.server) == 2


async def test_deleting_one_app_touches_no_other(harness: Harness) -> None:
    await harness.run(*(image_pushed(app, "v1") for app in ("a", "b", "c")))
    files = {f for f in harness.server.list_files() if f.startswith(GITOPS_PATH)}
    before = {f: harness.server.read_file(f) for f in files}
    head = harness.server.head()
    [gone] = await harness.run(delete_requested("b", requested_at=later(60)))
    assert gone.routing_key == "manifests.committed"
    assert gone.data["deleted"] is True
    assert gone.data["commit"] == harness.server.head()
    changed = changed_files(harness.server, head, gone.data["commit"])
    assert PARENT in changed
    assert all(f == PARENT or f.startswith(f"{GITOPS_PATH}/b/") for f in changed)
    assert parent_entries(harness.server) == ["./a/ks.yaml", "./c/ks.yaml"]
    for f, body in before.items():
        if f != PARENT and f"{GITOPS_PATH}/b/" not in f:
            assert harness.server.read_file(f) == body
    assert harness.file("b") is None
    # Deleting again finds nothing to do: no push, the deleting commit is reported.
    [again] = await harness.run(delete_requested("b", requested_at=later(61)))
    assert again.data["deleted"] is True
    assert again.data["commit"] == gone.data["commit"]
    assert receive_pack_posts(harness.server) == 2


async def test_delete_older_than_the_deploy_is_superseded(harness: Harness) -> None:
    await harness.run(image_pushed("app", "v1", requested_at=later(10)))
    [stale] = await harness.run(delete_requested("app", requested_at=later(5)))
    assert (stale.routing_key, stale.data["reason"]) == ("deploy.failed", "superseded")
    assert harness.file("app") is not None


async def test_git_server_down_retries_then_fails(harness: Harness) -> None:
    harness.server.stop()
    event = image_pushed("app", "v1")
    [failed] = await harness.run(event)
    assert failed.routing_key == "deploy.failed"
    assert (failed.data["stage"], failed.data["reason"]) == ("commit", "git_unreachable")
    assert harness.server.url in failed.data["detail"]
    assert harness.worker.batcher.batches == harness.settings.broker.retry.max_attempts
    [dead] = await harness.bus.dead_letters()
    assert dead.attempts == harness.settings.broker.retry.max_attempts
    harness.server.start()  # same port, same repository: the next deploy goes through
    [done] = await harness.run(image_pushed("app", "v2"))
    assert done.routing_key == "manifests.committed"


async def test_wrong_credentials_fail_at_once_and_leak_nothing(
    harness_factory: Callable[..., Any],
    git_server: GitServer,
    tmp_path: Path,
    captured_logs: io.StringIO,
) -> None:
    wrong = "wrong-" + git_server.password[::-1]
    token_file = tmp_path / "wrong-token"
    token_file.write_text(wrong + "\n")
    git, argv_log = argv_recorder(tmp_path)
    settings = make_settings(git_server, tmp_path, token_file=token_file)
    harness = await harness_factory(settings, git=git)
    [failed] = await harness.run(image_pushed("app", "v1"))
    assert (failed.data["stage"], failed.data["reason"]) == ("commit", "git_auth_failed")
    assert harness.worker.batcher.batches == 1  # permanent: not retried
    assert f"refused the credentials of user {git_server.username!r}" in failed.data["detail"]
    basic = base64.b64encode(f"{git_server.username}:{wrong}".encode()).decode()
    logs = captured_logs.getvalue()
    assert "git_auth_failed" in logs  # the capture did see the failure being logged
    argv = argv_log.read_text()
    assert "fetch" in argv
    clone_config = (harness.clone / ".git" / "config").read_text()
    dead = [d.error for d in await harness.bus.dead_letters()]
    for secret in (wrong, basic):
        assert secret not in logs
        assert secret not in argv
        assert secret not in clone_config
        assert secret not in failed.data["detail"]
        assert all(secret not in e for e in dead)


async def test_credentials_in_the_url_are_moved_out_of_it(
    harness_factory: Callable[..., Any], git_server: GitServer, tmp_path: Path
) -> None:
    git, argv_log = argv_recorder(tmp_path)
    settings = make_settings(
        git_server,
        tmp_path,
        gitops={"url": git_server.authed_url(), "token_file": None, "username": "ignored"},
    )
    harness = await harness_factory(settings, git=git)
    [done] = await harness.run(image_pushed("app", "v1"))
    assert done.routing_key == "manifests.committed", done.data
    assert git_server.password not in argv_log.read_text()
    config = (harness.clone / ".git" / "config").read_text()
    assert git_server.password not in config
    assert git_server.url in config


async def test_without_a_gitops_url_deploys_fail_and_the_rest_runs(
    harness_factory: Callable[..., Any],
) -> None:
    harness = await harness_factory(gitops={"url": ""})
    [failed] = await harness.run(image_pushed("app", "v1"))
    assert (failed.data["reason"], failed.routing_key) == ("gitops_not_configured", "deploy.failed")
    assert "deploy.gitops.url" in failed.data["detail"]


async def test_first_commit_on_a_branch_that_does_not_exist_yet(harness: Harness) -> None:
    server = harness.server
    server.git("--git-dir", str(server.bare_path), "update-ref", "-d", "refs/heads/main")
    [done] = await harness.run(image_pushed("app", "v1"))
    assert done.routing_key == "manifests.committed", done.data
    [root] = server.log(5)
    assert root.sha == done.data["commit"]
    assert server.read_file("README.md") is None


async def test_hand_written_parent_entries_and_apps_are_kept(harness: Harness) -> None:
    hand = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
    await asyncio.to_thread(
        harness.server.foreign_push,
        {
            PARENT: hand + "- ./legacy.yaml\n- ./manual/ks.yaml\n- ./vanished/ks.yaml\n",
            f"{GITOPS_PATH}/legacy.yaml": "apiVersion: v1\nkind: ConfigMap\n",
            f"{GITOPS_PATH}/manual/ks.yaml": "kind: Kustomization\n",
        },
        "hand-written apps",
    )
    await harness.run(image_pushed("app", "v1"))
    assert parent_entries(harness.server) == ["./app/ks.yaml", "./legacy.yaml", "./manual/ks.yaml"]


async def test_the_batch_after_our_own_push_starts_without_fetching(
    harness_factory: Callable[..., Any], git_server: GitServer, tmp_path: Path
) -> None:
    git, argv_log = argv_recorder(tmp_path)
    harness = await harness_factory(git=git)
    for app in ("a", "b", "c"):
        [done] = await harness.run(image_pushed(app, "v1"))
        assert done.routing_key == "manifests.committed", done.data
        assert done.data["commit"] == git_server.head()
    commands = [line.split()[0] for line in argv_log.read_text().splitlines()]
    assert commands.count("fetch") == 1  # the first batch only
    assert commands.count("push") == receive_pack_posts(git_server) == 3
    assert "add" not in commands  # one fast-import per batch, no index to refresh
    assert commands.count("fast-import") == 3


async def test_a_foreign_push_between_batches_is_caught_and_kept(
    harness_factory: Callable[..., Any], git_server: GitServer, tmp_path: Path
) -> None:
    git, argv_log = argv_recorder(tmp_path)
    harness = await harness_factory(git=git)
    [first] = await harness.run(image_pushed("a", "v1"))
    foreign = await asyncio.to_thread(
        git_server.foreign_push, {"other/change.txt": "theirs\n"}, "foreign change"
    )
    [second] = await harness.run(image_pushed("b", "v1"))
    assert second.routing_key == "manifests.committed", second.data
    assert git_server.read_file("other/change.txt") == "theirs\n"
    assert harness.file("a") is not None and harness.file("b") is not None
    assert [e.sha for e in git_server.log(3)] == [
        second.data["commit"],
        foreign,
        first.data["commit"],
    ]
    commands = [line.split()[0] for line in argv_log.read_text().splitlines()]
    # the second batch pushed from the clone as it was, was refused (by git itself, from the
    # remote's refs: nothing was sent), fetched and pushed on top of theirs
    assert commands.count("push") == 3 and commands.count("fetch") == 2
    assert receive_pack_posts(git_server) == 3


async def test_nothing_is_reported_unchanged_from_a_stale_clone(harness: Harness) -> None:
    """A redelivery finds its files in the clone as it pushed them; meanwhile someone changed
    them on the remote. It must not be answered 'unchanged' from the clone: it is written
    again on top of the remote's head."""
    event = image_pushed("app", "v1", deployment_id="dep-1")
    [done] = await harness.run(event)
    path = f"{GITOPS_PATH}/app/app/deployment.yaml"
    edited = (harness.server.read_file(path) or "").replace("replicas: 1", "replicas: 3")
    assert "replicas: 3" in edited
    await asyncio.to_thread(harness.server.foreign_push, {path: edited}, "scale by hand")
    [again] = await harness.run(image_pushed("app", "v1", deployment_id="dep-1"))
    assert again.routing_key == "manifests.committed", again.data
    assert again.data["commit"] == harness.server.head() != done.data["commit"]
    assert "replicas: 1" in (harness.file("app") or "")
    assert receive_pack_posts(harness.server) == 3  # ours, theirs, ours (fetched first)


async def test_bytes_git_already_holds_make_no_commit(
    harness_factory: Callable[..., Any], git_server: GitServer, tmp_path: Path
) -> None:
    """With ``eol=crlf`` the checked-out files differ from the rendered bytes, but the blobs
    are the same: the commit made from them changes nothing, is taken back and not pushed."""
    git, argv_log = argv_recorder(tmp_path)
    harness = await harness_factory(git=git)
    attributes = {".gitattributes": "*.yaml text eol=crlf\n"}
    await asyncio.to_thread(git_server.foreign_push, attributes, "crlf checkouts")
    [done] = await harness.run(image_pushed("app", "v1", deployment_id="dep-1"))
    head = git_server.head()
    assert done.data["commit"] == head
    [again] = await harness.run(image_pushed("app", "v1", deployment_id="dep-1"))
    assert again.routing_key == "manifests.committed", again.data
    assert again.data["commit"] == head == git_server.head()
    assert relay_commits(git_server) == 1
    assert receive_pack_posts(git_server) == 2  # theirs and our first
    commands = [line.split()[0] for line in argv_log.read_text().splitlines()]
    # the redelivery found its files as it wrote them (unsynced, so it fetched and looked
    # again), then CRLF copies that it wrote back as LF: a commit equal to its parent
    assert commands.count("fast-import") == 2 and commands.count("update-ref") == 1


async def test_the_packs_of_many_batches_are_gathered(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch's commit arrives as a small pack; ``git gc --auto`` runs every few pushes."""
    monkeypatch.setattr(committer, "_GC_EVERY", 3)
    [first] = await harness.run(image_pushed("app0", "v1"))
    assert first.routing_key == "manifests.committed"
    for key, value in (("gc.autoPackLimit", "2"), ("fastimport.unpackLimit", "1")):
        # gc when more than 2 packs; keep even a small import as a pack (not loose objects)
        subprocess.run(["git", "-C", str(harness.clone), "config", key, value], check=True)
    packs = harness.clone / ".git" / "objects" / "pack"
    for n in range(1, 6):
        [done] = await harness.run(image_pushed(f"app{n}", "v1"))
        assert done.routing_key == "manifests.committed"
    assert harness.worker.committer is not None
    await harness.worker.committer.settle()
    assert len(list(packs.glob("*.pack"))) == 1  # not five: gathered after the 6th push
    assert [e.subject.split()[2] for e in harness.server.log(6)] == [
        f"app{n}" for n in range(5, -1, -1)
    ]


async def test_a_large_batch_is_pushed_as_one_compact_pack(harness: Harness) -> None:
    """A 30-app commit is one pack in the clone: nearly every file a delta of the same file of
    another app, in chains no longer than ten."""
    committer = harness.worker.committer
    assert committer is not None
    events = [image_pushed(f"app-{i:02d}", "v1") for i in range(30)]
    ops = [deploy_op(e, e.payload(ImagePushed), harness.settings.deploy) for e in events]
    results = await committer.flush(ops)
    assert all(not isinstance(r, BaseException) and r.changed for r in results), results
    [pack] = (harness.clone / ".git" / "objects" / "pack").glob("*.idx")
    listing = subprocess.run(
        ["git", "verify-pack", "-v", str(pack)], capture_output=True, text=True, check=True
    ).stdout
    blobs = [line.split() for line in listing.splitlines() if " blob " in line]
    depths = [int(fields[5]) for fields in blobs if len(fields) >= 7]  # deltas: depth, base
    bodies = {
        b for op in ops if op.spec for b in render_app(op.spec, harness.settings.deploy).values()
    }
    assert len(blobs) == len(bodies) + 1  # every distinct file, and the parent kustomization
    assert len(depths) >= len(bodies) * 0.8 and max(depths) <= 10
    assert harness.server.head() == results[0].commit  # type: ignore[union-attr]


def tree_of_head(clone: Path) -> dict[str, bytes]:
    listing = subprocess.run(
        ["git", "-C", str(clone), "ls-tree", "-r", "-z", "HEAD", "--", GITOPS_PATH],
        capture_output=True,
        check=True,
    ).stdout.decode()
    entries = [e.split("\t", 1) for e in listing.split("\0") if e]
    return {
        path: subprocess.run(
            ["git", "-C", str(clone), "cat-file", "blob", meta.split()[2]],
            capture_output=True,
            check=True,
        ).stdout
        for meta, path in entries
    }


async def test_the_clone_holds_what_was_pushed_once_written(harness: Harness) -> None:
    """Files are written into the clone after the push, in the background: once that is done
    the work tree is the pushed tree, folders of deleted apps included."""
    assert harness.worker.committer is not None
    await harness.run(*(image_pushed(app, "v1") for app in ("a", "b", "c")))
    await harness.run(delete_requested("b", requested_at=later(60)), image_pushed("d", "v1"))
    await harness.worker.committer.settle()
    base = harness.clone / GITOPS_PATH
    on_disk = {
        f"{GITOPS_PATH}/{p.relative_to(base).as_posix()}": p.read_bytes()
        for p in base.rglob("*")
        if p.is_file()
    }
    assert on_disk == tree_of_head(harness.clone)
    assert sorted(d.name for d in base.iterdir() if d.is_dir()) == ["a", "c", "d"]
    assert git_head(harness.clone) == harness.server.head()


def git_head(clone: Path) -> str:
    done = subprocess.run(
        ["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()
