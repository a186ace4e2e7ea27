"""The build worker: prebuilt images pinned by digest, sources built and pushed without a daemon.

See ``workers.build.worker`` for what it does and ``docs/build-worker.md`` for operators.
"""

from __future__ import annotations

from relay.settings import Settings
from workers.build.worker import BuildWorker

__all__ = ["BuildWorker", "create"]


def create(settings: Settings) -> BuildWorker:
    return BuildWorker(settings)
