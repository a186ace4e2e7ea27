"""Plan a batch of ops against the working tree of the GitOps clone, and write it (file I/O only).

Runs in a thread (``asyncio.to_thread``). ``plan`` reads what is there, skips a request older
than the one already written for the app, keeps only files whose bytes differ, removes an app's
files for a teardown, and renders ``<path>/kustomization.yaml`` from the app folders there will
be, keeping entries that someone else added by hand. It writes nothing: ``changes`` holds every
file to write (with its bytes) or remove (None), by its path in the repository, and the commit is
made from it. ``write`` then makes the work tree match (the worker does that after the push, off
the deploys' path, so that the next batch reads what the remote holds).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import yaml

from relay.settings import DeploySettings
from workers.commit.ops import Applied, Op
from workers.commit.render import (
    format_time,
    load,
    read_requested_at,
    render_app,
    render_parent,
)

PARENT = "kustomization.yaml"


class Tree:
    """The ``<path>`` folder of one working clone."""

    def __init__(self, root: Path, settings: DeploySettings) -> None:
        self.root = root
        self.settings = settings
        self.rel = settings.gitops.path.strip("/")
        self.base = root / self.rel if self.rel else root
        self.changes: dict[str, bytes | None] = {}

    def repo_path(self, *parts: str) -> str:
        return "/".join(p for p in (self.rel, *parts) if p)

    def app_dir(self, app: str) -> Path:
        return self.base / app

    def apply(self, ops: Iterable[Op]) -> dict[str, Applied]:
        """Plan every op and write the result at once."""
        results = self.plan(ops)
        self.write()
        return results

    def plan(self, ops: Iterable[Op]) -> dict[str, Applied]:
        """What every op (at most one per app) changes, into ``changes``; writes nothing."""
        results = {op.app: self._apply_one(op) for op in ops}
        parent_changed = self._plan_parent()
        if parent_changed:
            parent = self.repo_path(PARENT)
            results = {
                app: Applied(status=r.status, paths=(*r.paths, parent), detail=r.detail)
                if r.status == "changed"
                else r
                for app, r in results.items()
            }
        return results

    def write(self) -> None:
        """Make the work tree hold ``changes``: files written, removed ones gone with the
        folders they leave empty."""
        for rel, body in sorted(self.changes.items()):
            path = self.root / rel
            if body is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(body)
                continue
            path.unlink(missing_ok=True)
            folder = path.parent
            while folder != self.base and folder.is_relative_to(self.base):
                if any(folder.iterdir()):
                    break
                folder.rmdir()
                folder = folder.parent

    def _apply_one(self, op: Op) -> Applied:
        existing = self._written_at(op.app)
        if existing is not None and existing > op.requested_at:
            return Applied(
                status="superseded",
                detail=f"a newer request for app {op.app} (requested at "
                f"{format_time(existing)}) is already in the GitOps repository",
            )
        if op.kind == "delete":
            return self._remove(op.app)
        return self._write(op)

    def _written_at(self, app: str) -> datetime | None:
        path = self.app_dir(app) / "app" / "deployment.yaml"
        try:
            return read_requested_at(path.read_bytes())
        except OSError:
            return None

    def _write(self, op: Op) -> Applied:
        assert op.spec is not None
        folder = self.app_dir(op.app)
        files = op.files if op.files is not None else render_app(op.spec, self.settings)
        changed = [name for name, body in files.items() if self._put(folder / name, body)]
        changed += self._remove_others(folder, set(files))
        return Applied(
            status="changed" if changed else "unchanged",
            paths=tuple(self.repo_path(op.app, name) for name in sorted(changed)),
        )

    def _remove(self, app: str) -> Applied:
        folder = self.app_dir(app)
        removed = _files_in(folder)
        if not removed:
            return Applied(status="unchanged")
        self.changes.update((self.repo_path(app, name), None) for name in removed)
        return Applied(status="changed", paths=tuple(self.repo_path(app, name) for name in removed))

    def apps(self) -> list[str]:
        """The app folders there are (a ``ks.yaml`` in them), as ``changes`` will leave them."""
        found: set[str] = set()
        if self.base.is_dir():
            found = {d.name for d in self.base.iterdir() if (d / "ks.yaml").is_file()}
        for path, body in self.changes.items():
            app = path.rsplit("/", 2)[-2] if path.count("/") >= 1 else ""
            if app and path == self.repo_path(app, "ks.yaml"):
                if body is None:
                    found.discard(app)
                else:
                    found.add(app)
        return sorted(found)

    def _plan_parent(self) -> bool:
        apps = self.apps()
        path = self.base / PARENT
        if not apps and not path.exists():
            return False
        return self._put(path, render_parent(apps, self._foreign_entries(path)))

    def _put(self, path: Path, body: bytes) -> bool:
        """Plan ``body`` for ``path`` unless the file already holds exactly it."""
        try:
            if path.read_bytes() == body:
                return False
        except OSError:
            pass
        self.changes[self._in_repo(path)] = body
        return True

    def _remove_others(self, folder: Path, keep: set[str]) -> list[str]:
        """Files in an app's folder the relay no longer renders (e.g. a NetworkPolicy turned
        off)."""
        gone = [name for name in _files_in(folder) if name not in keep]
        self.changes.update((self._in_repo(folder / name), None) for name in gone)
        return gone

    def _in_repo(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def _foreign_entries(self, path: Path) -> list[str]:
        """Entries of the parent that are not an app's ks.yaml (someone added them by hand)."""
        try:
            current = load(path.read_bytes()) or {}
        except (OSError, yaml.YAMLError):
            return []
        resources = current.get("resources") if isinstance(current, dict) else None
        if not isinstance(resources, list):
            return []
        return [
            str(r)
            for r in resources
            if isinstance(r, str) and not (r.startswith("./") and r.endswith("/ks.yaml"))
        ]


def _files_in(folder: Path) -> list[str]:
    """Every file under ``folder``, relative to it, sorted ([] when there is no folder)."""
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
