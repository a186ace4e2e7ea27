"""Group commit: many concurrent callers, one flush for all of them.

``submit(item)`` queues an item and waits for its own result. One runner task gathers items for
``window`` seconds after the first arrives (or until ``max_size`` are waiting), hands them to
``flush`` as one batch, and gives every caller its result or exception. Flushes never overlap:
items arriving while one runs form the next batch, so under load batches grow by themselves
and at rest a lone item waits no more than the window. The runner exists only while there is
work, so there is nothing to start or stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

log = structlog.get_logger(__name__)

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


@dataclass
class _Waiting(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    since: float


class Batcher(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], *, window: float, max_size: int) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self._flush = flush
        self._window = window
        self._max = max_size
        self._pending: list[_Waiting[T, R]] = []
        self._arrived = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0

    async def submit(self, item: T) -> R:
        """Queue ``item`` and wait for the result of the batch it lands in."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._pending.append(_Waiting(item, future, loop.time()))
        self._arrived.set()
        if self._runner is None or self._runner.done():
            # A context of its own: the batch is not the deployment that happened to start it.
            self._runner = asyncio.create_task(
                self._run(), name="commit-batcher", context=contextvars.Context()
            )
        return await future

    async def _run(self) -> None:
        while self._pending:
            await self._gather()
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            live = [w for w in batch if not w.future.done()]
            if live:
                await self._flush_batch(live)

    async def _gather(self) -> None:
        """Wait until the window after the oldest item's arrival closes or the batch is full
        (items that queued during the previous flush have waited long enough already)."""
        loop = asyncio.get_running_loop()
        deadline = self._pending[0].since + self._window
        while len(self._pending) < self._max:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)

    async def _flush_batch(self, batch: list[_Waiting[T, R]]) -> None:
        self.batches += 1
        try:
            results = await self._flush([w.item for w in batch])
        except Exception as exc:
            results = [exc] * len(batch)
        except asyncio.CancelledError:
            for w in batch:
                w.future.cancel()
            raise
        if len(results) != len(batch):
            results = [RuntimeError("flush returned a result per item")] * len(batch)
        for waiting, result in zip(batch, results, strict=True):
            if waiting.future.done():
                continue
            if isinstance(result, BaseException):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(result)
