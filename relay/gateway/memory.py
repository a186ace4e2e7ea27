"""What the gateway remembers per process: delivered ids and used deploy signatures.

``Window`` answers duplicates: a key is *begun* by one request at a time (a concurrent
duplicate waits for it), *finished* with a value once its event is confirmed, or *abandoned* so
a retry may try again; the newest ``size`` finished keys are kept. For webhooks the key is the
event id, derived from the delivery, so a replica also *learns* the deliveries other replicas
published from their events in the history (``learn``); consumers skip event ids they have seen,
so a duplicate racing past both is still harmless.

``SignatureLedger`` accepts each deploy signature once while it could still verify: a replay
within the window is refused, one whose first request failed may be sent again. It holds the id of
the first event a signature yields (``relay.gateway.deploy.signed_ids``), so it also *learns* the
signatures other replicas accepted from their events in the history (``learn``).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from relay.events import CloudEvent
from relay.gateway.errors import Conflict

SIGNED_KEYS = frozenset({"deploy.requested", "app.delete.requested"})


class Window:
    def __init__(self, size: int) -> None:
        self._size = size
        self._done: OrderedDict[str, Any] = OrderedDict()
        self._busy: dict[str, asyncio.Future[None]] = {}

    async def begin(self, key: str) -> tuple[bool, Any]:
        """(True, None): go ahead and finish/abandon; (False, value): already done."""
        while True:
            if key in self._done:
                self._done.move_to_end(key)
                return False, self._done[key]
            waiter = self._busy.get(key)
            if waiter is None:
                self._busy[key] = asyncio.get_running_loop().create_future()
                return True, None
            await asyncio.shield(waiter)

    def __len__(self) -> int:
        """Keys remembered (at most ``size``) plus keys in flight (one per open request)."""
        return len(self._done) + len(self._busy)

    def finish(self, key: str, value: Any = True) -> None:
        if self._size > 0:
            self._done[key] = value
            while len(self._done) > self._size:
                self._done.popitem(last=False)
        self._release(key)

    def abandon(self, key: str) -> None:
        self._release(key)

    def learn(self, key: str, value: Any = True) -> None:
        """Count ``key`` as finished elsewhere (unless a request here is on it)."""
        if self._size > 0 and key not in self._busy:
            self._done[key] = value
            self._done.move_to_end(key)
            while len(self._done) > self._size:
                self._done.popitem(last=False)

    def _release(self, key: str) -> None:
        waiter = self._busy.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class SignatureLedger:
    def __init__(self, window: float) -> None:
        self._keep = 2 * window + 5
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        """Signatures held: those used within the last ``2 * window + 5`` seconds."""
        return len(self._seen)

    def _prune(self, now: float) -> None:
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)

    @asynccontextmanager
    async def once(self, key: str) -> AsyncIterator[None]:
        """Hold ``key`` for the request; kept if the request succeeds, else released."""
        now = time.monotonic()
        self._prune(now)
        if self._seen.get(key, 0.0) >= now:
            raise Conflict("this signature was already used; sign each request afresh")
        self._seen[key] = now + self._keep
        try:
            yield
        except BaseException:
            self._seen.pop(key, None)
            raise

    def learn(self, event: CloudEvent) -> None:
        """Remember the key of a signed request another replica accepted (its first event)."""
        if event.routing_key not in SIGNED_KEYS:
            return
        age = (datetime.now(UTC) - event.time).total_seconds()
        if age >= self._keep:
            return
        now = time.monotonic()
        self._prune(now)
        until = now + self._keep - max(age, 0.0)
        self._seen[event.id] = max(until, self._seen.get(event.id, 0.0))
