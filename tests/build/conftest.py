"""Fixtures of the build worker's tests: the real registry, Git server and buildah."""

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.service_fixtures import *  # noqa: F403


def _unmount_below(root: Path) -> None:
    """Unmount whatever a killed build left mounted under ``root`` (deepest first)."""
    with open("/proc/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(root))]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.fixture(scope="session")
def buildah_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One buildah storage for the session's builds, so base images are pulled once."""
    root = tmp_path_factory.mktemp("relay-buildah")
    try:
        yield root
    finally:
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)
