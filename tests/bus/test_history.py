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
