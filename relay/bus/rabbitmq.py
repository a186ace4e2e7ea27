"""The RabbitMQ bus through aio-pika: the only module that imports ``aio_pika``.

Topology, per ``BrokerSettings``:
- a durable topic exchange (``relay.events``) every event is published to;
- per worker a durable quorum queue ``<name>`` bound to its keys, and one quorum delay queue per
  back-off step, ``<name>.retry.<n>``, whose queue-level TTL dead-letters messages back to the
  work queue. One queue per step because messages only expire from a queue's head: one queue
  holding several TTLs would make short delays wait behind long ones;
- one durable quorum dead-letter queue ``<prefix>.dead-letters``.

Every publish waits for the broker's confirm, is ``mandatory`` and persistent. Retries and dead
letters travel through the default exchange, and the event's routing key rides along in a header
so that a message coming back from a delay queue still says which event it is.

Publishing is the gateway's hot path, so it goes round-robin over a few confirm channels
(``broker.publisher_channels``: confirms on one channel come back in order and its broker-side
process handles one message at a time) and straight to aiormq's ``basic_publish`` with prebuilt
properties, without waiting for the frame to be flushed before the next publish may start (the
confirm is still awaited). aio-pika's per-message ``Message`` object cost about a third of the
client's CPU per publish (bench/gateway_load.py, BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, cast

import aio_pika
import aiormq
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from aiormq import spec

from relay.bus.amqp import (
    QUORUM,
    Delivery,
    Outgoing,
    dead_letter_info,
    dead_letter_of,
    delay_arguments,
    incoming,
    replay_of,
    retry_of,
    retry_queue,
)
from relay.bus.base import (
    DEAD_LETTER_QUEUE,
    HISTORY_KEYS,
    HISTORY_QUEUE,
    Ack,
    DeadLetter,
    DeadLetterInfo,
    Handler,
    Incoming,
    Outcome,
    QueueSpec,
    QueueStats,
    Retry,
)
from relay.bus.readers import until_lost
from relay.errors import BrokerUnavailable, InvalidEvent, NotConfirmed, PublishError, Unroutable
from relay.events import CONTENT_TYPE, CloudEvent, decode, encode
from relay.settings import BrokerSettings

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0
MAX_DEAD_LETTERS = 10_000
HISTORY_PREFETCH = 200
PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
ReadAll = Callable[[], Awaitable[list[AbstractIncomingMessage]]]


def delivery(message: AbstractIncomingMessage) -> Delivery:
    return Delivery(
        body=message.body,
        routing_key=message.routing_key,
        message_id=message.message_id,
        content_type=message.content_type,
        redelivered=bool(message.redelivered),
        headers=message.headers,
    )


def _properties(out: Outgoing) -> spec.Basic.Properties:
    """Persistent, ``application/cloudevents+json``, the event's id as ``message_id``."""
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=out.message_id,
        headers=out.headers or None,
    )


class RabbitConsumer:
    """One worker queue's consumer: its own channel, prefetch = the worker's concurrency."""

    def __init__(self, bus: RabbitBus, spec: QueueSpec, handler: Handler) -> None:
        self._bus = bus
        self._spec = spec
        self._handler = handler
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
        await self._bus.settle(self._spec.name, message, received, outcome)

    async def stop(self, *, grace: float = 0.0) -> None:
        await self._cancel_consumer()
        if self._inflight and grace > 0:
            await asyncio.wait(set(self._inflight), timeout=grace)
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._channel is not None:
            await _bounded(self._channel.close())
        self._bus.forget(self)

    async def _cancel_consumer(self) -> None:
        if self._queue is not None and self._tag is not None:
            await _bounded(self._queue.cancel(self._tag))
            self._tag = None


async def _bounded(operation: Awaitable[Any]) -> None:
    """Run a clean-up step that must not hang or raise (the broker may be gone)."""
    try:
        await asyncio.wait_for(operation, CLOSE_TIMEOUT)
    except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
        log.debug("clean-up step failed", error=repr(exc))


async def _settle_quietly(operation: Awaitable[Any]) -> None:
    """Ack or nack; on a lost channel the broker redelivers the message anyway."""
    try:
        await operation
    except (*aio_pika.exceptions.CONNECTION_EXCEPTIONS, aio_pika.exceptions.MessageProcessError):
        log.warning("could not settle a delivery; the broker will redeliver it")


class RabbitBus:
    """``amqp://``: the bus on RabbitMQ (quorum queues, confirms, delay queues, dead letters)."""

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._delays = list(settings.retry.delays) or [0.0]
        self._connection: AbstractRobustConnection | None = None
        self._publishers: list[AbstractRobustChannel] = []
        self._turn: Iterator[AbstractRobustChannel] = iter(())
        self._admin: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumers: set[RabbitConsumer] = set()
        self._restored = True  # False from a lost connection until every channel is restored

    @property
    def dead_letter_queue(self) -> str:
        return f"{self._settings.queue_prefix}.{DEAD_LETTER_QUEUE}"

    @property
    def connected(self) -> bool:
        conn = self._connection
        up = conn is not None and not conn.is_closed and conn.connected.is_set()
        return up and self._restored

    def _lost(self, *_: object) -> None:
        self._restored = False

    def _back(self, *_: object) -> None:
        # Publishing waits for this: a stream (the history) whose leader is not back yet can
        # confirm a message it never writes (seen with RabbitMQ 3.10 right after a restart).
        self._restored = True

    async def start(self) -> None:
        try:
            self._connection = await aio_pika.connect_robust(
                self._settings.url,
                timeout=CONNECT_TIMEOUT,
                reconnect_interval=self._settings.reconnect_interval,
            )
        except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
            raise BrokerUnavailable(f"cannot connect to the broker: {exc!r}") from None
        self._admin = await self._connection.channel(publisher_confirms=False)
        self._publishers = [
            await self._connection.channel(publisher_confirms=True, on_return_raises=True)
            for _ in range(self._settings.publisher_channels)
        ]
        self._turn = itertools.cycle(self._publishers)
        self._exchange = await self._admin.declare_exchange(
            self._settings.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        await self._admin.declare_queue(self.dead_letter_queue, durable=True, arguments=QUORUM)
        if self._settings.history:
            stream = await self._admin.declare_queue(
                self.history_queue, durable=True, arguments=self._stream_arguments()
            )
            for key in HISTORY_KEYS:
                await stream.bind(self._exchange, routing_key=key)
        self._connection.close_callbacks.add(self._lost)
        self._connection.reconnect_callbacks.add(self._back)

    @property
    def history_queue(self) -> str:
        return f"{self._settings.queue_prefix}.{HISTORY_QUEUE}"

    def _stream_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "stream",
            "x-max-age": self._settings.stream_max_age,
            "x-max-length-bytes": self._settings.stream_max_bytes,
        }

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        if self._connection is not None:
            await _bounded(self._connection.close())
        self._connection = None

    def _require(self) -> tuple[AbstractRobustConnection, AbstractRobustChannel, AbstractExchange]:
        if not self.connected or not self._publishers or self._exchange is None:
            raise BrokerUnavailable("not connected to the broker")
        assert self._connection is not None
        return self._connection, next(self._turn), self._exchange

    async def publish(self, event: CloudEvent) -> None:
        await self.publish_raw(encode(event), routing_key=event.routing_key, message_id=event.id)

    async def publish_raw(self, body: bytes, *, routing_key: str, message_id: str | None) -> None:
        out = Outgoing(body=body, message_id=message_id)
        await self._send(self._settings.exchange, out, routing_key)

    async def _send(self, exchange: str, out: Outgoing, routing_key: str) -> None:
        """Publish to ``exchange`` ("" = the default one) with confirm; every failure becomes a
        ``PublishError``."""
        _, channel, _ = self._require()
        try:
            async with asyncio.timeout(self._settings.confirm_timeout):
                await channel.ready()
                underlay = cast(aiormq.Channel, await channel.get_underlay_channel())
                await underlay.basic_publish(
                    out.body,
                    exchange=exchange,
                    routing_key=routing_key,
                    properties=_properties(out),
                    mandatory=True,
                    wait=False,  # the confirm is awaited; the socket flush need not be
                )
        except aiormq.exceptions.PublishError:
            raise Unroutable(f"no queue is bound to {routing_key!r}") from None
        except aiormq.exceptions.DeliveryError as exc:
            raise NotConfirmed(f"the broker refused the message: {exc.frame!r}") from None
        except TimeoutError:
            if not self.connected:
                raise BrokerUnavailable("lost the broker while publishing") from None
            raise NotConfirmed(
                f"no confirm within {self._settings.confirm_timeout}s for {routing_key!r}"
            ) from None
        except aio_pika.exceptions.CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable(f"lost the broker while publishing: {exc!r}") from None

    async def _send_to_queue(self, queue: str, out: Outgoing) -> None:
        await self._send("", out, queue)

    async def declare(self, queue: QueueSpec) -> None:
        self._require()
        assert self._admin is not None
        work = await self._admin.declare_queue(queue.name, durable=True, arguments=QUORUM)
        for key in queue.keys:
            await work.bind(self._settings.exchange, routing_key=key)
        for step, delay in enumerate(self._delays, start=1):
            await self._admin.declare_queue(
                f"{queue.name}.retry.{step}",
                durable=True,
                arguments=delay_arguments(queue.name, delay),
            )

    async def queue_stats(self, name: str) -> QueueStats | None:
        connection, _, _ = self._require()
        channel = await connection.channel(publisher_confirms=False)
        try:
            queue = await channel.declare_queue(name, passive=True, robust=False)
        except aio_pika.exceptions.ChannelClosed:
            return None
        finally:
            await _bounded(channel.close())
        result = queue.declaration_result
        return QueueStats(messages=result.message_count or 0, consumers=result.consumer_count or 0)

    async def consume(self, queue: QueueSpec, handler: Handler) -> RabbitConsumer:
        await self.declare(queue)
        connection, _, _ = self._require()
        consumer = RabbitConsumer(self, queue, handler)
        await consumer.start(connection)
        self._consumers.add(consumer)
        return consumer

    def forget(self, consumer: RabbitConsumer) -> None:
        self._consumers.discard(consumer)

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
                target = retry_queue(queue, message.attempt, len(self._delays))
                await self._send_to_queue(target, retry_of(message, error))
            case DeadLetter(error=error):
                dead = dead_letter_of(queue, message, error)
                await self._send_to_queue(self.dead_letter_queue, dead)

    async def tap(self, keys: Sequence[str] = ("#",)) -> AsyncIterator[CloudEvent]:
        connection, _, _ = self._require()
        channel = await connection.channel(publisher_confirms=False)
        try:
            name = f"{self._settings.queue_prefix}.tap.{uuid.uuid4().hex[:12]}"
            queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
            for key in keys:
                await queue.bind(self._settings.exchange, routing_key=key)
            async with queue.iterator(no_ack=True) as messages:
                async for message in until_lost(messages, connection):
                    event = _tapped(message)
                    if event is not None:
                        yield event
        finally:
            await _bounded(channel.close())

    async def history(self, since: datetime | None = None) -> AsyncIterator[CloudEvent]:
        if not self._settings.history:
            raise RuntimeError("broker.history is off: there is no history stream")
        connection, _, _ = self._require()
        channel = await connection.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=HISTORY_PREFETCH)
            queue = await channel.declare_queue(
                self.history_queue, durable=True, arguments=self._stream_arguments(), robust=False
            )
            offset: datetime | str = since if since is not None else "first"
            async with queue.iterator(arguments={"x-stream-offset": offset}) as messages:
                async for message in until_lost(messages, connection):
                    await message.ack()
                    event = _tapped(message)
                    if event is not None and (since is None or event.time >= since):
                        yield event
        finally:
            await _bounded(channel.close())

    async def dead_letters(self) -> list[DeadLetterInfo]:
        async with self._dead_letter_reader() as read:
            return [dead_letter_info(delivery(message)) for message in await read()]

    async def replay(self, dead_letter_id: str) -> bool:
        async with self._dead_letter_reader() as read:
            for message in await read():
                if message.message_id == dead_letter_id:
                    return await self._replay_one(message)
        return False

    async def _replay_one(self, message: AbstractIncomingMessage) -> bool:
        queue, out = replay_of(delivery(message))
        try:
            await self._send_to_queue(queue, out)
        except Unroutable:
            log.warning("dead letter's queue is gone; left in place", queue=queue)
            return False
        await message.ack()
        return True

    @contextlib.asynccontextmanager
    async def _dead_letter_reader(self) -> AsyncIterator[ReadAll]:
        """Take every dead letter unacknowledged on a private channel; closing returns the rest."""
        connection, _, _ = self._require()
        channel = await connection.channel(publisher_confirms=False)
        queue = await channel.declare_queue(
            self.dead_letter_queue, durable=True, arguments=QUORUM, robust=False
        )

        async def read() -> list[AbstractIncomingMessage]:
            taken: list[AbstractIncomingMessage] = []
            while len(taken) < MAX_DEAD_LETTERS:
                message = await queue.get(no_ack=False, fail=False)
                if message is None:
                    break
                taken.append(message)
            return taken

        try:
            yield read
        finally:
            await _bounded(channel.close())


def _tapped(message: AbstractIncomingMessage) -> CloudEvent | None:
    try:
        return decode(message.body, routing_key=message.routing_key)
    except InvalidEvent as exc:
        log.warning("tap skipped an invalid event", routing_key=message.routing_key, error=str(exc))
        return None


__all__ = ["RabbitBus", "RabbitConsumer"]
