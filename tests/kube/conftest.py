"""Fixtures of the Kubernetes tests: the real API server (``kube_api``, from
``tests/support/kube_fixtures.py``) and what the relay's tests build on it, plus what the unit
tests on the in-process fake share.

The fixtures are imported rather than listed in ``pytest_plugins``, which pytest refuses in a
conftest below the rootdir. Other test directories may import them the same way.
"""

from pathlib import Path

import pytest

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


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret"
    path.write_text("s3cret-value\n")
    return path
