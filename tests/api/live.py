"""The real gateway on a loopback port, served by a thread with its own event loop.

Synchronous clients (schemathesis, ``requests`` in Hypothesis tests) talk to it over TCP while
the test thread keeps no loop of its own. The bus is the real ``MemoryBus`` (memory://), counting
every event it took, so a test can tell whether a request published anything.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from relay.bus.memory import MemoryBus
from relay.errors import InvalidEvent
from relay.events import decode, new_event
from relay.events.data import DeployFailed
from relay.gateway.app import create_app
from relay.gateway.state import STATE, GatewayState
from relay.gateway.status import TRACKER
from relay.settings import Settings
from relay.tracker import Deployment
from tests.gateway.conftest import write_settings

T = TypeVar("T")
HIGH_LIMIT = {"requests": 1_000_000, "per_seconds": 1}


class CountingBus(MemoryBus):
    """memory:// that remembers the routing key of every event it accepted, and any it could
    not decode again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.published: list[str] = []
        self.invalid: list[str] = []

    async def publish_raw(self, body: bytes, *, routing_key: str, message_id: str | None) -> None:
        await super().publish_raw(body, routing_key=routing_key, message_id=message_id)
        self.published.append(routing_key)
        try:  # what every consumer does first: an event it cannot read is a defect
            decode(body, routing_key=routing_key, message_id=message_id)
        except InvalidEvent as exc:
            self.invalid.append(f"{routing_key}: {exc}")


def fuzz_settings(tmp: Path, **extra: Any) -> Settings:
    """Every receiver type (tests/gateway's secrets), deploys on, limits out of the way."""
    deploy = {"rate_limit": HIGH_LIMIT, **extra.pop("deploy", {})}
    http = {"rate_limit": HIGH_LIMIT, **extra.pop("http", {})}
    return write_settings(tmp, "memory://", deploy=deploy, http=http, **extra)


class LiveGateway:
    def __init__(self, settings: Settings, *, name: str = "gateway") -> None:
        self.settings = settings
        self.name = name
        self.answers: Counter[str] = Counter()  # "<METHOD> <route> <status>" -> count
        self.started = time.perf_counter()
        self.bus = CountingBus(settings.broker.retry, history=settings.broker.history)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="live-gateway", daemon=True)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._app: web.Application | None = None
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._error: BaseException | None = None

    @property
    def published(self) -> int:
        return len(self.bus.published)

    @property
    def state(self) -> GatewayState:
        assert self._app is not None
        return self._app[STATE]

    def __enter__(self) -> LiveGateway:
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the gateway did not start: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)
        assert not self._thread.is_alive(), "the gateway thread did not stop"
        record(self.name, self.report())

    def report(self) -> dict[str, Any]:
        return {
            "requests": sum(self.answers.values()),
            "seconds": round(time.perf_counter() - self.started, 1),
            "published": self.published,
            "invalid_events": len(self.bus.invalid),
            "answers": dict(sorted(self.answers.items())),
        }

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15) -> T:
        """Run ``coro`` on the gateway's loop (to reach its bus or state) and return its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def fail_deployment(self, deployment_id: str) -> None:
        """Finish a deployment as failed, as the build worker would; wait for the tracker."""
        data = DeployFailed(stage="build", reason="image_not_found", detail="no such image")
        self.run(self.bus.publish(new_event(data, source="/test", deploymentid=deployment_id)))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found = self.state_of(deployment_id)
            if found is not None and found.status == "failed":
                return
            time.sleep(0.02)
        raise AssertionError(f"the tracker did not see {deployment_id} fail")

    def state_of(self, deployment_id: str) -> Deployment | None:
        assert self._app is not None
        return self._app[TRACKER].get(deployment_id)

    async def _count(self, request: web.Request, response: web.StreamResponse) -> None:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "(no route)"
        self.answers[f"{request.method} {route} {response.status}"] += 1

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        await self.bus.start()
        self._app = create_app(settings=self.settings, bus=self.bus)
        self._app.on_response_prepare.append(self._count)
        runner = web.AppRunner(self._app, access_log=None)
        await runner.setup()
        try:
            await web.SockSite(runner, self._sock).start()
            self._ready.set()
            await self._stop.wait()
        finally:
            await runner.cleanup()
            await self.bus.close()


def record(name: str, report: dict[str, Any]) -> None:
    """Append a run's numbers to ``RELAY_FUZZ_REPORT`` (a JSON line each), when it is set."""
    path = os.environ.get("RELAY_FUZZ_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(json.dumps({"run": name, **report}) + "\n")
