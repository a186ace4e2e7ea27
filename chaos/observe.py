"""What happened to every deployment, read from the relay's own record: the history stream.

Every relay event goes through the ``relay.events`` exchange into the history stream queue, so
reading it from the first offset sees each deployment's whole timeline, whichever process
published it and however often those processes died. The reader survives broken connections
(it reads again and skips event ids it has).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.bus.rabbitmq import RabbitBus
from relay.events import CloudEvent
from relay.settings import BrokerSettings

FAILED = "deploy.failed"
COMMITTED = "manifests.committed"
READY = "deploy.ready"


@dataclass
class Timeline:
    deployment_id: str
    app: str | None = None
    events: list[CloudEvent] = field(default_factory=list)

    def routing_keys(self) -> list[str]:
        return [e.routing_key for e in self.events]

    def first(self, key: str) -> CloudEvent | None:
        return next((e for e in self.events if e.routing_key == key), None)

    def all(self, key: str) -> list[CloudEvent]:
        return [e for e in self.events if e.routing_key == key]

    def failure(self) -> dict[str, Any] | None:
        failed = self.first(FAILED)
        return dict(failed.data) if failed is not None else None


class Observer:
    """Reads the history stream of one vhost in the background."""

    def __init__(self, broker_url: str) -> None:
        self.bus = RabbitBus(BrokerSettings(url=broker_url, history=True))
        self.events: list[CloudEvent] = []
        self.timelines: dict[str, Timeline] = {}
        self.by_key: dict[str, int] = defaultdict(int)
        self.interruptions = 0
        self._ids: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def start(self) -> None:
        await self.bus.start()
        self._task = asyncio.create_task(self._read(), name="history-reader")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.bus.close()

    async def _read(self) -> None:
        while True:
            try:
                async for event in self.bus.history():
                    self._add(event)
            except asyncio.CancelledError:
                raise
            except Exception:
                self.interruptions += 1
                await asyncio.sleep(0.5)

    def _add(self, event: CloudEvent) -> None:
        if event.id in self._ids:
            return
        self._ids.add(event.id)
        self.events.append(event)
        self.by_key[event.routing_key] += 1
        if event.deploymentid:
            line = self.timelines.setdefault(event.deploymentid, Timeline(event.deploymentid))
            line.app = line.app or event.app
            line.events.append(event)
        self._changed.set()

    def has(self, event_id: str) -> bool:
        return event_id in self._ids

    def ended(self, deployment_id: str, ends: frozenset[str]) -> bool:
        line = self.timelines.get(deployment_id)
        return line is not None and any(k in ends for k in line.routing_keys())

    async def wait_until(self, done: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``done()`` is true (re-checked on each new event); False on timeout."""
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
        return True
