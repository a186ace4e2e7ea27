"""What the gateway remembers per process: delivered ids and used deploy signatures.

``Window`` answers duplicates: a key is *begun* by one request at a time (a concurrent
duplicate waits for it), *finished* with a value once its event is confirmed, or *abandoned* so
a retry may try again; the newest ``size`` finished keys are kept. Consumers also skip event ids
they have seen, and event ids derive from these keys, so a per-process window is enough.

``SignatureLedger`` accepts each deploy signature once while it could still verify: a replay
within the window is refused, one whose first request failed may be sent again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from relay.gateway.errors import Conflict


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

    @asynccontextmanager
    async def once(self, signature: str) -> AsyncIterator[None]:
        """Hold ``signature`` for the request; kept if the request succeeds, else released."""
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now:
            self._seen.popitem(last=False)
        if signature in self._seen:
            raise Conflict("this signature was already used; sign each request afresh")
        self._seen[signature] = now + self._keep
        try:
            yield
        except BaseException:
            self._seen.pop(signature, None)
            raise
