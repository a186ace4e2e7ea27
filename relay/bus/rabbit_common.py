"""aio-pika helpers every part of the RabbitMQ bus shares.

A message seen as plain ``Delivery`` data (what ``amqp`` works on), and clean-up steps that must
neither hang nor raise, because by the time they run the broker may be gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import AbstractIncomingMessage

from relay.bus.amqp import Delivery

log = structlog.get_logger(__name__)

CLOSE_TIMEOUT = 5.0


def delivery(message: AbstractIncomingMessage) -> Delivery:
    return Delivery(
        body=message.body,
        routing_key=message.routing_key,
        message_id=message.message_id,
        content_type=message.content_type,
        redelivered=bool(message.redelivered),
        headers=message.headers,
    )


async def bounded(operation: Awaitable[Any]) -> None:
    """Run a clean-up step that must not hang or raise (the broker may be gone)."""
    try:
        await asyncio.wait_for(operation, CLOSE_TIMEOUT)
    except (TimeoutError, *aio_pika.exceptions.CONNECTION_EXCEPTIONS) as exc:
        log.debug("clean-up step failed", error=repr(exc))
