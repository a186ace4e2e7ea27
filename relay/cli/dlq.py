"""``relay dlq list`` and ``relay dlq replay ID``: look at and retry dead-lettered work."""

from __future__ import annotations

import argparse
import asyncio

from relay.bus import Bus
from relay.cli.commands import broker_bus


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "dlq",
        help="list or replay dead-lettered messages",
        description="Work that failed every retry lands in the dead-letter queue with its error. "
        "List it, fix the cause, then replay a message by its id.",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list dead letters, oldest first")
    listing.set_defaults(handler=lambda a: asyncio.run(_list(a)))
    replay = actions.add_parser("replay", help="send one dead letter back to its queue")
    replay.add_argument("id", help="the id shown by 'relay dlq list'")
    replay.set_defaults(handler=lambda a: asyncio.run(_replay(a)))


async def _with_bus(args: argparse.Namespace) -> Bus:
    return await broker_bus(args, "dlq")


async def _list(args: argparse.Namespace) -> int:
    bus = await _with_bus(args)
    try:
        letters = await bus.dead_letters()
    finally:
        await bus.close()
    if not letters:
        print("no dead letters")
    for item in letters:
        when = item.failed_at.isoformat(timespec="seconds") if item.failed_at else "-"
        print(f"{item.id}  {when}  {item.queue}  {item.routing_key}  attempts={item.attempts}")
        print(f"    event {item.event_id or '-'}: {item.error}")
    return 0


async def _replay(args: argparse.Namespace) -> int:
    bus = await _with_bus(args)
    try:
        found = await bus.replay(args.id)
    finally:
        await bus.close()
    print(f"replayed {args.id}" if found else f"no dead letter with id {args.id}")
    return 0 if found else 1
