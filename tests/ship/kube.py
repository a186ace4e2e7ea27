"""Build k8s/ the way Flux applies it: kustomize per folder, then Flux's variable substitution.

This repository's ``k8s/`` is the ``kubernetes/`` folder of a user's GitOps repository (the
Flux ``ks.yaml`` files say ``./kubernetes/…``), so a Flux path maps back to ``k8s/…`` here.
Substitution follows ``postBuild.substituteFrom`` with the values of ``cluster-settings.yaml``;
objects annotated ``kustomize.toolkit.fluxcd.io/substitute: disabled`` are left alone.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Obj = dict[str, Any]
FLUX_KS = "kustomize.toolkit.fluxcd.io/v1"
DISABLED = "kustomize.toolkit.fluxcd.io/substitute"
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What Flux's envsubst would still treat as a variable once the ${NAME} forms are gone:
# $name, $1, ${…}. "$(" (Kubernetes' own env expansion) and "$$" are left alone.
LEFTOVER = re.compile(r"\$[A-Za-z0-9_{]")


def build(directory: Path, *, kubectl: str) -> list[Obj]:
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise AssertionError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def substitution_disabled(obj: Obj) -> bool:
    annotations = obj.get("metadata", {}).get("annotations") or {}
    return annotations.get(DISABLED) == "disabled"


def substitute(obj: Obj, values: dict[str, str]) -> Obj:
    """Flux's postBuild substitution of one object; raises on what Flux would get wrong."""
    if substitution_disabled(obj):
        return obj
    text = yaml.safe_dump(obj, sort_keys=False, width=1 << 20)
    names = set(VARIABLE.findall(text))
    missing = sorted(names - values.keys())
    if missing:
        raise AssertionError(f"{describe(obj)} uses undefined variables {missing}")
    stripped = VARIABLE.sub("", text)
    if LEFTOVER.search(stripped):
        found = LEFTOVER.search(stripped)
        raise AssertionError(
            f"{describe(obj)} holds {found.group(0) if found else '$'}… which Flux's substitution "
            f"would rewrite: annotate it {DISABLED}: disabled"
        )
    replaced = VARIABLE.sub(lambda m: values[m.group(1)], text)
    result: Obj = yaml.safe_load(replaced)
    return result


def describe(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    return f"{obj.get('kind')} {meta.get('namespace', '-')}/{meta.get('name')}"


def flux_path(ks: Obj, k8s: Path) -> Path:
    """The k8s/ folder a Flux Kustomization's spec.path names (./kubernetes/X -> k8s/X)."""
    path = str(ks["spec"]["path"])
    prefix = "./kubernetes/"
    if not path.startswith(prefix):
        raise AssertionError(f"{describe(ks)}: path {path} is not under ./kubernetes/")
    return k8s / path.removeprefix(prefix)


@dataclass
class Tree:
    """Every kustomization folder under k8s/: raw build, and what Flux applies of it."""

    root: Path
    raw: dict[Path, list[Obj]]
    flux: list[Obj]
    settings: dict[str, str]
    applied: dict[Path, list[Obj]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, *, kubectl: str) -> Tree:
        folders = sorted(p.parent for p in root.rglob("kustomization.yaml"))
        raw = {folder: build(folder, kubectl=kubectl) for folder in folders}
        flux = [o for objs in raw.values() for o in objs if o.get("apiVersion") == FLUX_KS]
        unique = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in flux}
        settings_file = root / "rpi-cluster" / "cluster-settings.yaml"
        settings = yaml.safe_load(settings_file.read_text())["data"]
        tree = cls(root, raw, list(unique.values()), settings)
        tree.applied = {folder: tree._as_applied(folder, objs) for folder, objs in raw.items()}
        return tree

    def ks_for(self, folder: Path) -> Obj | None:
        return next((k for k in self.flux if flux_path(k, self.root) == folder), None)

    def _as_applied(self, folder: Path, objs: list[Obj]) -> list[Obj]:
        ks = self.ks_for(folder)
        if ks is None or not ks["spec"].get("postBuild"):
            return objs
        return [substitute(o, self.settings) for o in objs]

    def objects(self) -> list[tuple[Path, Obj]]:
        """Every object as applied, with the folder it came from."""
        return [(folder, obj) for folder, objs in self.applied.items() for obj in objs]

    def of_kind(self, kind: str) -> list[Obj]:
        return [obj for _, obj in self.objects() if obj.get("kind") == kind]
