"""Real-service tests: registry, git smart-HTTP server, buildah.

The fixtures are imported, not listed in ``pytest_plugins``: pytest >= 8 refuses
``pytest_plugins`` in a conftest below the rootdir.
"""

from tests.support.service_fixtures import *  # noqa: F403
