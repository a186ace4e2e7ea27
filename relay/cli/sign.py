"""``relay sign``: the headers that sign a body for /deploy or /apps (for scripts and n8n tests)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from relay.settings import read_secret_file
from relay.signing import sign_headers


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "sign",
        help="print X-Relay-Timestamp / X-Relay-Signature headers for a body on stdin",
        description="Reads the exact body bytes from stdin and prints the headers that sign them "
        "with the secret in --secret-file, one 'Name: value' per line. Send the body unchanged.",
    )
    parser.add_argument("--secret-file", required=True, type=Path, help="file holding the secret")
    parser.add_argument("--timestamp", type=int, help="unix seconds (default: now)")
    parser.set_defaults(handler=_sign)


def _sign(args: argparse.Namespace) -> int:
    try:
        secret = read_secret_file(args.secret_file)
    except ValueError as exc:
        print(f"relay sign: {exc}", file=sys.stderr)
        return 2
    body = sys.stdin.buffer.read()
    for name, value in sign_headers(
        secret.get_secret_value(), body, timestamp=args.timestamp
    ).items():
        print(f"{name}: {value}")
    return 0
