"""The one runtime every worker runs on: decode, dispatch, and map the result onto the bus.

A worker declares a name, the routing keys it consumes, its concurrency (the queue's prefetch)
and its stage. Its ``handle`` receives a validated event and a ``Context`` to publish follow-ups.
This module alone decides what happens to a message:

- returned normally → ``Ack`` (its effect is durable: follow-ups were confirmed by the broker);
- raised ``Permanent`` → ``DeadLetter`` at once, and ``deploy.failed`` for a deployment;
- raised anything else → ``Retry`` with back-off, until the last attempt, which is reported like
  ``Permanent`` (with the ``Transient`` reason when there is one) and dead-lettered;
- a body that is not a valid event → ``DeadLetter`` with the validation error, never a crash;
- an event id this process already handled successfully → ``Ack`` (redeliveries are harmless);
  a dead letter replayed to it runs again.
"""

from __future__ import annotations

import asyncio
import signal
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import structlog

from relay.bus import Ack, Bus, Consumer, DeadLetter, Incoming, Outcome, QueueSpec, Retry
from relay.errors import InvalidEvent, Permanent, PublishError, StageError, Transient
from relay.events import CloudEvent, decode, new_event
from relay.events.data import DeployChain, DeployFailed, EventData
from relay.logging import bind_context
from relay.metrics import HANDLED
from relay.settings import Settings

log = structlog.get_logger(__name__)


class Worker(Protocol):
    """A worker: its queue's name and keys, its concurrency, and its handler.

    ``reports_failures`` is False for workers whose failure is not the deployment's (notify): their
    give-ups are dead-lettered without publishing ``deploy.failed``.
    """

    name: ClassVar[str]
    stage: ClassVar[str]
    keys: tuple[str, ...]
    concurrency: int

    async def handle(self, event: CloudEvent, ctx: Context) -> None: ...


class IdempotencyWindow:
    """Ids of work already done by this process, bounded (oldest forgotten first)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, key: str) -> bool:
        return key in self._ids

    def add(self, key: str) -> None:
        self._ids[key] = None
        self._ids.move_to_end(key)
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)


@dataclass(kw_only=True)
class Context:
    """What a handler may use: publish follow-ups that inherit the deployment's identity."""

    bus: Bus
    worker: str
    event: CloudEvent
    attempt: int
    max_attempts: int
    seen: IdempotencyWindow = field(default_factory=IdempotencyWindow)

    @property
    def final_attempt(self) -> bool:
        return self.attempt >= self.max_attempts

    async def publish(
        self,
        data: EventData,
        *,
        routing_key: str | None = None,
        subject: str | None = None,
        app: str | None = None,
        deploymentid: str | None = None,
    ) -> CloudEvent:
        event = new_event(
            data,
            source=f"/relay/workers/{self.worker}",
            routing_key=routing_key,
            subject=subject or self.event.subject,
            app=app or self.event.app,
            deploymentid=deploymentid or self.event.deploymentid,
        )
        await self.bus.publish(event)
        log.debug("published", routing_key=event.routing_key, published_id=event.id)
        return event


class Dispatcher:
    """The bus handler for one worker: the only place outcomes are chosen."""

    def __init__(self, worker: Worker, bus: Bus, *, max_attempts: int) -> None:
        self.worker = worker
        self.bus = bus
        self.max_attempts = max_attempts
        self.done = IdempotencyWindow()

    async def __call__(self, message: Incoming) -> Outcome:
        with bind_context(
            worker=self.worker.name, stage=self.worker.stage, delivery=message.message_id
        ):
            try:
                event = decode(
                    message.body, routing_key=message.routing_key, message_id=message.message_id
                )
            except InvalidEvent as exc:
                log.warning("invalid event dead-lettered", error=str(exc))
                return DeadLetter(f"invalid event: {exc}")
            with bind_context(event_id=event.id, deployment_id=event.deploymentid, app=event.app):
                outcome = await self._run(event, message.attempt)
        HANDLED.labels(self.worker.name, type(outcome).__name__.lower()).inc()
        return outcome

    async def _run(self, event: CloudEvent, attempt: int) -> Outcome:
        if event.id in self.done:
            log.info("event already handled", routing_key=event.routing_key)
            return Ack()
        ctx = Context(
            bus=self.bus,
            worker=self.worker.name,
            event=event,
            attempt=attempt,
            max_attempts=self.max_attempts,
            seen=self.done,
        )
        try:
            await self.worker.handle(event, ctx)
        except Permanent as exc:
            return await self._give_up(ctx, exc)
        except Exception as exc:
            if attempt >= self.max_attempts:
                return await self._give_up(ctx, _as_stage_error(exc, self.worker.stage))
            log.warning("handler failed, will retry", attempt=attempt, error=_describe(exc))
            return Retry(_describe(exc))
        self.done.add(event.id)
        return Ack()

    async def _give_up(self, ctx: Context, exc: StageError) -> Outcome:
        stage = exc.stage or self.worker.stage
        log.error("work failed", reason=exc.reason, detail=exc.detail, attempt=ctx.attempt)
        if ctx.event.deploymentid and getattr(self.worker, "reports_failures", True):
            try:
                await ctx.publish(_failure(ctx.event, stage, exc))
            except PublishError as publish_error:
                # The failure must not be lost: keep the message and try again later.
                return Retry(f"could not publish deploy.failed: {publish_error}")
        # Not added to ``done``: work given up is not done, and ``relay dlq replay`` sends the
        # same event id back to this very process, which must run it again.
        return DeadLetter(f"{exc.reason}: {exc.detail}")


def _failure(event: CloudEvent, stage: str, exc: StageError) -> DeployFailed:
    carried = {}
    try:
        chain = DeployChain.model_validate(
            {k: v for k, v in event.data.items() if k in DeployChain.model_fields}
        )
        carried = chain.model_dump(exclude_none=True)
    except ValueError:
        pass
    return DeployFailed(**carried, stage=stage, reason=exc.reason, detail=exc.detail)


def _as_stage_error(exc: Exception, stage: str) -> StageError:
    if isinstance(exc, StageError):
        return exc
    return Transient("retries_exhausted", _describe(exc), stage=stage)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, StageError) else f"{type(exc).__name__}: {text}"


class WorkerHost:
    """Runs workers on a bus until told to stop, then drains within a grace period."""

    def __init__(self, bus: Bus, settings: Settings, workers: Sequence[Worker]) -> None:
        self.bus = bus
        self.settings = settings
        self.workers = list(workers)
        self._consumers: list[Consumer] = []

    def queue_for(self, worker: Worker) -> QueueSpec:
        return QueueSpec(
            name=f"{self.settings.broker.queue_prefix}.{worker.name}",
            keys=worker.keys,
            prefetch=worker.concurrency,
        )

    async def start(self) -> None:
        for worker in self.workers:
            dispatcher = Dispatcher(
                worker, self.bus, max_attempts=self.settings.broker.retry.max_attempts
            )
            self._consumers.append(await self.bus.consume(self.queue_for(worker), dispatcher))
            log.info("worker started", worker=worker.name, keys=list(worker.keys))

    async def stop(self, grace: float = 25.0) -> None:
        consumers, self._consumers = self._consumers, []
        await asyncio.gather(*(c.stop(grace=grace) for c in consumers))
        for worker in self.workers:
            close = getattr(worker, "close", None)
            if close is not None:
                await close()
        log.info("workers stopped", count=len(consumers))


def stop_signal() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
