"""Queue counts for the metrics, on both buses, and the gauges they set."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from relay.bus import Ack, Incoming, Outcome
from relay.queuewatch import sample
from tests.bus.conftest import BusEnv
from tests.bus.helpers import event, eventually


async def test_queue_stats_count_waiting_messages_and_consumers(env: BusEnv) -> None:
    bus = await env.bus()
    spec = env.queue("counted", "git.counted")
    await bus.declare(spec)
    for n in range(3):
        await bus.publish(event("git.counted", n))

    async def messages() -> int:
        stats = await bus.queue_stats(spec.name)
        assert stats is not None
        return stats.messages

    for _ in range(100):
        if await messages() == 3:
            break
        await asyncio.sleep(0.05)
    assert await messages() == 3
    assert await bus.queue_stats(f"{spec.name}.nope") is None

    async def handler(message: Incoming) -> Outcome:
        return Ack()

    consumer = await bus.consume(spec, handler)
    stats = await bus.queue_stats(spec.name)
    for _ in range(100):
        stats = await bus.queue_stats(spec.name)
        if stats is not None and stats.consumers == 1 and stats.messages == 0:
            break
        await asyncio.sleep(0.05)
    assert stats is not None and (stats.consumers, stats.messages) == (1, 0)
    await consumer.stop()


async def test_sample_sets_the_gauges(env: BusEnv) -> None:
    bus = await env.bus()
    spec = env.queue("gauged", "git.gauged")
    await bus.declare(spec)
    await bus.publish(event("git.gauged"))
    prefix = spec.name.rsplit(".", 1)[0]

    async def sampled() -> float | None:
        await sample(bus, [spec.name], prefix)
        return REGISTRY.get_sample_value("relay_queue_messages", {"queue": spec.name})

    for _ in range(100):
        if await sampled() == 1.0:
            break
        await asyncio.sleep(0.05)
    assert await sampled() == 1.0
    await eventually(lambda: REGISTRY.get_sample_value("relay_dead_letters") is not None)
