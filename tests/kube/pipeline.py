"""Run workers on a bus the way ``relay worker`` does, and collect what they publish."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from relay.bus import Ack, Bus, Consumer, Incoming, Outcome, QueueSpec
from relay.bus.memory import MemoryBus
from relay.events import CloudEvent, decode, new_event
from relay.events.data import EventData
from relay.settings import RetrySettings, Settings
from workers.runtime import Worker, WorkerHost

COLLECTED = ("reconcile.#", "deploy.#", "app.#")


class Pipeline:
    """``async with Pipeline(settings, [worker]) as p``: publish in, ``await p.next(key)`` out."""

    def __init__(
        self, settings: Settings, workers: Sequence[Worker], bus: Bus | None = None
    ) -> None:
        self.settings = settings
        self.workers = list(workers)
        self.bus: Bus = bus or MemoryBus(RetrySettings(delays=[0.2], max_attempts=3))
        self.host = WorkerHost(self.bus, settings, self.workers)
        self.events: dict[str, list[CloudEvent]] = defaultdict(list)
        self._changed = asyncio.Condition()
        self._collector: Consumer | None = None

    async def __aenter__(self) -> Pipeline:
        await self.bus.start()
        spec = QueueSpec(
            name=f"{self.settings.broker.queue_prefix}.test-collector", keys=COLLECTED, prefetch=500
        )
        self._collector = await self.bus.consume(spec, self._collect)
        await self.host.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.host.stop(grace=0)
        if self._collector is not None:
            await self._collector.stop()
        await self.bus.close()

    async def publish(self, data: EventData, **kw: Any) -> CloudEvent:
        event = new_event(data, source="/tests/kube", **kw)
        await self.bus.publish(event)
        return event

    async def _collect(self, message: Incoming) -> Outcome:
        event = decode(message.body)
        async with self._changed:
            self.events[event.routing_key].append(event)
            self._changed.notify_all()
        return Ack()

    async def next(
        self, key: str, *, app: str | None = None, timeout: float = 10.0, index: int = 0
    ) -> CloudEvent:
        """The ``index``-th event with this routing key (and app), waiting up to ``timeout``."""
        async with asyncio.timeout(timeout), self._changed:
            while True:
                found = [e for e in self.events[key] if app is None or e.app == app]
                if len(found) > index:
                    return found[index]
                await self._changed.wait()

    async def count(self, key: str, n: int, *, timeout: float = 30.0) -> list[CloudEvent]:
        async with asyncio.timeout(timeout), self._changed:
            while len(self.events[key]) < n:
                await self._changed.wait()
            return list(self.events[key])

    def of(self, key: str, app: str | None = None) -> list[CloudEvent]:
        return [e for e in self.events[key] if app is None or e.app == app]
