"""Builds the gateway's aiohttp application over a bus, and serves it.

``create_app(settings=, bus=)`` refuses to build with an empty secret (``ConfigError``).
``serve(settings, bus)`` listens until cancelled or ``stop`` is set; the caller owns the bus
(starts it before, closes it after): while it is disconnected, ``/readyz`` answers 503 and
every publishing route 503 with ``Retry-After``, and it recovers without a restart.
"""

from __future__ import annotations

import asyncio
from functools import partial

import structlog
from aiohttp import web

from relay.bus import Bus
from relay.gateway import deploy, hooks
from relay.gateway.middleware import errors
from relay.gateway.state import STATE, build_state
from relay.gateway.status import Listener, add_routes
from relay.metrics import exposition
from relay.settings import Settings

log = structlog.get_logger(__name__)
SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
BUS: web.AppKey[Bus] = web.AppKey("bus", Bus)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def process_metrics(request: web.Request) -> web.Response:
    """The process-wide metrics (workers, tracker): what a worker-only process serves."""
    body, content_type = exposition()
    return web.Response(body=body, headers={"Content-Type": content_type})


async def readyz(request: web.Request) -> web.Response:
    ready = request.app[BUS].connected
    return web.json_response({"ready": ready}, status=200 if ready else 503)


def health_app(bus: Bus) -> web.Application:
    """Only /healthz, /readyz and /metrics: what a worker process serves."""
    app = web.Application()
    app[BUS] = bus
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", process_metrics)
    return app


async def metrics(request: web.Request) -> web.Response:
    """The gateway's own metrics and the process-wide ones, in one exposition."""
    state = request.app[STATE]
    process, _ = exposition()
    response = web.Response(body=state.metrics.render() + process)
    response.headers["Content-Type"] = state.metrics.content_type
    return response


def receiver_urls(settings: Settings) -> list[tuple[str, str, str]]:
    """(name, type, URL) of every receiver, for ``relay check-config``."""
    base = settings.public_base_url()
    return [(r.name, r.type, f"{base}/hook/{r.name}") for r in settings.receivers]


def create_app(*, settings: Settings, bus: Bus) -> web.Application:
    state = build_state(settings, bus)
    app = web.Application(middlewares=[errors], client_max_size=settings.http.max_body_bytes)
    app[SETTINGS] = settings
    app[BUS] = bus
    app[STATE] = state
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/hook/{receiver}", hooks.hook)
    app.router.add_post("/deploy", deploy.deploy)
    app.router.add_delete("/apps/{app}", deploy.delete_app)
    learned: list[Listener] = [state.signatures.learn, partial(hooks.learn_delivery, state)]
    add_routes(app, bus, history=settings.broker.history, listeners=learned)
    return app


async def serve(settings: Settings, bus: Bus, *, stop: asyncio.Event | None = None) -> None:
    """Serve ``create_app`` on ``http.host:http.port`` until cancelled or ``stop`` is set."""
    app = create_app(settings=settings, bus=bus)
    # Idle and half-sent-header connections are closed after header_timeout.
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=settings.http.header_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http.host, settings.http.port, backlog=1024)
        await site.start()
        log.info("gateway listening", url=settings.public_base_url())
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await runner.cleanup()
