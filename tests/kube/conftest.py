"""Real Kubernetes API server tests: the `kube_api` fixture (tests/support/kube_fixtures.py).

The fixture is imported rather than listed in `pytest_plugins`, which pytest refuses in a
conftest below the rootdir. Other test directories may import it the same way.
"""

from tests.support.kube_fixtures import kube_api  # noqa: F401
