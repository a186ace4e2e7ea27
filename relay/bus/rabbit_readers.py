"""The RabbitMQ bus's readers: live taps, the history stream and the dead-letter queue.

Each reader works on a private channel of its own, closed when it ends. Taps and the history
stream read through ``readers.until_lost``, so a lost connection ends them instead of hanging.
Each takes ``connect``, which returns the connection or raises ``BrokerUnavailable``; the
generators call it on their first step, as any method of the bus would.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractRobustConnection

from relay.bus.amqp import QUORUM
from relay.bus.rabbit_common import bounded
from relay.bus.readers import until_lost
from relay.errors import BrokerUnavailable, InvalidEvent
from relay.events import CloudEvent, decode

log = structlog.get_logger(__name__)

MAX_DEAD_LETTERS = 10_000
HISTORY_PREFETCH = 200
LOCK_WAIT = 30.0  # seconds a dead-letter reader waits for another one to finish
Connect = Callable[[], AbstractRobustConnection]
ReadAll = Callable[[], Awaitable[list[AbstractIncomingMessage]]]


async def tap(
    connect: Connect, *, exchange: str, queue_prefix: str, keys: Sequence[str]
) -> AsyncIterator[CloudEvent]:
    """Live events from an exclusive, auto-deleted queue bound to ``keys``."""
    connection = connect()
    channel = await connection.channel(publisher_confirms=False)
    try:
        name = f"{queue_prefix}.tap.{uuid.uuid4().hex[:12]}"
        queue = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        for key in keys:
            await queue.bind(exchange, routing_key=key)
        async with queue.iterator(no_ack=True) as messages:
            async for message in until_lost(messages, connection):
                event = _tapped(message)
                if event is not None:
                    yield event
    finally:
        await bounded(channel.close())


async def history(
    connect: Connect, *, queue: str, arguments: dict[str, Any], since: datetime | None
) -> AsyncIterator[CloudEvent]:
    """The history stream from ``since`` (or its first retained message), then live."""
    connection = connect()
    channel = await connection.channel(publisher_confirms=False)
    try:
        await channel.set_qos(prefetch_count=HISTORY_PREFETCH)
        stream = await channel.declare_queue(queue, durable=True, arguments=arguments, robust=False)
        offset: datetime | str = since if since is not None else "first"
        async with stream.iterator(arguments={"x-stream-offset": offset}) as messages:
            async for message in until_lost(messages, connection):
                await message.ack()
                event = _tapped(message)
                if event is not None and (since is None or event.time >= since):
                    yield event
    finally:
        await bounded(channel.close())


@contextlib.asynccontextmanager
async def dead_letter_reader(
    connection: AbstractRobustConnection, queue: str
) -> AsyncIterator[ReadAll]:
    """Take every dead letter unacknowledged on a private channel; closing returns the rest.

    Readers take turns (``_reader_lock``): a message one reader holds unacknowledged is invisible
    to another, so two at once would each miss the other's share.
    """
    name = f"{queue}.reader-lock"
    lock = await _reader_lock(connection, name)
    try:
        async with _reading(connection, queue) as read:
            yield read
    finally:
        with contextlib.suppress(aiormq.exceptions.AMQPError):
            await bounded(lock.queue_delete(name))
        await bounded(lock.close())


async def _reader_lock(connection: AbstractRobustConnection, name: str) -> AbstractChannel:
    """Hold an exclusive queue named ``name``: the broker lets one connection own it at a time
    and deletes it with that connection, so a crashed reader never leaves the lock taken."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOCK_WAIT
    pause = 0.02
    while True:
        channel = await connection.channel(publisher_confirms=False)
        try:
            await channel.declare_queue(name, exclusive=True, robust=False)
            return channel
        except aiormq.exceptions.ChannelLockedResource:
            await bounded(channel.close())
            if loop.time() >= deadline:
                raise BrokerUnavailable(
                    f"another dead-letter reader held {name} for {LOCK_WAIT:g} s"
                ) from None
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.5)


@contextlib.asynccontextmanager
async def _reading(connection: AbstractRobustConnection, queue: str) -> AsyncIterator[ReadAll]:
    channel = await connection.channel(publisher_confirms=False)
    dead_letters = await channel.declare_queue(queue, durable=True, arguments=QUORUM, robust=False)

    async def read() -> list[AbstractIncomingMessage]:
        taken: list[AbstractIncomingMessage] = []
        while len(taken) < MAX_DEAD_LETTERS:
            message = await dead_letters.get(no_ack=False, fail=False)
            if message is None:
                break
            taken.append(message)
        return taken

    try:
        yield read
    finally:
        await bounded(channel.close())


def _tapped(message: AbstractIncomingMessage) -> CloudEvent | None:
    try:
        return decode(message.body, routing_key=message.routing_key)
    except InvalidEvent as exc:
        log.warning("tap skipped an invalid event", routing_key=message.routing_key, error=str(exc))
        return None
