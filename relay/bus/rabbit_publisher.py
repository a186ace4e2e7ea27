"""The RabbitMQ bus's publishing: a pool of confirm channels, every failure a ``PublishError``.

Every publish waits for the broker's confirm, is ``mandatory`` and persistent. Publishing is the
gateway's hot path, so it goes round-robin over a few confirm channels
(``broker.publisher_channels``: confirms on one channel come back in order and its broker-side
process handles one message at a time) and straight to aiormq's ``basic_publish`` with prebuilt
properties, without waiting for the frame to be flushed before the next publish may start (the
confirm is still awaited). aio-pika's per-message ``Message`` object cost about a third of the
client's CPU per publish (bench/gateway_load.py, BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import cast

import aio_pika
import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq import spec

from relay.bus.amqp import Outgoing
from relay.errors import BrokerUnavailable, NotConfirmed, Unroutable
from relay.events import CONTENT_TYPE

PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)


def _properties(out: Outgoing) -> spec.Basic.Properties:
    """Persistent, ``application/cloudevents+json``, the event's id as ``message_id``."""
    return spec.Basic.Properties(
        content_type=CONTENT_TYPE,
        delivery_mode=PERSISTENT,
        message_id=out.message_id,
        headers=out.headers or None,
    )


class PublisherPool:
    """Confirm channels that publishes take turns on."""

    def __init__(self, *, confirm_timeout: float, connected: Callable[[], bool]) -> None:
        self._confirm_timeout = confirm_timeout
        self._connected = connected
        self._channels: list[AbstractRobustChannel] = []
        self._turn: Iterator[AbstractRobustChannel] = iter(())

    @property
    def open(self) -> bool:
        return bool(self._channels)

    async def start(self, connection: AbstractRobustConnection, *, channels: int) -> None:
        self._channels = [
            await connection.channel(publisher_confirms=True, on_return_raises=True)
            for _ in range(channels)
        ]
        self._turn = itertools.cycle(self._channels)

    async def send(self, exchange: str, out: Outgoing, routing_key: str) -> None:
        """Publish to ``exchange`` ("" = the default one) with confirm; every failure becomes a
        ``PublishError``."""
        channel = next(self._turn)
        try:
            async with asyncio.timeout(self._confirm_timeout):
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
            if not self._connected():
                raise BrokerUnavailable("lost the broker while publishing") from None
            raise NotConfirmed(
                f"no confirm within {self._confirm_timeout}s for {routing_key!r}"
            ) from None
        except aio_pika.exceptions.CONNECTION_EXCEPTIONS as exc:
            raise BrokerUnavailable(f"lost the broker while publishing: {exc!r}") from None
