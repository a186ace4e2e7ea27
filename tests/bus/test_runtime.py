"""The worker runtime over both buses: outcomes, reported failures, idempotency, draining."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import ClassVar

from relay.bus import Ack, Bus, Incoming, Outcome
from relay.errors import Permanent, Transient
from relay.events import CloudEvent, decode
from relay.events.data import DeployFailed
from relay.settings import Settings
from tests.bus.conftest import BusEnv
from tests.bus.helpers import WAIT, Recorder, dead_letters, event, eventually
from workers.runtime import Context, Dispatcher, WorkerHost

Behaviour = Callable[[CloudEvent, Context], Awaitable[None]]


class ScriptedWorker:
    name: ClassVar[str] = "scripted"
    stage: ClassVar[str] = "build"

    def __init__(self, behave: Behaviour, keys: tuple[str, ...] = ("git.work",)) -> None:
        self.keys = keys
        self.concurrency = 2
        self.behave = behave
        self.calls: list[tuple[str, int, bool]] = []

    async def handle(self, event: CloudEvent, ctx: Context) -> None:
        self.calls.append((event.id, ctx.attempt, ctx.final_attempt))
        await self.behave(event, ctx)


async def run(env: BusEnv, worker: ScriptedWorker, *, max_attempts: int = 3) -> Recorder:
    """Start ``worker`` through a Dispatcher; return what reaches ``deploy.failed``."""
    bus = await env.bus(max_attempts=max_attempts)
    failures = Recorder()
    await bus.consume(env.queue("failures", "deploy.failed"), failures)
    dispatcher = Dispatcher(worker, bus, max_attempts=max_attempts)
    await bus.consume(env.queue(worker.name, *worker.keys, prefetch=2), dispatcher)
    return failures


def failed(recorder: Recorder) -> list[tuple[CloudEvent, DeployFailed]]:
    events = [decode(s.message.body) for s in recorder.seen]
    return [(e, e.payload(DeployFailed)) for e in events]


async def test_permanent_goes_to_dead_letters_at_once_and_reports_deploy_failed(
    env: BusEnv,
) -> None:
    async def refuse(event: CloudEvent, ctx: Context) -> None:
        raise Permanent("image_not_found", "no image ghcr.io/x/web:1")

    worker = ScriptedWorker(refuse)
    failures = await run(env, worker)
    bus = await env.bus()
    sent = event("git.work", deploymentid="dep-1", app="web")
    await bus.publish(sent)

    (dead,) = await dead_letters(bus, 1)
    assert (dead.error, dead.attempts, dead.event_id) == (
        "image_not_found: no image ghcr.io/x/web:1",
        1,
        sent.id,
    )
    await eventually(lambda: len(failures.seen) == 1)
    ((envelope, data),) = failed(failures)
    assert (data.stage, data.reason, data.detail) == (
        "build",
        "image_not_found",
        "no image ghcr.io/x/web:1",
    )
    assert (envelope.deploymentid, envelope.app) == ("dep-1", "web")
    assert worker.calls == [(sent.id, 1, False)]


async def test_the_last_attempt_reports_deploy_failed_with_the_transient_reason(
    env: BusEnv,
) -> None:
    async def unavailable(event: CloudEvent, ctx: Context) -> None:
        raise Transient("registry_unavailable", "503 from 127.0.0.1:5000")

    worker = ScriptedWorker(unavailable)
    failures = await run(env, worker, max_attempts=3)
    bus = await env.bus()
    sent = event("git.work", deploymentid="dep-2", app="api")
    await bus.publish(sent)

    (dead,) = await dead_letters(bus, 1)
    assert (dead.error, dead.attempts) == ("registry_unavailable: 503 from 127.0.0.1:5000", 3)
    assert worker.calls == [(sent.id, 1, False), (sent.id, 2, False), (sent.id, 3, True)]
    await eventually(lambda: len(failures.seen) == 1)
    ((_, data),) = failed(failures)
    assert (data.stage, data.reason) == ("build", "registry_unavailable")


async def test_any_other_error_is_retried_then_reported_as_retries_exhausted(env: BusEnv) -> None:
    async def crash(event: CloudEvent, ctx: Context) -> None:
        raise RuntimeError("disk full")

    worker = ScriptedWorker(crash)
    failures = await run(env, worker, max_attempts=2)
    bus = await env.bus()
    await bus.publish(event("git.work", deploymentid="dep-3"))
    await eventually(lambda: len(failures.seen) == 1)
    ((_, data),) = failed(failures)
    assert (data.reason, data.detail) == ("retries_exhausted", "RuntimeError: disk full")
    assert [attempt for _, attempt, _ in worker.calls] == [1, 2]


async def test_an_event_id_already_handled_is_acked_without_running_again(env: BusEnv) -> None:
    async def fine(event: CloudEvent, ctx: Context) -> None:
        return None

    worker = ScriptedWorker(fine)
    bus = await env.bus()
    dispatcher = Dispatcher(worker, bus, max_attempts=3)
    outcomes: list[Outcome] = []

    async def recorded(message: Incoming) -> Outcome:
        outcomes.append(await dispatcher(message))
        return outcomes[-1]

    await bus.consume(env.queue("once", *worker.keys), recorded)
    sent = event("git.work")
    await bus.publish(sent)
    await bus.publish(sent)  # a duplicate delivery of the same event
    await eventually(lambda: len(outcomes) == 2)
    assert outcomes == [Ack(), Ack()]
    assert worker.calls == [(sent.id, 1, False)]
    assert await bus.dead_letters() == []


async def test_a_dead_letter_replayed_to_the_same_process_runs_again(env: BusEnv) -> None:
    """``relay dlq replay`` while the worker that gave up is still running: it runs the work."""
    fixed = asyncio.Event()

    async def until_fixed(event: CloudEvent, ctx: Context) -> None:
        if not fixed.is_set():
            raise Permanent("registry_unreachable", "connection refused")

    worker = ScriptedWorker(until_fixed)
    failures = await run(env, worker)
    bus = await env.bus()
    sent = event("git.work", deploymentid="dep-5")
    await bus.publish(sent)
    (dead,) = await dead_letters(bus, 1)
    fixed.set()
    assert await bus.replay(dead.id)
    await eventually(lambda: len(worker.calls) == 2)
    assert [call[0] for call in worker.calls] == [sent.id, sent.id]
    await eventually(lambda: len(failures.seen) == 1)
    assert await bus.dead_letters() == []


async def test_a_stopping_host_lets_in_flight_work_finish_within_the_grace(env: BusEnv) -> None:
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(event: CloudEvent, ctx: Context) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.set()

    worker = ScriptedWorker(slow)
    bus = await env.bus()
    host = WorkerHost(bus, Settings(broker=env.settings()), [worker])
    await host.start()
    await bus.publish(event("git.work"))
    await asyncio.wait_for(started.wait(), WAIT)
    await host.stop(grace=10)  # what the SIGTERM handler of `relay worker` does
    assert finished.is_set()
    await assert_queue_drained(bus, host.queue_for(worker).name, env)


async def assert_queue_drained(bus: Bus, queue: str, env: BusEnv) -> None:
    """Nothing left on ``queue``: a marker published now is the first thing a consumer sees."""
    seen = Recorder()
    name = queue.removeprefix(f"relay.{env.tag}.")
    await bus.consume(env.queue(name, "git.work"), seen)
    await bus.publish_raw(b"marker", routing_key="git.work", message_id=None)
    await eventually(lambda: b"marker" in seen.bodies)
    assert seen.bodies == [b"marker"]
