"""The RabbitMQ bus through aio-pika: ``RabbitBus``, over its ``rabbit_*`` helper modules.

Only this module and ``rabbit_common``, ``rabbit_publisher`` (confirm channels),
``rabbit_consumer`` (consumers, settling outcomes) and ``rabbit_readers`` (taps, history, dead
letters) import ``aio_pika``; ``amqp`` holds the AMQP conventions as plain data.

Topology, per ``BrokerSettings``:
- a durable topic exchange (``relay.events``) every event is published to;
- per worker a durable quorum queue ``<name>`` bound to its keys, and one quorum delay queue per
  back-off step, ``<name>.retry.<n>``, whose queue-level TTL dead-letters messages back to the
  work queue. One queue per step because messages only expire from a queue's head: one queue
  holding several TTLs would make short delays wait behind long ones;
- one durable quorum dead-letter queue ``<prefix>.dead-letters``;
- with ``broker.history``, a stream queue ``<prefix>.history`` bound to every relay event family.

Every publish waits for the broker's confirm, is ``mandatory`` and persistent (see
``rabbit_publisher`` for how the gateway's hot path publishes). Retries and dead letters travel
through the default exchange, and the event's routing key rides along in a header so that a
message coming back from a delay queue still says which event it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from relay.bus import rabbit_readers
from relay.bus.amqp import QUORUM, Outgoing, dead_letter_info, delay_arguments, replay_of
from relay.bus.base import (
    DEAD_LETTER_QUEUE,
    HISTORY_KEYS,
    HISTORY_QUEUE,
    DeadLetterInfo,
    Handler,
    QueueSpec,
    QueueStats,
)
from relay.bus.rabbit_common import bounded, delivery
from relay.bus.rabbit_consumer import RabbitConsumer, Settler
from relay.bus.rabbit_publisher import PublisherPool
from relay.errors import BrokerUnavailable, Unroutable
from relay.events import CloudEvent, encode
from relay.settings import BrokerSettings

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT = 10.0


class RabbitBus:
    """``amqp://``: the bus on RabbitMQ (quorum queues, confirms, delay queues, dead letters)."""

    def __init__(self, settings: BrokerSettings) -> None:
        self._settings = settings
        self._delays = list(settings.retry.delays) or [0.0]
        self._connection: AbstractRobustConnection | None = None
        self._publishers = PublisherPool(
            confirm_timeout=settings.confirm_timeout, connected=lambda: self.connected
        )
        self._settler = Settler(
            send_to_queue=self._send_to_queue,
            dead_letter_queue=self.dead_letter_queue,
            steps=len(self._delays),
        )
        self._admin: AbstractRobustChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._consumers: set[RabbitConsumer] = set()
        self._restored = True  # False from a lost connection until every channel is restored

    @property
    def dead_letter_queue(self) -> str:
        return f"{self._settings.queue_prefix}.{DEAD_LETTER_QUEUE}"

    @property
    def history_queue(self) -> str:
        return f"{self._settings.queue_prefix}.{HISTORY_QUEUE}"

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
        await self._publishers.start(self._connection, channels=self._settings.publisher_channels)
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
            await bounded(self._connection.close())
        self._connection = None

    def _require(self) -> AbstractRobustConnection:
        if not self.connected or not self._publishers.open or self._exchange is None:
            raise BrokerUnavailable("not connected to the broker")
        assert self._connection is not None
        return self._connection

    async def publish(self, event: CloudEvent) -> None:
        await self.publish_raw(encode(event), routing_key=event.routing_key, message_id=event.id)

    async def publish_raw(self, body: bytes, *, routing_key: str, message_id: str | None) -> None:
        out = Outgoing(body=body, message_id=message_id)
        await self._send(self._settings.exchange, out, routing_key)

    async def _send(self, exchange: str, out: Outgoing, routing_key: str) -> None:
        self._require()
        await self._publishers.send(exchange, out, routing_key)

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
        channel = await self._require().channel(publisher_confirms=False)
        try:
            queue = await channel.declare_queue(name, passive=True, robust=False)
        except aio_pika.exceptions.ChannelClosed:
            return None
        finally:
            await bounded(channel.close())
        result = queue.declaration_result
        return QueueStats(messages=result.message_count or 0, consumers=result.consumer_count or 0)

    async def consume(self, queue: QueueSpec, handler: Handler) -> RabbitConsumer:
        await self.declare(queue)
        connection = self._require()
        consumer = RabbitConsumer(
            queue, handler, settler=self._settler, on_stop=self._consumers.discard
        )
        await consumer.start(connection)
        self._consumers.add(consumer)
        return consumer

    def tap(self, keys: Sequence[str] = ("#",)) -> AsyncIterator[CloudEvent]:
        return rabbit_readers.tap(
            self._require,
            exchange=self._settings.exchange,
            queue_prefix=self._settings.queue_prefix,
            keys=keys,
        )

    def history(self, since: datetime | None = None) -> AsyncIterator[CloudEvent]:
        return rabbit_readers.history(
            self._require_history,
            queue=self.history_queue,
            arguments=self._stream_arguments(),
            since=since,
        )

    def _require_history(self) -> AbstractRobustConnection:
        if not self._settings.history:
            raise RuntimeError("broker.history is off: there is no history stream")
        return self._require()

    async def dead_letters(self) -> list[DeadLetterInfo]:
        async with self._dead_letter_reader() as read:
            return [dead_letter_info(delivery(message)) for message in await read()]

    async def replay(self, dead_letter_id: str) -> bool:
        async with self._dead_letter_reader() as read:
            for message in await read():
                if message.message_id == dead_letter_id:
                    return await self._replay_one(message)
        return False

    def _dead_letter_reader(
        self,
    ) -> contextlib.AbstractAsyncContextManager[rabbit_readers.ReadAll]:
        return rabbit_readers.dead_letter_reader(self._require(), self.dead_letter_queue)

    async def _replay_one(self, message: AbstractIncomingMessage) -> bool:
        queue, out = replay_of(delivery(message))
        try:
            await self._send_to_queue(queue, out)
        except Unroutable:
            log.warning("dead letter's queue is gone; left in place", queue=queue)
            return False
        await message.ack()
        return True


__all__ = ["RabbitBus", "RabbitConsumer"]
