"""``relay demo``: the whole relay in one process on throw-away local parts."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "demo",
        help="run the self-contained demo (one process, memory bus, throw-away Git repo)",
        description="Starts the gateway and every worker over memory://, a throw-away bare Git "
        "repository, and a local registry and buildah when installed; sends a signed GitHub push "
        "and a deploy built from a small inline app; prints the timeline and committed files.",
    )
    parser.add_argument("--keep", type=Path, help="keep the demo's files in this directory")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds to wait for the deploy"
    )
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    from relay.demo.run import run_demo

    return asyncio.run(run_demo(keep=args.keep, wait_seconds=args.timeout))
