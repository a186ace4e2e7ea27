"""The notify worker: terminal callbacks to n8n and messages to sinks (webhook, Slack, Discord)."""

from __future__ import annotations

from relay.settings import Settings
from workers.notify.worker import NotifyWorker

__all__ = ["NotifyWorker", "create"]


def create(settings: Settings) -> NotifyWorker:
    return NotifyWorker(settings)
