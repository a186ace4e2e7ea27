"""The bus contract: one set of test bodies, run on ``memory://`` and on a real RabbitMQ."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from itertools import pairwise
from typing import ClassVar

import pytest

from relay.bus import Ack, DeadLetter, Incoming, Outcome, Retry
from relay.bus.base import ERROR_HEADER
from relay.errors import BrokerUnavailable, Unroutable
from relay.events import CONTENT_TYPE, CloudEvent, encode
from tests.bus.conftest import DELAYS, MAX_ATTEMPTS, BusEnv
from tests.bus.helpers import WAIT, Recorder, dead_letters, event, eventually, until
from workers.runtime import Context, Dispatcher


async def test_a_confirmed_publish_reaches_exactly_the_queues_bound_to_its_key(env: BusEnv) -> None:
    bus = await env.bus()
    specs = {
        "exact": env.queue("exact", "git.alpha", "done.exact"),
        "wide": env.queue("wide", "git.#", "done.wide"),
        "other": env.queue("other", "deploy.*", "done.other"),
    }
    seen = {name: Recorder() for name in specs}
    for name, spec in specs.items():
        await bus.consume(spec, seen[name])
    alpha, beta = event("git.alpha"), event("git.beta")
    await bus.publish(alpha)
    await bus.publish(beta)
    for name in specs:  # one publisher, in order: the marker arrives after anything routed
        await bus.publish_raw(b"done", routing_key=f"done.{name}", message_id=None)
    await eventually(lambda: all(r.bodies[-1:] == [b"done"] for r in seen.values()))
    assert seen["exact"].keys == ["git.alpha", "done.exact"]
    assert seen["wide"].keys == ["git.alpha", "git.beta", "done.wide"]
    assert seen["other"].keys == ["done.other"]
    first = seen["exact"].seen[0].message
    assert (first.body, first.message_id, first.content_type) == (
        encode(alpha),
        alpha.id,
        CONTENT_TYPE,
    )
    assert (first.attempt, first.redelivered) == (1, False)


async def test_an_unroutable_publish_raises(env: BusEnv) -> None:
    bus = await env.bus()
    await bus.declare(env.queue("bound", "git.bound"))
    with pytest.raises(Unroutable):
        await bus.publish(event("git.nobody"))
    with pytest.raises(Unroutable):
        await bus.publish_raw(b"{}", routing_key="git.nobody", message_id=None)
    await bus.publish(event("git.bound"))  # the bus still publishes after a refusal


async def test_a_closed_bus_refuses_to_publish_at_once(env: BusEnv) -> None:
    bus = await env.bus()
    await bus.declare(env.queue("bound", "git.bound"))
    assert bus.connected
    await bus.close()
    assert not bus.connected
    async with asyncio.timeout(1):
        with pytest.raises(BrokerUnavailable):
            await bus.publish(event("git.bound"))


async def test_failing_work_is_retried_with_growing_delays_dead_lettered_and_replayed(
    env: BusEnv,
) -> None:
    bus = await env.bus()
    spec = env.queue("flaky", "git.flaky")
    healed = asyncio.Event()

    def outcome(message: Incoming) -> Outcome:
        if healed.is_set():
            return Ack()
        if message.attempt < MAX_ATTEMPTS:
            return Retry(f"boom {message.attempt}")
        return DeadLetter(f"gave up after {message.attempt}")

    seen = Recorder(outcome)
    await bus.consume(spec, seen)
    sent = event("git.flaky")
    await bus.publish(sent)
    (dead,) = await dead_letters(bus, 1)

    assert [s.message.attempt for s in seen.seen] == [1, 2, 3, 4]
    gaps = [later.at - earlier.at for earlier, later in pairwise(seen.seen)]
    assert gaps[0] < gaps[1] < gaps[2], gaps
    assert all(gap >= delay * 0.9 for gap, delay in zip(gaps, DELAYS, strict=True)), gaps
    assert [s.message.headers.get(ERROR_HEADER) for s in seen.seen[1:]] == [
        "boom 1",
        "boom 2",
        "boom 3",
    ]
    assert {(s.message.routing_key, s.message.body) for s in seen.seen} == {
        ("git.flaky", encode(sent))
    }
    assert (dead.queue, dead.routing_key, dead.error) == (spec.name, "git.flaky", "gave up after 4")
    assert (dead.attempts, dead.event_id, dead.body) == (4, sent.id, encode(sent))
    assert dead.failed_at is not None
    assert [d.id for d in await bus.dead_letters()] == [dead.id]  # reading leaves them in place

    healed.set()
    assert await bus.replay(dead.id)
    await eventually(lambda: len(seen.seen) == 5)
    again = seen.seen[-1].message
    assert (again.attempt, again.routing_key, again.message_id) == (1, "git.flaky", sent.id)
    assert again.body == encode(sent)
    assert await bus.dead_letters() == []
    assert not await bus.replay(dead.id)


async def test_a_consumer_that_dies_without_ack_gets_its_message_redelivered(env: BusEnv) -> None:
    bus = await env.bus()
    spec = env.queue("mortal", "git.mortal")
    started = asyncio.Event()

    async def hang(message: Incoming) -> Outcome:
        started.set()
        await asyncio.Event().wait()
        return Ack()

    consumer = await bus.consume(spec, hang)
    sent = event("git.mortal")
    await bus.publish(sent)
    await asyncio.wait_for(started.wait(), WAIT)
    await consumer.stop(grace=0)

    seen = Recorder()
    await bus.consume(spec, seen)
    await eventually(lambda: len(seen.seen) == 1)
    again = seen.seen[0].message
    assert again.redelivered
    assert (again.body, again.message_id, again.attempt) == (encode(sent), sent.id, 1)


async def test_stop_with_grace_lets_in_flight_work_finish_and_be_acked(env: BusEnv) -> None:
    bus = await env.bus()
    spec = env.queue("calm", "git.calm")
    started = asyncio.Event()
    finished: list[str | None] = []

    async def slow(message: Incoming) -> Outcome:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(message.message_id)
        return Ack()

    consumer = await bus.consume(spec, slow)
    sent = event("git.calm")
    await bus.publish(sent)
    await asyncio.wait_for(started.wait(), WAIT)
    await consumer.stop(grace=10)
    assert finished == [sent.id]

    seen = Recorder()
    await bus.consume(spec, seen)
    await bus.publish_raw(b"after", routing_key="git.calm", message_id=None)
    await eventually(lambda: b"after" in seen.bodies)
    assert seen.bodies == [b"after"]  # the finished message was acked, not redelivered


async def test_prefetch_n_runs_n_handlers_at_once(env: BusEnv) -> None:
    bus = await env.bus()
    n = 3
    spec = env.queue("wide", "git.wide", prefetch=n)
    running, peak, done = 0, 0, []
    full = asyncio.Event()

    async def handler(message: Incoming) -> Outcome:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == n:
            full.set()
        await asyncio.wait_for(full.wait(), WAIT)
        await asyncio.sleep(0.05)  # room for an (N+1)th delivery to show up if there were one
        running -= 1
        done.append(message.body)
        return Ack()

    await bus.consume(spec, handler)
    for i in range(2 * n):
        await bus.publish(event("git.wide", i))
    await eventually(lambda: len(done) == 2 * n)
    assert peak == n


async def test_a_slow_handler_on_one_queue_delays_no_other_queue(env: BusEnv) -> None:
    bus = await env.bus()
    release, stuck = asyncio.Event(), asyncio.Event()

    async def slow(message: Incoming) -> Outcome:
        stuck.set()
        await release.wait()
        return Ack()

    await bus.consume(env.queue("slow", "git.slow"), slow)
    fast = Recorder()
    await bus.consume(env.queue("fast", "git.fast"), fast)
    await bus.publish(event("git.slow"))
    await asyncio.wait_for(stuck.wait(), WAIT)
    for i in range(5):
        await bus.publish(event("git.fast", i))
    await eventually(lambda: len(fast.seen) == 5)
    release.set()


async def test_a_tap_sees_only_its_keys_skips_invalid_bodies_and_counts_as_a_route(
    env: BusEnv,
) -> None:
    bus = await env.bus()
    tap = bus.tap(["git.tapped.*"])
    assert isinstance(tap, AsyncGenerator)
    first = asyncio.ensure_future(anext(tap))
    probe = event("git.tapped.probe")

    async def routed() -> bool:  # the tap's queue may take a moment to be bound
        try:
            await bus.publish(probe)
        except Unroutable:
            return False
        return True

    await until(routed)
    assert await asyncio.wait_for(first, WAIT) == probe
    with pytest.raises(Unroutable):
        await bus.publish(event("git.untapped"))
    await bus.publish_raw(b"not json", routing_key="git.tapped.bad", message_id=None)
    good = event("git.tapped.good")
    await bus.publish(good)
    assert await asyncio.wait_for(anext(tap), WAIT) == good
    await tap.aclose()


class EchoWorker:
    name: ClassVar[str] = "echo"
    stage: ClassVar[str] = "test"

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.concurrency = 1
        self.handled: list[CloudEvent] = []

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        self.handled.append(event)


async def test_bodies_that_are_not_events_are_dead_lettered_with_the_reason(env: BusEnv) -> None:
    bus = await env.bus()
    worker = EchoWorker(("git.*",))
    spec = env.queue("echo", *worker.keys)
    await bus.consume(spec, Dispatcher(worker, bus, max_attempts=MAX_ATTEMPTS))
    await bus.publish_raw(b"\xff not json", routing_key="git.bad", message_id="m-json")
    await bus.publish_raw(b'{"hello": "world"}', routing_key="git.bad", message_id="m-event")
    good = event("git.good")
    await bus.publish(good)

    dead = {d.event_id: d for d in await dead_letters(bus, 2)}
    assert dead["m-json"].error.startswith("invalid event: body is not JSON")
    assert dead["m-event"].error.startswith("invalid event: not a CloudEvent")
    assert dead["m-json"].body == b"\xff not json"
    assert {(d.queue, d.routing_key, d.attempts) for d in dead.values()} == {
        (spec.name, "git.bad", 1)
    }
    await eventually(lambda: len(worker.handled) == 1)
    assert worker.handled == [good]  # the worker lived on
