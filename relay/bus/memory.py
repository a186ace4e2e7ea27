"""The in-process bus: RabbitMQ's semantics for one process (``memory://``).

Routing by topic pattern, "confirms" that succeed once a message is queued, unroutable publishes
that raise, per-queue prefetch, retries through timed re-queues with the attempt counted, dead
letters with their error, and redelivery of work whose handler died or was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import structlog

from relay.bus.base import (
    DEAD_LETTER_QUEUE,
    HISTORY_KEYS,
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
from relay.bus.topic import matches
from relay.errors import BrokerUnavailable, InvalidEvent, Unroutable
from relay.events import CONTENT_TYPE, CloudEvent, decode, encode
from relay.settings import RetrySettings

log = structlog.get_logger(__name__)


@dataclass
class _Queue:
    name: str
    keys: tuple[str, ...]
    items: deque[Incoming] = field(default_factory=deque)
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, message: Incoming) -> None:
        self.items.append(message)
        self.ready.set()

    async def get(self) -> Incoming:
        while not self.items:
            self.ready.clear()
            await self.ready.wait()
        return self.items.popleft()


class MemoryConsumer:
    def __init__(self, bus: MemoryBus, queue: _Queue, handler: Handler, prefetch: int) -> None:
        self._bus = bus
        self._queue = queue
        self.queue = queue
        self._handler = handler
        self._inflight: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(prefetch)
        self._pump = asyncio.create_task(self._run(), name=f"memory-consumer:{queue.name}")

    async def _run(self) -> None:
        while True:
            await self._slots.acquire()
            try:
                message = await self._queue.get()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            task = asyncio.create_task(self._deliver(message))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

    async def _deliver(self, message: Incoming) -> None:
        try:
            outcome = await self._handler(message)
        except BaseException:
            # The handler died without an outcome: like a closed channel, redeliver.
            self._queue.put(replace(message, redelivered=True))
            raise
        finally:
            self._slots.release()
        self._bus.settle(self._queue, message, outcome)

    async def stop(self, *, grace: float = 0.0) -> None:
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        if self._inflight and grace > 0:
            await asyncio.wait(set(self._inflight), timeout=grace)
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        self._bus.forget(self)


def _feed_taps(sinks: list[asyncio.Queue[CloudEvent]], body: bytes, routing_key: str) -> None:
    """Taps see decoded events only; like RabbitMQ's tap, an invalid body is skipped."""
    try:
        event = decode(body, routing_key=routing_key)
    except InvalidEvent as exc:
        log.warning("tap skipped an invalid event", routing_key=routing_key, error=str(exc))
        return
    for sink in sinks:
        sink.put_nowait(event)


class MemoryBus:
    """``memory://``: every bus behaviour, in this process."""

    def __init__(
        self,
        retry: RetrySettings | None = None,
        *,
        history: bool = True,
        history_size: int = 20_000,
        history_bytes: int = 32 * 1024 * 1024,
    ) -> None:
        self._retry = retry or RetrySettings()
        # (event, encoded size): bounded by count and by the bytes of the encoded events, oldest
        # first out, as a stream's retention would (git.<event> can carry whole payloads)
        self._history: deque[tuple[CloudEvent, int]] | None = deque() if history else None
        self._history_size = history_size
        self._history_bytes = history_bytes
        self._history_total = 0
        self._queues: dict[str, _Queue] = {}
        self._taps: list[tuple[tuple[str, ...], asyncio.Queue[CloudEvent]]] = []
        self._dead: dict[str, DeadLetterInfo] = {}
        self._consumers: set[MemoryConsumer] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._started = False

    @property
    def connected(self) -> bool:
        return self._started

    async def start(self) -> None:
        self._started = True

    async def close(self) -> None:
        for consumer in list(self._consumers):
            await consumer.stop()
        for timer in self._timers:
            timer.cancel()
        self._started = False

    async def publish(self, event: CloudEvent) -> None:
        await self.publish_raw(encode(event), routing_key=event.routing_key, message_id=event.id)

    async def publish_raw(self, body: bytes, *, routing_key: str, message_id: str | None) -> None:
        if not self._started:
            raise BrokerUnavailable("the in-memory bus is not started")
        targets = [q for q in self._queues.values() if any(matches(k, routing_key) for k in q.keys)]
        sinks = [sink for keys, sink in self._taps if any(matches(k, routing_key) for k in keys)]
        recorded = self._history is not None and any(matches(k, routing_key) for k in HISTORY_KEYS)
        if not targets and not sinks and not recorded:
            raise Unroutable(f"no queue is bound to {routing_key!r}")
        if recorded and self._history is not None:
            with contextlib.suppress(InvalidEvent):
                self._record(decode(body, routing_key=routing_key), len(body))
        message = Incoming(
            body=body, routing_key=routing_key, message_id=message_id, content_type=CONTENT_TYPE
        )
        for queue in targets:
            queue.put(message)
        if sinks:
            _feed_taps(sinks, body, routing_key)

    async def declare(self, queue: QueueSpec) -> None:
        existing = self._queues.get(queue.name)
        if existing is None:
            self._queues[queue.name] = _Queue(queue.name, queue.keys)
        else:
            existing.keys = tuple(dict.fromkeys((*existing.keys, *queue.keys)))

    async def consume(self, queue: QueueSpec, handler: Handler) -> MemoryConsumer:
        await self.declare(queue)
        consumer = MemoryConsumer(self, self._queues[queue.name], handler, queue.prefetch)
        self._consumers.add(consumer)
        return consumer

    def forget(self, consumer: MemoryConsumer) -> None:
        self._consumers.discard(consumer)

    def settle(self, queue: _Queue, message: Incoming, outcome: Outcome) -> None:
        match outcome:
            case Ack():
                return
            case Retry(error=error):
                delays = self._retry.delays or [0.0]
                delay = delays[min(message.attempt - 1, len(delays) - 1)]
                again = replace(
                    message,
                    attempt=message.attempt + 1,
                    redelivered=False,
                    headers={**message.headers, "x-relay-error": error},
                )
                timer = asyncio.get_running_loop().call_later(delay, self._requeue, queue, again)
                self._timers.add(timer)
            case DeadLetter(error=error):
                self._bury(queue.name, message, error)

    def _requeue(self, queue: _Queue, message: Incoming) -> None:
        self._timers = {t for t in self._timers if not t.cancelled() and t.when() > 0}
        queue.put(message)

    def _bury(self, queue: str, message: Incoming, error: str) -> None:
        dead_id = uuid.uuid4().hex[:12]
        event_id: str | None
        try:
            event_id = decode(message.body).id
        except Exception:
            event_id = message.message_id
        self._dead[dead_id] = DeadLetterInfo(
            id=dead_id,
            queue=queue,
            routing_key=message.routing_key,
            error=error,
            attempts=message.attempt,
            failed_at=datetime.now(UTC),
            event_id=event_id,
            body=message.body,
        )

    def _record(self, event: CloudEvent, size: int) -> None:
        assert self._history is not None
        self._history.append((event, size))
        self._history_total += size
        while self._history and (
            len(self._history) > self._history_size or self._history_total > self._history_bytes
        ):
            _, dropped = self._history.popleft()
            self._history_total -= dropped

    async def history(self, since: datetime | None = None) -> AsyncIterator[CloudEvent]:
        if self._history is None:
            raise RuntimeError("broker.history is off: this bus records no history")
        live = self.tap(HISTORY_KEYS)
        pending = asyncio.ensure_future(anext(live))  # subscribe before taking the snapshot
        await asyncio.sleep(0)
        snapshot = [e for e, _ in self._history if since is None or e.time >= since]
        seen = {e.id for e in snapshot}
        try:
            for event in snapshot:
                yield event
            while True:
                event = await pending
                pending = asyncio.ensure_future(anext(live))
                if event.id not in seen:
                    yield event
        finally:
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending
            await live.aclose()

    async def tap(self, keys: Sequence[str] = ("#",)) -> AsyncGenerator[CloudEvent, None]:
        sink: asyncio.Queue[CloudEvent] = asyncio.Queue()
        entry = (tuple(keys), sink)
        self._taps.append(entry)
        try:
            while True:
                yield await sink.get()
        finally:
            self._taps.remove(entry)

    async def dead_letters(self) -> list[DeadLetterInfo]:
        return list(self._dead.values())

    async def replay(self, dead_letter_id: str) -> bool:
        info = self._dead.pop(dead_letter_id, None)
        if info is None:
            return False
        queue = self._queues.get(info.queue)
        if queue is None:
            self._dead[dead_letter_id] = info
            return False
        queue.put(
            Incoming(
                body=info.body,
                routing_key=info.routing_key,
                message_id=info.event_id,
                content_type=CONTENT_TYPE,
            )
        )
        return True

    def queue_depth(self, name: str) -> int:
        queue = self._queues.get(name)
        return len(queue.items) if queue else 0

    async def queue_stats(self, name: str) -> QueueStats | None:
        if name.endswith(f".{DEAD_LETTER_QUEUE}"):
            return QueueStats(messages=len(self._dead), consumers=0)
        queue = self._queues.get(name)
        if queue is None:
            return None
        consumers = sum(1 for c in self._consumers if c.queue is queue)
        return QueueStats(messages=len(queue.items), consumers=consumers)


__all__ = ["DEAD_LETTER_QUEUE", "MemoryBus", "MemoryConsumer"]
