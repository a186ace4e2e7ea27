"""``relay tail``: every event on the bus as it happens, one line each, for operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

from relay.cli.commands import broker_bus
from relay.errors import BrokerUnavailable
from relay.events import CloudEvent

_COLOURS = {"failed": "\x1b[31m", "ready": "\x1b[32m", "deleted": "\x1b[33m"}
_RESET = "\x1b[0m"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "tail",
        help="follow events live, one line each",
        description="Bind an exclusive, auto-deleted queue to relay.events and print each event; "
        "with --since, replay the history stream from that long ago first.",
    )
    parser.add_argument("--json", action="store_true", help="print each CloudEvent as JSON")
    parser.add_argument("--app", help="only events of this app")
    parser.add_argument(
        "--since",
        type=parse_since,
        metavar="AGE",
        help="first replay the recorded events of this long ago (30s, 10m, 2h, 1d), then follow",
    )
    parser.set_defaults(handler=lambda a: asyncio.run(_tail(a)))


async def _tail(args: argparse.Namespace) -> int:
    bus = await broker_bus(args, "tail")
    colour = sys.stdout.isatty()
    try:
        since = datetime.now(UTC) - args.since if args.since else None
        events = bus.history(since) if since else bus.tap(("#",))
        async for event in events:
            if args.app and event.app != args.app:
                continue
            print(
                event.model_dump_json(exclude_none=True)
                if args.json
                else line(event, colour=colour)
            )
            sys.stdout.flush()
    except BrokerUnavailable as exc:
        print(f"relay tail: {exc}", file=sys.stderr)
        return 1
    finally:
        await bus.close()
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> timedelta:
    """``30s``, ``10m``, ``2h`` or ``1d`` as a time span."""
    unit = text[-1:].lower()
    if unit not in _UNITS or not text[:-1].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 30s, 10m, 2h or 1d")
    return timedelta(seconds=int(text[:-1]) * _UNITS[unit])


def line(event: CloudEvent, *, colour: bool = False) -> str:
    """One readable line: time, routing key, app, deployment and the interesting data."""
    when = event.time.strftime("%H:%M:%S.%f")[:-3]
    key = event.routing_key
    parts = [when, f"{key:<20}"]
    if event.app:
        parts.append(f"app={event.app}")
    if event.deploymentid:
        parts.append(f"deployment={event.deploymentid}")
    parts += [_field(k, event.data[k]) for k in _INTERESTING if k in event.data]
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


def _field(key: str, value: object) -> str:
    return f"skipped: {value}" if key == "skipped" else f"{key}={_short(value)}"


def _short(value: object) -> str:
    if isinstance(value, dict):
        value = value.get("full_name", json.dumps(value, sort_keys=True))
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."
