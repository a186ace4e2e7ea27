"""Queue depth, consumers and dead letters as metrics, read from the broker every few seconds."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from relay.bus import Bus
from relay.bus.base import DEAD_LETTER_QUEUE
from relay.metrics import DEAD_LETTERS, QUEUE_CONSUMERS, QUEUE_MESSAGES

log = structlog.get_logger(__name__)


async def sample(bus: Bus, queues: Sequence[str], prefix: str) -> None:
    """Read each queue's counts once and set the gauges."""
    for name in queues:
        stats = await bus.queue_stats(name)
        if stats is not None:
            QUEUE_MESSAGES.labels(name).set(stats.messages)
            QUEUE_CONSUMERS.labels(name).set(stats.consumers)
    dead = await bus.queue_stats(f"{prefix}.{DEAD_LETTER_QUEUE}")
    if dead is not None:
        DEAD_LETTERS.set(dead.messages)


async def poll(bus: Bus, queues: Sequence[str], prefix: str, *, interval: float = 15.0) -> None:
    """Sample until cancelled; a broker that is away is simply tried again next time."""
    while True:
        try:
            if bus.connected:
                await sample(bus, queues, prefix)
        except Exception as exc:  # broker away, channel closed: sample again next time
            log.debug("queue metrics not read", error=repr(exc))
        await asyncio.sleep(interval)
