"""Back-off for talking to an API server that may be busy, restarting or briefly away.

Exponential with full jitter and a cap, as client-go's wait.Backoff: many clients reconnecting
after an API server restart spread out instead of arriving together.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from relay.kube.errors import RETRYABLE, KubeError

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass
class Backoff:
    """Delays ``initial * factor**n`` capped at ``cap``, each drawn from [delay/2, delay]."""

    initial: float = 0.1
    factor: float = 2.0
    cap: float = 5.0
    _step: int = field(default=0, init=False)

    def next(self) -> float:
        delay = min(self.cap, self.initial * self.factor**self._step)
        self._step += 1
        return random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not a secret

    def reset(self) -> None:
        self._step = 0


async def retrying(
    op: Callable[[], Awaitable[T]],
    *,
    attempts: int,
    backoff: Backoff | None = None,
    retry_on: tuple[type[KubeError], ...] = RETRYABLE,
    what: str = "kubernetes call",
) -> T:
    """Run ``op``; on a retryable error wait and try again, ``attempts`` times in all."""
    delays = backoff or Backoff()
    for attempt in range(1, attempts + 1):
        try:
            return await op()
        except retry_on as exc:
            if attempt == attempts:
                raise
            delay = delays.next()
            log.info("kubernetes call failed, retrying", what=what, error=exc.message, delay=delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
