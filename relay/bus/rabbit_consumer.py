"""The RabbitMQ bus's consuming: a worker queue's consumer and how handler outcomes are settled.

Each consumer has its own channel with prefetch = the worker's concurrency and runs the handler
for every delivery in a task of its own. A handler's ``Retry`` goes to the work queue's delay
queue for its attempt, a ``DeadLetter`` to the dead-letter queue; the delivery is acknowledged
only once that publish is confirmed, and requeued when it is not or the handler raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from relay.bus.amqp import QUORUM, Outgoing, dead_letter_of, incoming, retry_of, retry_queue
from relay.bus.base import Ack, DeadLetter, Handler, Incoming, Outcome, QueueSpec, Retry
from relay.bus.rabbit_common import bounded, delivery
from relay.errors import PublishError

log = structlog.get_logger(__name__)

SendToQueue = Callable[[str, Outgoing], Awaitable[None]]


async def _settle_quietly(operation: Awaitable[Any]) -> None:
    """Ack or nack; on a lost channel the broker redelivers the message anyway."""
    try:
        await operation
    except (*aio_pika.exceptions.CONNECTION_EXCEPTIONS, aio_pika.exceptions.MessageProcessError):
        log.warning("could not settle a delivery; the broker will redeliver it")


@dataclass(frozen=True, kw_only=True)
class Settler:
    """Carries out handler outcomes through the default exchange (retries, dead letters)."""

    send_to_queue: SendToQueue
    dead_letter_queue: str
    steps: int  # delay queues per work queue

    async def settle(
        self, queue: str, raw: AbstractIncomingMessage, message: Incoming, outcome: Outcome
    ) -> None:
        """Carry out a handler's outcome; ack only once its effect is confirmed."""
        try:
            await self._carry_out(queue, message, outcome)
        except PublishError as exc:
            log.warning("could not carry out an outcome; message requeued", error=str(exc))
            await _settle_quietly(raw.nack(requeue=True))
            return
        await _settle_quietly(raw.ack())

    async def _carry_out(self, queue: str, message: Incoming, outcome: Outcome) -> None:
        match outcome:
            case Ack():
                return
            case Retry(error=error):
                target = retry_queue(queue, message.attempt, self.steps)
                await self.send_to_queue(target, retry_of(message, error))
            case DeadLetter(error=error):
                dead = dead_letter_of(queue, message, error)
                await self.send_to_queue(self.dead_letter_queue, dead)


class RabbitConsumer:
    """One worker queue's consumer: its own channel, prefetch = the worker's concurrency."""

    def __init__(
        self,
        spec: QueueSpec,
        handler: Handler,
        *,
        settler: Settler,
        on_stop: Callable[[RabbitConsumer], None],
    ) -> None:
        self._spec = spec
        self._handler = handler
        self._settler = settler
        self._on_stop = on_stop
        self._inflight: set[asyncio.Task[None]] = set()
        self._channel: AbstractRobustChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None

    async def start(self, connection: AbstractRobustConnection) -> None:
        self._channel = await connection.channel(publisher_confirms=False)
        await self._channel.set_qos(prefetch_count=self._spec.prefetch)
        self._queue = await self._channel.declare_queue(
            self._spec.name, durable=True, arguments=QUORUM
        )
        self._tag = await self._queue.consume(self._on_message, no_ack=False)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.create_task(self._deliver(message), name=f"deliver:{self._spec.name}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        received = incoming(delivery(message))
        try:
            outcome = await self._handler(received)
        except Exception:
            log.exception("handler raised; message requeued", queue=self._spec.name)
            await _settle_quietly(message.nack(requeue=True))
            return
        await self._settler.settle(self._spec.name, message, received, outcome)

    async def stop(self, *, grace: float = 0.0) -> None:
        await self._cancel_consumer()
        if self._inflight and grace > 0:
            await asyncio.wait(set(self._inflight), timeout=grace)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._channel is not None:
            await bounded(self._channel.close())
        self._on_stop(self)

    async def _cancel_consumer(self) -> None:
        if self._queue is not None and self._tag is not None:
            await bounded(self._queue.cancel(self._tag))
            self._tag = None
