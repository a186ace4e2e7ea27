"""The history stream: every relay event recorded, replayed from a time, then followed live."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from relay.errors import Unroutable
from tests.bus.conftest import BusEnv
from tests.bus.helpers import WAIT, event


async def take(history: object, count: int) -> list[str]:
    got = []
    for _ in range(count):
        item = await asyncio.wait_for(anext(history), WAIT)  # type: ignore[call-overload]
        got.append(item.id)
    return got


async def test_history_replays_from_the_start_or_a_time_then_follows_live(env: BusEnv) -> None:
    bus = await env.bus(history=True)
    first = [event("git.first"), event("git.second")]
    for item in first:
        await bus.publish(item)  # no worker consumes these: the history makes them routable
    await asyncio.sleep(0.05)
    cutoff = datetime.now(UTC)
    await asyncio.sleep(0.05)
    later = event("git.later")
    await bus.publish(later)

    replay = bus.history()
    assert await take(replay, 3) == [e.id for e in [*first, later]]
    live = event("git.live")
    await bus.publish(live)
    assert await take(replay, 1) == [live.id]
    await replay.aclose()  # type: ignore[attr-defined]

    recent = bus.history(since=cutoff)
    assert await take(recent, 2) == [later.id, live.id]
    await recent.aclose()  # type: ignore[attr-defined]


async def test_without_history_an_event_nobody_consumes_is_unroutable(env: BusEnv) -> None:
    bus = await env.bus(history=False)
    with pytest.raises(Unroutable):
        await bus.publish(event("git.nobody"))


async def test_memory_history_keeps_the_newest_events_within_its_byte_bound() -> None:
    from relay.bus.memory import MemoryBus
    from relay.events import encode

    sample = event("git.sized")
    size = len(encode(sample))
    bus = MemoryBus(history_bytes=size * 3 + size // 2)  # room for three events, not four
    await bus.start()
    sent = [event(f"git.n{i}") for i in range(6)]
    for item in sent:
        await bus.publish(item)
    replay = bus.history()
    kept = await take(replay, 3)
    await replay.aclose()  # type: ignore[attr-defined]
    await bus.close()
    assert kept == [e.id for e in sent[-3:]]


async def test_memory_history_keeps_at_most_its_count() -> None:
    from relay.bus.memory import MemoryBus

    bus = MemoryBus(history_size=2)
    await bus.start()
    sent = [event(f"git.c{i}") for i in range(5)]
    for item in sent:
        await bus.publish(item)
    replay = bus.history()
    assert await take(replay, 2) == [e.id for e in sent[-2:]]
    await replay.aclose()  # type: ignore[attr-defined]
    await bus.close()
