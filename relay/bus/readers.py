"""Readers of a broker connection that end when the connection drops, instead of hanging.

aio-pika's robust connection reconnects and restores its channels and robust queues, but not a
consumer started on a non-robust queue (the history stream, a tap's exclusive queue): its
iterator would wait for messages that can never come. ``until_lost`` ends such a reader with
``BrokerUnavailable`` when the connection's close callbacks fire, so its caller reads again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, Protocol, TypeVar

from relay.errors import BrokerUnavailable

T = TypeVar("T")


class Closing(Protocol):
    """A connection with close callbacks (aio-pika's ``CallbackCollection``)."""

    @property
    def close_callbacks(self) -> Any: ...


async def until_lost(messages: AsyncIterator[T], connection: Closing) -> AsyncIterator[T]:
    """``messages`` until the connection drops, then ``BrokerUnavailable``."""
    lost = asyncio.Event()

    def on_close(*_: object) -> None:
        lost.set()

    connection.close_callbacks.add(on_close)
    gone = asyncio.ensure_future(lost.wait())
    step: asyncio.Future[T] | None = None
    try:
        while True:
            step = asyncio.ensure_future(anext(messages))
            await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                raise BrokerUnavailable("lost the broker while reading; read again")
            try:
                message = step.result()
            except StopAsyncIteration:
                return
            yield message
    finally:
        for waiting in (step, gone):
            if waiting is not None:
                waiting.cancel()
        connection.close_callbacks.discard(on_close)
