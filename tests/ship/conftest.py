"""Fixtures for the shipping tests: the repository's files, the shared schemas, rendered trees."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from tests.ship import kube

REPO = Path(__file__).resolve().parents[2]


def _shared_dir() -> Path:
    """``shared/`` beside the repository (CI), or beside one of its parents (a worktree)."""
    for parent in REPO.parents:
        candidate = parent / "shared"
        if (candidate / "CONTRACT.md").is_file():
            return candidate
    return REPO.parent / "shared"


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared() -> Path:
    found = _shared_dir()
    if not found.is_dir():
        pytest.fail(f"the shared fixtures are missing: expected {found}")
    return found


@pytest.fixture(scope="session")
def kubectl() -> str:
    found = shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl (with its built-in kustomize) is needed to build k8s/")
    return found


@pytest.fixture(scope="session")
def tree(kubectl: str) -> kube.Tree:
    """Every kustomization under k8s/, built once, as Flux would apply it."""
    return kube.Tree.load(REPO / "k8s", kubectl=kubectl)


@pytest.fixture(scope="session")
def compose() -> dict[str, object]:
    loaded = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded
