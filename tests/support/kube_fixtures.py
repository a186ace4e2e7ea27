"""pytest plugin: a session-scoped real Kubernetes API server, `kube_api`.

Load it with `pytest_plugins = ["tests.support.kube_fixtures"]` in a conftest.py.

The fixture runs `scripts/kube/build-apiserver.sh` first (instant when the binaries are cached
in `$RELAY_KUBE_CACHE`, default /var/cache/relay-kube; a few minutes on a fresh machine). Only
`RELAY_TEST_SKIP_KUBE=1` skips the tests that use it: a failed build or start is an error.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .kubeapi import KubeAPIServer

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "kube" / "build-apiserver.sh"
BUILD_TIMEOUT_S = 45 * 60


def kube_cache_dir() -> Path:
    return Path(os.environ.get("RELAY_KUBE_CACHE", "/var/cache/relay-kube"))


def ensure_kube_binaries() -> Path:
    """Run the (idempotent) build script; raise with its output if it fails."""
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        env={**os.environ, "RELAY_KUBE_CACHE": str(kube_cache_dir())},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return kube_cache_dir()


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeAPIServer]:
    """A started KubeAPIServer (etcd + kube-apiserver 1.20) shared by the whole session."""
    if os.environ.get("RELAY_TEST_SKIP_KUBE") == "1":
        pytest.skip("RELAY_TEST_SKIP_KUBE=1")
    server = KubeAPIServer(cache_dir=ensure_kube_binaries(), work_dir=tmp_path_factory.mktemp("kube"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
