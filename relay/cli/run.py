"""``relay gateway``, ``relay worker NAME…|all`` and ``relay up``: the long-running processes.

Each runs until SIGTERM or SIGINT, then stops taking work, lets in-flight work finish within the
grace period (match the pod's terminationGracePeriodSeconds) and closes the bus.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence

import structlog
from aiohttp import web

import workers
from relay import queuewatch
from relay.bus import Bus, connect
from relay.cli.commands import settings_for
from relay.gctune import tune_gc
from relay.settings import Settings
from workers.runtime import WorkerHost, stop_signal

log = structlog.get_logger(__name__)

GRACE_HELP = "seconds in-flight work may take to finish after SIGTERM (default 25)"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gateway = sub.add_parser(
        "gateway",
        help="run the HTTP gateway (webhooks, deploys, status, health)",
        description="Serve POST /hook/<receiver>, POST /deploy, DELETE /apps/<app>, the status "
        "API, /healthz, /readyz and /metrics on http.host:http.port.",
    )
    gateway.add_argument("--grace", type=float, default=25.0, help=GRACE_HELP)
    gateway.set_defaults(handler=lambda a: _run(a, gateway=True, names=[]))

    worker = sub.add_parser(
        "worker",
        help="run workers: build, commit, reconcile, watch, notify, or all",
        description="Consume each named worker's queue until SIGTERM. Scale a worker by running "
        "more processes: they share its queue.",
    )
    worker.add_argument(
        "names", nargs="+", metavar="NAME", help=f"{', '.join(workers.WORKERS)} or all"
    )
    worker.add_argument("--grace", type=float, default=25.0, help=GRACE_HELP)
    worker.set_defaults(handler=lambda a: _run(a, gateway=False, names=_names(a.names)))

    up = sub.add_parser(
        "up",
        help="run the gateway and every worker in one process",
        description="Everything in one process, on any broker (memory:// included).",
    )
    up.add_argument("--grace", type=float, default=25.0, help=GRACE_HELP)
    up.set_defaults(handler=lambda a: _run(a, gateway=True, names=workers.available()))


def _names(raw: Sequence[str]) -> list[str]:
    if "all" in raw:
        return workers.available()
    unknown = [n for n in raw if n not in workers.WORKERS]
    if unknown:
        raise SystemExit(
            f"relay: unknown worker(s) {', '.join(unknown)}; known: {', '.join(workers.WORKERS)}"
        )
    return list(dict.fromkeys(raw))


def _run(args: argparse.Namespace, *, gateway: bool, names: list[str]) -> int:
    settings = settings_for(args)
    asyncio.run(serve(settings, gateway=gateway, names=names, grace=args.grace))
    return 0


async def serve(settings: Settings, *, gateway: bool, names: list[str], grace: float) -> None:
    """Run the gateway and/or the named workers on one bus until a stop signal."""
    bus = connect(settings.broker)
    await bus.start()
    host = WorkerHost(bus, settings, [workers.create(n, settings) for n in names])
    runner = await _start_gateway(settings, bus) if gateway else await _start_metrics(settings, bus)
    await host.start()
    prefix = settings.broker.queue_prefix
    queues = [f"{prefix}.{name}" for name in workers.WORKERS]
    sampler = asyncio.create_task(queuewatch.poll(bus, queues, prefix), name="queue-metrics")
    tune_gc()
    try:
        await stop_signal().wait()
        log.info("stopping", grace=grace)
    finally:
        sampler.cancel()
        if runner is not None:
            await runner.shutdown()
        await host.stop(grace=grace)
        if runner is not None:
            await runner.cleanup()
        await bus.close()


async def _start_metrics(settings: Settings, bus: Bus) -> web.AppRunner | None:
    """A worker process's own /healthz, /readyz and /metrics, when http.metrics_port is set."""
    if settings.http.metrics_port is None:
        return None
    from relay.gateway.app import health_app

    runner = web.AppRunner(health_app(bus), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.http.host, settings.http.metrics_port).start()
    log.info("metrics listening", host=settings.http.host, port=settings.http.metrics_port)
    return runner


async def _start_gateway(settings: Settings, bus: Bus) -> web.AppRunner:
    from relay.gateway.app import create_app

    runner = web.AppRunner(create_app(settings=settings, bus=bus), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port)
    await site.start()
    log.info("gateway listening", host=settings.http.host, port=settings.http.port)
    return runner
