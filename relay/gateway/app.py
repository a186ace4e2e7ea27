"""Builds the gateway's aiohttp application over a started bus."""

from __future__ import annotations

from aiohttp import web

from relay.bus import Bus
from relay.gateway.status import add_routes
from relay.metrics import exposition
from relay.settings import Settings

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
BUS: web.AppKey[Bus] = web.AppKey("bus", Bus)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def metrics(request: web.Request) -> web.Response:
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
    app.router.add_get("/metrics", metrics)
    return app


def create_app(*, settings: Settings, bus: Bus) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app[BUS] = bus
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    add_routes(app, bus, history=settings.broker.history)
    return app
