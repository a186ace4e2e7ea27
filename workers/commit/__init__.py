"""The commit worker: hardened manifests into the GitOps repository, many deploys per push.

``create(settings)`` builds it; see ``workers.commit.worker`` for what it consumes and publishes.
"""

from __future__ import annotations

from relay.settings import Settings
from workers.commit.worker import CommitWorker

__all__ = ["CommitWorker", "create"]


def create(settings: Settings) -> CommitWorker:
    return CommitWorker(settings)
