"""Write a batch of ops into the working tree of the GitOps clone (plain file I/O, no Git).

Runs in a thread (``asyncio.to_thread``): it reads what is there, skips a request older than the
one already written for the app, writes only files whose bytes differ, removes an app's folder
for a teardown, and rewrites ``<path>/kustomization.yaml`` from the folders actually present,
keeping entries that someone else added by hand. ``changes`` records every file written (with its
bytes) or removed, by its path in the repository: the commit is made from it, not by scanning.
"""

from __future__ import annotations

import shutil
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
        """Write every op (at most one per app); returns what happened per app."""
        results = {op.app: self._apply_one(op) for op in ops}
        parent_changed = self._write_parent()
        if parent_changed:
            parent = self.repo_path(PARENT)
            results = {
                app: Applied(status=r.status, paths=(*r.paths, parent), detail=r.detail)
                if r.status == "changed"
                else r
                for app, r in results.items()
            }
        return results

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
        if not folder.exists():
            return Applied(status="unchanged")
        removed = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        shutil.rmtree(folder)
        self.changes.update((self.repo_path(app, name), None) for name in removed)
        return Applied(status="changed", paths=tuple(self.repo_path(app, name) for name in removed))

    def apps(self) -> list[str]:
        if not self.base.is_dir():
            return []
        return sorted(d.name for d in self.base.iterdir() if (d / "ks.yaml").is_file())

    def _write_parent(self) -> bool:
        apps = self.apps()
        path = self.base / PARENT
        if not apps and not path.exists():
            return False
        return self._put(path, render_parent(apps, self._foreign_entries(path)))

    def _put(self, path: Path, body: bytes) -> bool:
        """Write ``body`` unless the file already holds exactly it; True when it was written."""
        try:
            if path.read_bytes() == body:
                return False
        except OSError:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        self.changes[self._in_repo(path)] = body
        return True

    def _remove_others(self, folder: Path, keep: set[str]) -> list[str]:
        """Files in an app's folder the relay no longer renders (e.g. a NetworkPolicy turned
        off)."""
        gone = []
        for path in sorted(folder.rglob("*")):
            name = str(path.relative_to(folder))
            if path.is_file() and name not in keep:
                path.unlink()
                self.changes[self._in_repo(path)] = None
                gone.append(name)
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
