"""pytest fixtures for the real Docker registry, Git smart-HTTP server and buildah.

Use them from a conftest with explicit imports (``pytest_plugins`` is refused by pytest >= 8 in
any conftest below the rootdir)::

    from tests.support.service_fixtures import *  # noqa: F403

Fixtures:
    registry          session  a running Registry (do not stop it: use registry_factory)
    registry_factory  function call (**Registry kwargs) -> a started private Registry
    git_server        function a running GitServer with a fresh homelab.git (~0.15 s)
    busybox_base      session  str reference of the busybox base image in ``registry``
    buildah           function a Buildah with private vfs storage, removed afterwards

The state directories (configs, logs, repositories) stay under pytest's basetemp for
post-mortems; buildah storage is removed.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.gitserver import GitServer
from tests.support.images import Buildah, make_busybox_base
from tests.support.registry import Registry

__all__ = [
    "buildah",
    "busybox_base",
    "git_server",
    "registry",
    "registry_factory",
]


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry"))
    reg.start()
    try:
        yield reg
    finally:
        reg.close()


@pytest.fixture
def registry_factory(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Private registries for fault/notification tests: ``registry_factory(notify_url=...)``."""
    made: list[Registry] = []

    def make(**kwargs: Any) -> Registry:
        reg = Registry(tmp_path / f"registry-{len(made)}", **kwargs)
        made.append(reg)
        return reg.start()

    try:
        yield make
    finally:
        for reg in made:
            reg.close()


@pytest.fixture
def git_server(tmp_path: Path) -> Iterator[GitServer]:
    server = GitServer(tmp_path / "git")
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def busybox_base(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> str:
    base_dir = tmp_path_factory.mktemp("buildah-base")
    try:
        ref = make_busybox_base(registry, buildah=Buildah(base_dir))
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)  # the image lives on in the registry
    return ref


@pytest.fixture
def buildah(tmp_path: Path) -> Iterator[Buildah]:
    base_dir = tmp_path / "buildah"
    try:
        yield Buildah(base_dir)
    finally:
        shutil.rmtree(base_dir, ignore_errors=True)
