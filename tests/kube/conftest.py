"""Real Kubernetes API server tests: the `kube_api` fixture (tests/support/kube_fixtures.py).

The fixture is imported rather than listed in `pytest_plugins`, which pytest refuses in a
conftest below the rootdir. Other test directories may import it the same way.
"""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # `tests.support` must import under plain `pytest` as well
    sys.path.insert(0, _ROOT)

from tests.support.kube_fixtures import kube_api  # noqa: F401
