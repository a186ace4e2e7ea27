"""Shared fixtures of the Kubernetes tests (unit tests on the fake, and the real API server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kube.config import make_settings  # noqa: F401 - re-exported for older imports


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cret-value\n")
    return path


try:  # The real API server harness (tests/support) and the fixtures built on it.
    from tests.kube.realfixtures import (  # noqa: F401
        admin,
        admin_cluster,
        controller_manager,
        flux_objects,
        proxy,
        relay_kubeconfig,
        standin_flux,
        tag,
    )
    from tests.support.kube_fixtures import kube_api  # noqa: F401
except ImportError as exc:  # pragma: no cover - only before tests/support exists
    if "tests.support" not in str(exc):
        raise
