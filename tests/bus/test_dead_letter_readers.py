"""Operators' dead-letter reads on RabbitMQ: two at once (two `relay dlq` commands, or a list
beside a replay) each see every dead letter, since reading holds them unacknowledged."""

from __future__ import annotations

import asyncio

import pytest

from relay.bus import Bus, DeadLetter, Incoming, Outcome, connect
from tests.bus.conftest import BusEnv
from tests.bus.helpers import dead_letters, event

pytestmark = pytest.mark.rabbitmq
LETTERS = 40


async def _bus(env: BusEnv) -> Bus:
    bus = connect(env.settings(max_attempts=1))
    await bus.start()
    env.buses.append(bus)
    return bus


async def test_concurrent_readers_each_see_every_dead_letter(rabbit_env: BusEnv) -> None:
    first = await _bus(rabbit_env)
    spec = rabbit_env.queue("doomed", "git.doomed", prefetch=LETTERS)

    async def refuse(_: Incoming) -> Outcome:
        return DeadLetter("refused on purpose")

    consumer = await first.consume(spec, refuse)
    for n in range(LETTERS):
        await first.publish(event("git.doomed", n))
    expected = {d.id for d in await dead_letters(first, LETTERS)}

    second = await _bus(rabbit_env)
    for _ in range(5):
        seen = await asyncio.gather(first.dead_letters(), second.dead_letters())
        assert [{d.id for d in one} for one in seen] == [expected, expected]

    await consumer.stop()  # the replayed letter then waits in its queue instead of dying again
    one = sorted(expected)[0]
    listed, replayed = await asyncio.gather(second.dead_letters(), first.replay(one))
    assert replayed
    assert {d.id for d in listed} in (expected, expected - {one})
    assert {d.id for d in await second.dead_letters()} == expected - {one}
