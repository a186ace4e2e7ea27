"""The relay's workers, one package each, over the shared runtime in ``workers.runtime``.

``create(name, settings)`` builds a worker by name; each package is imported only when asked
for, so a worker's optional tools (buildah, git, a cluster) never burden the others.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay.settings import Settings
    from workers.runtime import Worker

# name -> module with ``create(settings) -> Worker``
WORKERS: dict[str, str] = {
    "build": "workers.build",
    "commit": "workers.commit",
    "reconcile": "workers.reconcile",
    "watch": "workers.watch",
    "notify": "workers.notify",
}


def available() -> list[str]:
    """Workers whose package is present in this installation."""
    found = []
    for name, module in WORKERS.items():
        if importlib.util.find_spec(module) is not None:
            found.append(name)
    return found


def create(name: str, settings: Settings) -> Worker:
    if name not in WORKERS:
        raise KeyError(f"unknown worker {name!r}; known: {', '.join(WORKERS)}")
    module = importlib.import_module(WORKERS[name])
    worker: Worker = module.create(settings)
    return worker
