"""The event bus interface every part of the relay talks to.

Two implementations keep the same semantics: ``memory`` (one process, for the embedded default
and fast tests) and ``rabbitmq`` (aio-pika; it and its ``rabbit_*`` helpers are the only modules
that import it).

Semantics, for both:
- ``publish`` returns only once the broker has taken responsibility for the message (publisher
  confirm); an unroutable, nacked or unconfirmed publish raises ``PublishError``.
- ``consume`` runs a handler per message on a durable per-worker queue, at most ``prefetch`` at
  once. The handler returns an ``Outcome``; the bus carries it out: ``Ack`` acknowledges,
  ``Retry`` republishes through the delay queue of step ``attempt`` and then acknowledges,
  ``DeadLetter`` moves the message to the dead-letter queue with its error. A handler that never
  returns (the process or channel died) leaves the message unacknowledged: it is redelivered.
- Which outcome to choose is the worker runtime's business (``workers.runtime``), not the bus's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from relay.events import CloudEvent

ATTEMPT_HEADER = "x-relay-attempt"
ERROR_HEADER = "x-relay-error"
ORIGIN_HEADER = "x-relay-origin"
DEAD_LETTER_QUEUE = "dead-letters"
HISTORY_QUEUE = "history"
# Every relay event family: what the history stream records (``relay tail --since``, the tracker).
HISTORY_KEYS = (
    "git.#",
    "deploy.#",
    "image.#",
    "manifests.#",
    "reconcile.#",
    "app.#",
    "flux.#",
    "registry.#",
)


@dataclass(frozen=True, kw_only=True)
class Incoming:
    """One delivery as a handler sees it: raw, because a body may not even be JSON."""

    body: bytes
    routing_key: str
    message_id: str | None
    content_type: str | None
    attempt: int = 1
    redelivered: bool = False
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Ack:
    pass


@dataclass(frozen=True)
class Retry:
    error: str


@dataclass(frozen=True)
class DeadLetter:
    error: str


Outcome = Ack | Retry | DeadLetter
Handler = Callable[[Incoming], Awaitable[Outcome]]


@dataclass(frozen=True, kw_only=True)
class QueueSpec:
    """A worker's durable queue and the routing keys (topic patterns) bound to it."""

    name: str
    keys: tuple[str, ...]
    prefetch: int = 1


@dataclass(frozen=True, kw_only=True)
class DeadLetterInfo:
    id: str
    queue: str
    routing_key: str
    error: str
    attempts: int
    failed_at: datetime | None
    event_id: str | None
    body: bytes


@dataclass(frozen=True)
class QueueStats:
    messages: int
    consumers: int


@runtime_checkable
class Consumer(Protocol):
    async def stop(self, *, grace: float = 0.0) -> None:
        """Stop taking messages; wait up to ``grace`` seconds for in-flight handlers."""


class Bus(Protocol):
    """What the gateway, the workers and the CLI need from a broker."""

    @property
    def connected(self) -> bool: ...

    async def start(self) -> None:
        """Connect and declare the exchange and dead-letter queue."""

    async def close(self) -> None: ...

    async def publish(self, event: CloudEvent) -> None:
        """Publish and wait for the broker's confirm; raises ``PublishError``."""

    async def publish_raw(self, body: bytes, *, routing_key: str, message_id: str | None) -> None:
        """Publish a body as it is (tests and replays); same confirm semantics."""

    async def declare(self, queue: QueueSpec) -> None:
        """Declare a worker queue, its bindings and its delay queues (idempotent)."""

    async def consume(self, queue: QueueSpec, handler: Handler) -> Consumer:
        """Declare ``queue`` and run ``handler`` for its messages until stopped."""

    def tap(self, keys: Sequence[str] = ("#",)) -> AsyncIterator[CloudEvent]:
        """Live events from an exclusive, auto-deleted queue (``relay tail``)."""

    def history(self, since: datetime | None = None) -> AsyncIterator[CloudEvent]:
        """Recorded events from ``since`` (default: as far back as retention keeps), then live.

        Needs ``broker.history``; on RabbitMQ it reads the history stream queue.
        """

    async def queue_stats(self, name: str) -> QueueStats | None:
        """Messages ready and consumers of a queue, or None when it does not exist."""

    async def dead_letters(self) -> list[DeadLetterInfo]:
        """The dead-lettered messages, oldest first, left in place."""

    async def replay(self, dead_letter_id: str) -> bool:
        """Send one dead letter back to its queue with a fresh attempt count."""
