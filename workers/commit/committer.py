"""Write one batch of ops to the GitOps remote: one commit, one push, no change lost.

For each attempt: bring the working clone to the remote branch, plan the newest op per app
against its tree, commit what changes and push. A push refused because the branch moved (someone
else pushed) starts the next attempt on the new head after a short, growing, jittered pause;
nothing of ours or theirs is lost because every attempt re-applies onto what is there. An op
whose files are already on the remote gets the commit that last touched its folder.

The commit is made from the planned changes (``Tree.plan``); the files are written into the work
tree after the push, in the background, while the deploys are answered. Every ``_GC_EVERY``
pushes ``git gc --auto`` runs in the background too (``git commit`` and ``git fetch`` used to run
it, and each large import leaves a pack of its own). The next batch waits for both first.

The clone is fetched and reset only when it may differ from what the remote had when we last
saw it; right after our own accepted push it is exactly that, so the next batch starts at once.
That is safe because a push is only accepted on top of the remote's head: if someone pushed in
between, ours is refused and the next attempt syncs. A batch with nothing to push proves nothing
about the remote, so when it was read from an unsynced clone it is read again after a sync.
"""

from __future__ import annotations

import asyncio
import random
import shutil
from collections.abc import Sequence
from pathlib import Path

import structlog

from relay.errors import Permanent, Transient
from relay.logging import bind_context
from relay.settings import DeploySettings
from workers.commit.git import GitCommandError, GitRepo, PushRejected
from workers.commit.ops import Applied, Done, Op, newest_per_app, same_request
from workers.commit.tree import Tree

log = structlog.get_logger(__name__)

_SUBJECT_APPS = 3
_GC_EVERY = 20  # pushes between ``git gc --auto`` runs


class Committer:
    """Owns the working clone; ``flush`` is called by the batcher, one batch at a time."""

    def __init__(self, settings: DeploySettings, repo: GitRepo) -> None:
        self.settings = settings
        self.repo = repo
        self.attempts = settings.gitops.push_attempts
        self.pushes = 0
        self._prepared = False
        self._current = False  # the clone is as the remote was at our last fetch or push
        self._since_gc = 0
        self._background: list[asyncio.Task[None]] = []  # writing the tree, git gc

    async def flush(self, ops: list[Op]) -> Sequence[Done | BaseException]:
        winners = newest_per_app(ops)
        with bind_context(worker="commit", stage="commit", batch_size=len(ops)):
            done = await self._write(list(winners.values()))
        return [await self._outcome(op, winners[op.app], done) for op in ops]

    async def _outcome(
        self, op: Op, winner: Op, done: dict[str, Done | BaseException]
    ) -> Done | BaseException:
        if op is winner or same_request(op, winner):
            return done[op.app]
        return await self._superseded(
            op, f"a newer request for app {op.app} ({winner.describe()}) arrived in the same batch"
        )

    async def _superseded(self, op: Op, detail: str) -> Done | BaseException:
        """An op older than what the remote holds for its app. If a commit already names its
        deployment, this is a redelivery of work that was done (a worker died before its ack, or
        an upstream redelivery repeated the event): report that commit, not a failure."""
        sha = await self.repo.commit_naming(op.deployment_id)
        if sha is None:
            return Permanent("superseded", detail)
        log.info("deployment already committed, redelivery answered with its commit", commit=sha)
        return Done(commit=sha, paths=(), changed=False, pushes=0)

    async def _write(self, ops: list[Op]) -> dict[str, Done | BaseException]:
        await self.settle()
        attempt = 1
        while attempt <= self.attempts:
            unsynced = await self._sync()
            self._current = False  # until this attempt ends well
            tree = Tree(self.repo.workdir, self.settings)
            applied = await asyncio.to_thread(tree.plan, ops)
            try:
                sha = await self._commit_and_push(ops, applied, tree)
            except PushRejected as exc:
                log.info("push rejected, retrying on the new head", attempt=attempt, why=str(exc))
                await asyncio.sleep(_backoff(attempt))
                attempt += 1
                continue
            if sha is None and unsynced:
                continue  # nothing pushed: read it again from a clone synced with the remote
            self._current = True
            if sha is not None:  # the work tree follows while the deploys are answered
                self._background.append(asyncio.create_task(self._write_tree(tree)))
            return await self._results(ops, applied, tree, sha, attempt)
        raise Transient(
            "git_push_failed",
            f"the branch {self.repo.branch} of {self.repo.safe_url} kept moving: "
            f"{self.attempts} pushes were refused",
        )

    async def _sync(self) -> bool:
        """Prepare and sync the clone unless it is current (then True: it was not fetched); a
        broken clone is thrown away and made again once."""
        if self._prepared and self._current:
            return True
        try:
            await self._prepare_and_sync()
        except GitCommandError as exc:
            log.warning("working clone unusable, cloning again", error=str(exc))
            await asyncio.to_thread(_wipe, self.repo.workdir)
            self._prepared = False
            try:
                await self._prepare_and_sync()
            except GitCommandError as again:
                raise Transient("git_push_failed", str(again)) from None
        return False

    async def _prepare_and_sync(self) -> None:
        if not self._prepared:
            await self.repo.prepare()
            self._prepared = True
        await self.repo.sync()

    async def _commit_and_push(
        self, ops: list[Op], applied: dict[str, Applied], tree: Tree
    ) -> str | None:
        changed = [op for op in ops if applied[op.app].status == "changed"]
        try:
            sha = await self.repo.commit(commit_message(changed or ops), tree.changes)
        except GitCommandError as exc:
            raise Transient("git_push_failed", str(exc)) from None
        if sha is None:
            return None
        self.pushes += 1
        try:
            await self.repo.push(sha)
        except GitCommandError as exc:
            raise Transient("git_push_failed", str(exc)) from None
        log.info("pushed", commit=sha, apps=[op.app for op in changed], remote=self.repo.safe_url)
        self._since_gc += 1
        if self._since_gc >= _GC_EVERY:
            self._since_gc = 0
            self._background.append(asyncio.create_task(self._gc(), name="commit-gc"))
        return sha

    async def _gc(self) -> None:
        try:
            await self.repo.gc()
        except (GitCommandError, TimeoutError, OSError) as exc:  # pushes work without it
            log.warning("git gc failed", error=str(exc))

    async def _write_tree(self, tree: Tree) -> None:
        """Make the work tree hold what was just pushed (the next batch reads it)."""
        try:
            await asyncio.to_thread(tree.write)
        except OSError as exc:  # the next batch syncs the clone instead
            log.warning("could not write the pushed files into the clone", error=str(exc))
            self._current = False

    async def settle(self) -> None:
        """Wait for the background work on the clone (writing the tree, ``git gc``) to end:
        before the clone is used again, and when the worker stops."""
        while self._background:
            await self._background.pop(0)

    async def _results(
        self, ops: list[Op], applied: dict[str, Applied], tree: Tree, sha: str | None, tries: int
    ) -> dict[str, Done | BaseException]:
        results: dict[str, Done | BaseException] = {}
        for op in ops:
            result = applied[op.app]
            if result.status == "superseded":
                results[op.app] = await self._superseded(op, result.detail)
            elif result.status == "changed" and sha:
                results[op.app] = Done(commit=sha, paths=result.paths, changed=True, pushes=tries)
            else:
                results[op.app] = await self._unchanged(op, tree)
        return results

    async def _unchanged(self, op: Op, tree: Tree) -> Done:
        folder = tree.repo_path(op.app)
        sha = await self.repo.last_commit(folder) or await self.repo.head()
        files = await asyncio.to_thread(_files, tree.app_dir(op.app))
        paths = tuple(sorted(tree.repo_path(op.app, f) for f in files))
        return Done(commit=sha, paths=paths, changed=False, pushes=0)


def commit_message(ops: Sequence[Op]) -> str:
    """Subject naming the apps and versions; one body line per deploy with its deployment id."""
    names = [f"{op.app} {op.version}" if op.version else op.app for op in ops]
    verbs = sorted({op.kind for op in ops})
    shown = ", ".join(names[:_SUBJECT_APPS])
    more = f" (+{len(names) - _SUBJECT_APPS} more)" if len(names) > _SUBJECT_APPS else ""
    subject = f"relay: {' and '.join(verbs)} {shown}{more}"
    body = "\n".join(f"- {op.describe()}" for op in ops)
    return f"{subject}\n\n{body}\n"


def _backoff(attempt: int) -> float:
    base: float = min(0.05 * 2 ** (attempt - 1), 2.0)
    return base * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not a secret


def _files(folder: Path) -> list[str]:
    if not folder.is_dir():
        return []
    return [str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()]


def _wipe(folder: Path) -> None:
    if folder.exists():
        for child in folder.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
