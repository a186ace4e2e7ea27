"""``relay``: the entry point. Parses arguments, loads settings once, configures logs, runs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from relay.cli import commands, config_cmd, demo_cmd, deploy, dlq, run, sign, tail
from relay.errors import ConfigError

EXIT_CONFIG = 2

DESCRIPTION = """\
The relay: verified Git webhooks and signed deploy requests in; image builds, GitOps commits,
Flux reconciles and rollout watches out, over an event bus (RabbitMQ, or memory:// in one process).

Settings come from --config FILE (or RELAY_CONFIG), overridden by RELAY_* environment variables
(nested keys joined by __, e.g. RELAY_BROKER__URL). Secrets are read from *_file paths only.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="relay", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", metavar="FILE", help="YAML settings file (or RELAY_CONFIG)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (run, deploy, demo_cmd, config_cmd, sign, tail, dlq, *commands.EXTRA):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"relay: configuration error\n{exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
