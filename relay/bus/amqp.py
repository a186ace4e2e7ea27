"""How the relay's bus rides on AMQP, as plain data: queue arguments and message headers.

Kept apart from ``rabbitmq`` and its ``rabbit_*`` modules (the aio-pika plumbing) so the
conventions can be read in one place:
- the attempt, the last error and the event's routing key travel in ``x-relay-*`` headers, because
  a message dead-lettered back from a delay queue arrives with the work queue's name as its key;
- a dead letter gets its own ``message_id`` (its stable id for ``relay dlq``) and keeps the
  original one, its queue, error, attempts, routing key and failure time in headers.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from relay.bus.base import ATTEMPT_HEADER, ERROR_HEADER, ORIGIN_HEADER, DeadLetterInfo, Incoming
from relay.errors import InvalidEvent
from relay.events import decode

ROUTING_KEY_HEADER = "x-relay-routing-key"
MESSAGE_ID_HEADER = "x-relay-message-id"
FAILED_AT_HEADER = "x-relay-failed-at"
MAX_ERROR_LENGTH = 2000
QUORUM: dict[str, Any] = {"x-queue-type": "quorum"}


def delay_arguments(work_queue: str, delay: float) -> dict[str, Any]:
    """A delay queue: hold every message ``delay`` seconds, then back to ``work_queue``.

    At-least-once dead-lettering (which needs ``reject-publish``) so that a message on its way
    back is never dropped.
    """
    return {
        **QUORUM,
        "x-message-ttl": max(0, round(delay * 1000)),
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": work_queue,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def retry_queue(work_queue: str, attempt: int, steps: int) -> str:
    """The delay queue for a message that failed on ``attempt``; the last step repeats."""
    return f"{work_queue}.retry.{min(attempt, steps)}"


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """What a received AMQP message says."""

    body: bytes
    routing_key: str | None
    message_id: str | None
    content_type: str | None
    redelivered: bool
    headers: Mapping[str, object]


@dataclass(frozen=True, kw_only=True)
class Outgoing:
    """A message to publish: persistent, ``application/cloudevents+json``, mandatory."""

    body: bytes
    message_id: str | None
    headers: dict[str, Any] = field(default_factory=dict)


def _header_text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool):
        return str(value)
    return None


def text_headers(headers: Mapping[str, object]) -> dict[str, str]:
    """The scalar headers as text (``x-death`` and other tables are left out)."""
    found = {key: _header_text(value) for key, value in headers.items()}
    return {key: value for key, value in found.items() if value is not None}


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def incoming(delivery: Delivery) -> Incoming:
    headers = text_headers(delivery.headers)
    return Incoming(
        body=delivery.body,
        routing_key=headers.get(ROUTING_KEY_HEADER) or delivery.routing_key or "",
        message_id=delivery.message_id,
        content_type=delivery.content_type,
        attempt=_int(headers.get(ATTEMPT_HEADER), 1),
        redelivered=delivery.redelivered,
        headers=headers,
    )


def retry_of(message: Incoming, error: str) -> Outgoing:
    relay_headers = {k: v for k, v in message.headers.items() if k.startswith("x-relay-")}
    headers = {
        **relay_headers,
        ATTEMPT_HEADER: message.attempt + 1,
        ERROR_HEADER: error[:MAX_ERROR_LENGTH],
        ROUTING_KEY_HEADER: message.routing_key,
    }
    return Outgoing(body=message.body, message_id=message.message_id, headers=headers)


def dead_letter_of(queue: str, message: Incoming, error: str) -> Outgoing:
    headers = {
        ORIGIN_HEADER: queue,
        ERROR_HEADER: error[:MAX_ERROR_LENGTH],
        ATTEMPT_HEADER: message.attempt,
        FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
        ROUTING_KEY_HEADER: message.routing_key,
        MESSAGE_ID_HEADER: message.message_id or "",
    }
    return Outgoing(body=message.body, message_id=uuid.uuid4().hex[:16], headers=headers)


def dead_letter_info(delivery: Delivery) -> DeadLetterInfo:
    headers = text_headers(delivery.headers)
    failed_at = headers.get(FAILED_AT_HEADER)
    return DeadLetterInfo(
        id=delivery.message_id or "",
        queue=headers.get(ORIGIN_HEADER, ""),
        routing_key=headers.get(ROUTING_KEY_HEADER, delivery.routing_key or ""),
        error=headers.get(ERROR_HEADER, ""),
        attempts=_int(headers.get(ATTEMPT_HEADER), 1),
        failed_at=datetime.fromisoformat(failed_at) if failed_at else None,
        event_id=_event_id(delivery.body, headers.get(MESSAGE_ID_HEADER)),
        body=delivery.body,
    )


def _event_id(body: bytes, message_id: str | None) -> str | None:
    try:
        return decode(body).id
    except InvalidEvent:
        return message_id or None


def replay_of(dead: Delivery) -> tuple[str, Outgoing]:
    """The work queue a dead letter came from, and the message that sends it back, attempt 1."""
    info = dead_letter_info(dead)
    original_id = text_headers(dead.headers).get(MESSAGE_ID_HEADER) or None
    headers = {ROUTING_KEY_HEADER: info.routing_key, ATTEMPT_HEADER: 1}
    return info.queue, Outgoing(body=info.body, message_id=original_id, headers=headers)
