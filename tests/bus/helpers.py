"""Small tools the bus tests share: recording handlers, waiting, sample events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from relay.bus import Ack, Bus, DeadLetterInfo, Incoming, Outcome
from relay.events import CloudEvent, new_event
from relay.events.data import GitOther

WAIT = 20.0


def event(
    key: str = "git.note", n: int = 0, *, deploymentid: str | None = None, app: str | None = None
) -> CloudEvent:
    """A valid event for any ``git.<word>`` key (GitOther data)."""
    data = GitOther(provider="test", receiver="r", event=key.split(".", 1)[1], summary={"n": n})
    return new_event(data, source="/tests", routing_key=key, deploymentid=deploymentid, app=app)


async def eventually(check: Callable[[], bool], *, timeout: float = WAIT) -> None:
    """Wait until ``check()`` holds; fail the test after ``timeout`` seconds."""
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def until(make: Callable[[], Awaitable[bool]], *, timeout: float = WAIT) -> None:
    async with asyncio.timeout(timeout):
        while not await make():
            await asyncio.sleep(0.02)


@dataclass
class Seen:
    message: Incoming
    at: float


@dataclass
class Recorder:
    """A handler that records every delivery and answers with ``outcome`` (Ack by default)."""

    outcome: Callable[[Incoming], Outcome] = lambda _m: Ack()
    seen: list[Seen] = field(default_factory=list)

    async def __call__(self, message: Incoming) -> Outcome:
        self.seen.append(Seen(message, time.monotonic()))
        return self.outcome(message)

    @property
    def bodies(self) -> list[bytes]:
        return [s.message.body for s in self.seen]

    @property
    def keys(self) -> list[str]:
        return [s.message.routing_key for s in self.seen]


async def dead_letters(bus: Bus, count: int) -> list[DeadLetterInfo]:
    """Wait until exactly ``count`` dead letters are there and return them."""
    found: list[DeadLetterInfo] = []

    async def enough() -> bool:
        nonlocal found
        found = await bus.dead_letters()
        return len(found) >= count

    await until(enough)
    assert len(found) == count
    return found
