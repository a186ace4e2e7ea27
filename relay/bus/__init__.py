"""The event bus: interface (``base``), in-process (``memory``) and RabbitMQ (``rabbitmq``).

``rabbitmq`` holds the ``RabbitBus`` facade over ``rabbit_publisher``, ``rabbit_consumer``,
``rabbit_readers`` and ``rabbit_common``: the only modules that import ``aio_pika``.
"""

from __future__ import annotations

from relay.bus.base import (
    Ack,
    Bus,
    Consumer,
    DeadLetter,
    DeadLetterInfo,
    Handler,
    Incoming,
    Outcome,
    QueueSpec,
    Retry,
)
from relay.settings import BrokerSettings

__all__ = [
    "Ack",
    "Bus",
    "Consumer",
    "DeadLetter",
    "DeadLetterInfo",
    "Handler",
    "Incoming",
    "Outcome",
    "QueueSpec",
    "Retry",
    "connect",
]


def connect(settings: BrokerSettings) -> Bus:
    """The bus named by ``settings.url`` (not started yet)."""
    if settings.url.startswith("memory://"):
        from relay.bus.memory import MemoryBus

        return MemoryBus(
            settings.retry,
            history=settings.history,
            history_bytes=settings.memory_history_bytes,
        )
    if settings.url.startswith(("amqp://", "amqps://")):
        from relay.bus.rabbitmq import RabbitBus

        return RabbitBus(settings)
    raise ValueError(
        f"broker.url must start with amqp://, amqps:// or memory://, not {settings.url!r}"
    )
