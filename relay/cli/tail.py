"""``relay tail``: every event on the bus as it happens, one line each, for operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from relay.bus import connect
from relay.cli.commands import settings_for
from relay.events import CloudEvent

_COLOURS = {"failed": "\x1b[31m", "ready": "\x1b[32m", "deleted": "\x1b[33m"}
_RESET = "\x1b[0m"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "tail",
        help="follow events live, one line each",
        description="Bind an exclusive, auto-deleted queue to relay.events and print each event.",
    )
    parser.add_argument("--json", action="store_true", help="print each CloudEvent as JSON")
    parser.add_argument("--app", help="only events of this app")
    parser.set_defaults(handler=lambda a: asyncio.run(_tail(a)))


async def _tail(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    if settings.broker.url.startswith("memory://"):
        raise SystemExit("relay tail needs a RabbitMQ broker: memory:// lives inside one process")
    bus = connect(settings.broker)
    await bus.start()
    colour = sys.stdout.isatty()
    try:
        async for event in bus.tap(("#",)):
            if args.app and event.app != args.app:
                continue
            print(
                event.model_dump_json(exclude_none=True)
                if args.json
                else line(event, colour=colour)
            )
            sys.stdout.flush()
    finally:
        await bus.close()
    return 0


def line(event: CloudEvent, *, colour: bool = False) -> str:
    """One readable line: time, routing key, app, deployment and the interesting data."""
    when = event.time.strftime("%H:%M:%S.%f")[:-3]
    key = event.routing_key
    parts = [when, f"{key:<20}"]
    if event.app:
        parts.append(f"app={event.app}")
    if event.deploymentid:
        parts.append(f"deployment={event.deploymentid}")
    parts += [f"{k}={_short(event.data[k])}" for k in _INTERESTING if k in event.data]
    text = "  ".join(parts)
    tint = next((c for word, c in _COLOURS.items() if key.endswith(word)), None)
    return f"{tint}{text}{_RESET}" if colour and tint else text


_INTERESTING = (
    "repository",
    "ref",
    "after",
    "version",
    "image",
    "commit",
    "url",
    "stage",
    "reason",
    "detail",
    "skipped",
)


def _short(value: object) -> str:
    if isinstance(value, dict):
        value = value.get("full_name", json.dumps(value, sort_keys=True))
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
