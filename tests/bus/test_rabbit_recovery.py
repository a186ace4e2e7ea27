"""What only a real broker can do to us: drop every connection while work is in flight.

Each test runs an outage: the broker closes the vhost's connections and refuses new ones for a
while (``tests.support.rabbitmq.outage``), then lets the clients back in.
"""

from __future__ import annotations

import asyncio

import pytest

from relay.bus import Ack, Bus, Incoming, Outcome, Retry
from relay.errors import BrokerUnavailable, PublishError
from tests.bus.conftest import BusEnv
from tests.bus.helpers import WAIT, Recorder, event, eventually
from tests.support.rabbitmq import delete_queue, outage

pytestmark = pytest.mark.rabbitmq

BEFORE = AFTER = 50
OUTAGE = 1.0


def vhost_of(env: BusEnv) -> str:
    assert env.vhost is not None
    return env.vhost


class SteadyPublisher:
    """Publishes events one by one, retrying each through outages until it is confirmed."""

    def __init__(self, bus: Bus, key: str) -> None:
        self.bus = bus
        self.key = key
        self.confirmed: list[str] = []
        self.refused: list[PublishError] = []

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            await self.one(n)
            n += 1
            await asyncio.sleep(0.01)

    async def one(self, n: int) -> None:
        sent = event(self.key, n)
        async with asyncio.timeout(WAIT):
            while True:
                try:
                    await self.bus.publish(sent)
                except PublishError as exc:
                    self.refused.append(exc)
                    await asyncio.sleep(0.05)
                    continue
                self.confirmed.append(sent.id)
                return


async def test_publishers_and_consumers_recover_and_no_confirmed_message_is_lost(
    rabbit_env: BusEnv,
) -> None:
    publisher, worker = await rabbit_env.bus(), await rabbit_env.bus()
    seen = Recorder()
    await worker.consume(rabbit_env.queue("steady", "git.steady", prefetch=8), seen)
    steady, stop = SteadyPublisher(publisher, "git.steady"), asyncio.Event()
    running = asyncio.create_task(steady.run(stop))
    await eventually(lambda: len(steady.confirmed) >= BEFORE)
    async with outage(vhost_of(rabbit_env)):
        await eventually(lambda: not publisher.connected and not worker.connected)
        await asyncio.sleep(OUTAGE)
        during = len(steady.confirmed)
    await eventually(lambda: len(steady.confirmed) >= during + AFTER)
    stop.set()
    await asyncio.wait_for(running, WAIT)

    assert steady.refused, "the publisher never noticed the outage"
    assert all(isinstance(e, BrokerUnavailable) for e in steady.refused)
    await eventually(lambda: set(steady.confirmed) <= {s.message.message_id for s in seen.seen})
    assert publisher.connected and worker.connected


async def test_publishing_while_the_connection_is_down_fails_fast(rabbit_env: BusEnv) -> None:
    bus = await rabbit_env.bus()
    await bus.declare(rabbit_env.queue("down", "git.down"))
    async with outage(vhost_of(rabbit_env)):
        await eventually(lambda: not bus.connected)
        async with asyncio.timeout(0.2):  # far under the confirm bound: it does not wait
            with pytest.raises(BrokerUnavailable):
                await bus.publish(event("git.down"))
    await SteadyPublisher(bus, "git.down").one(0)
    assert bus.connected


async def test_work_in_flight_when_the_connection_drops_is_redelivered(
    rabbit_env: BusEnv,
) -> None:
    bus = await rabbit_env.bus()
    started, release = asyncio.Event(), asyncio.Event()
    seen: list[Incoming] = []

    async def handler(message: Incoming) -> Outcome:
        seen.append(message)
        if len(seen) == 1:
            started.set()
            await release.wait()  # its ack will go to a channel that no longer exists
        return Ack()

    await bus.consume(rabbit_env.queue("cut", "git.cut"), handler)
    sent = event("git.cut")
    await bus.publish(sent)
    await asyncio.wait_for(started.wait(), WAIT)
    async with outage(vhost_of(rabbit_env)):
        await eventually(lambda: not bus.connected)
        release.set()
    await eventually(lambda: len(seen) == 2)
    assert seen[1].redelivered
    assert (seen[1].message_id, seen[1].body) == (sent.id, seen[0].body)


async def test_a_retry_that_cannot_be_published_leaves_the_message_on_its_queue(
    rabbit_env: BusEnv,
) -> None:
    bus = await rabbit_env.bus()
    spec = rabbit_env.queue("stubborn", "git.stubborn")
    seen = Recorder(lambda m: Retry("again") if m.attempt == 1 else Ack())
    await bus.consume(spec, seen)
    await delete_queue(vhost_of(rabbit_env), f"{spec.name}.retry.1")
    sent = event("git.stubborn")
    await bus.publish(sent)
    await eventually(lambda: len(seen.seen) >= 2)  # the retry was unroutable: nacked, requeued
    await bus.declare(spec)  # the delay queue is back
    await eventually(lambda: seen.seen[-1].message.attempt == 2)
    first, again = seen.seen[0].message, seen.seen[1].message
    assert (first.attempt, again.attempt, again.redelivered) == (1, 1, True)
    assert {s.message.message_id for s in seen.seen} == {sent.id}


async def test_history_and_tap_readers_end_when_the_connection_drops(rabbit_env: BusEnv) -> None:
    """A robust connection restores its channels but not these readers' consumers: a reader that
    kept waiting would never see another event (the gateway's status feed froze after a broker
    restart). It ends with BrokerUnavailable instead, and its caller reads again."""
    bus = await rabbit_env.bus(history=True)
    before = event("git.before")
    await bus.publish(before)
    history, tap = bus.history(), bus.tap(("git.#",))
    assert (await asyncio.wait_for(anext(history), WAIT)).id == before.id
    tapped = asyncio.ensure_future(anext(tap))
    await asyncio.sleep(0.5)  # the tap's queue is declared and bound on its first step
    live = event("git.live")
    await bus.publish(live)
    assert (await asyncio.wait_for(tapped, WAIT)).id == live.id
    assert (await asyncio.wait_for(anext(history), WAIT)).id == live.id
    async with outage(vhost_of(rabbit_env)):
        for reader in (history, tap):
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(anext(reader), WAIT)
