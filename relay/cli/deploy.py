"""``relay deploy`` and ``relay status``: send a signed deploy, follow it, or look one up."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from relay.cli.client import ApiError, GatewayClient
from relay.cli.commands import settings_for
from relay.settings import Settings, read_secret_file

TERMINAL = {"deploy.ready": 0, "deploy.failed": 1, "app.deleted": 0}
STAGE_OF = {
    "deploy.requested": "build",
    "image.pushed": "commit",
    "manifests.committed": "reconcile",
    "reconcile.requested": "reconcile",
    "reconcile.completed": "rollout",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    deploy = sub.add_parser(
        "deploy",
        help="send a signed deploy request (and follow it with --wait)",
        description="Sign and POST a deploy request to the gateway. With --wait, follow it live "
        "and exit 0 when it is ready, 1 when it failed (the reason is printed).",
    )
    deploy.add_argument("--app", required=True, help="DNS-1123 name, at most 40 characters")
    deploy.add_argument("--version", required=True, help="image tag of this version")
    what = deploy.add_mutually_exclusive_group(required=True)
    what.add_argument("--image", help="a prebuilt image reference; its digest is pinned")
    what.add_argument("--source", type=Path, help="a directory with a Dockerfile to build")
    deploy.add_argument("--port", type=int, default=8080, help="container port (default 8080)")
    deploy.add_argument("--replicas", type=int, default=1, help="pods to run (default 1)")
    deploy.add_argument(
        "--env", action="append", default=[], metavar="KEY=VALUE", help="repeatable"
    )
    deploy.add_argument("--callback-url", help="where the relay POSTs the result")
    deploy.add_argument("--wait", action="store_true", help="follow until ready or failed")
    _common(deploy)
    deploy.set_defaults(handler=lambda a: asyncio.run(_deploy(a)))

    status = sub.add_parser("status", help="show deployments, or one deployment's stages")
    status.add_argument("id", nargs="?", help="a deployment id (default: the newest ones)")
    status.add_argument("--app", help="only this app")
    _common(status)
    status.set_defaults(handler=lambda a: asyncio.run(_status(a)))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="gateway base URL (default: http.public_url or host:port)")
    parser.add_argument(
        "--secret-file", type=Path, help="deploy secret (default: deploy.secret_file)"
    )


def _client(args: argparse.Namespace, settings: Settings) -> GatewayClient:
    secret = None
    if args.secret_file:
        secret = read_secret_file(args.secret_file).get_secret_value()
    elif settings.deploy.secrets:
        secret = settings.deploy.secrets[0].get_secret_value()
    return GatewayClient(args.url or settings.public_base_url(), secret=secret)


def request_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"app": args.app, "version": args.version, "port": args.port}
    body["replicas"] = args.replicas
    if args.env:
        body["env"] = dict(item.split("=", 1) for item in args.env)
    if args.callback_url:
        body["callback_url"] = args.callback_url
    if args.image:
        body["image"] = args.image
    else:
        body["source"] = read_source(args.source)
    return body


def read_source(directory: Path) -> dict[str, Any]:
    """Every regular file below ``directory`` (links refused), with the Dockerfile apart."""
    if not (directory / "Dockerfile").is_file():
        raise SystemExit(f"relay deploy: {directory}/Dockerfile is missing")
    files: dict[str, str] = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_symlink():
            raise SystemExit(f"relay deploy: {relative} is a link; links are not sent")
        if path.is_file() and relative != "Dockerfile" and not relative.startswith(".git/"):
            files[relative] = path.read_text(encoding="utf-8")
    return {"files": files, "dockerfile": (directory / "Dockerfile").read_text(encoding="utf-8")}


async def _deploy(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    async with _client(args, settings) as client:
        try:
            accepted = await client.signed("POST", "/deploy", request_body(args))
        except ApiError as exc:
            print(f"relay deploy: refused: {exc}", file=sys.stderr)
            return 2
        print(f"accepted: deployment {accepted['deployment_id']} ({accepted['status_url']})")
        if not args.wait:
            return 0
        return await follow(client, accepted["events_url"], tty=sys.stdout.isatty())


async def follow(client: GatewayClient, events_url: str, *, tty: bool) -> int:
    started = time.monotonic()
    async for key, event in client.events(events_url):
        elapsed = time.monotonic() - started
        data = event.get("data", {})
        if key in TERMINAL:
            if tty:
                print()
            if key == "deploy.failed":
                print(f"failed at {data.get('stage')}: {data.get('reason')}: {data.get('detail')}")
            else:
                print(f"{key.split('.')[-1]} after {elapsed:.1f}s {data.get('url') or ''}".rstrip())
            return TERMINAL[key]
        line = f"[{elapsed:6.1f}s] {key:<20} next: {STAGE_OF.get(key, '…')}"
        print(f"\r{line}", end="", flush=True) if tty else print(line, flush=True)
    print("the event stream closed before the deployment ended", file=sys.stderr)
    return 1


async def _status(args: argparse.Namespace) -> int:
    settings = settings_for(args)
    async with _client(args, settings) as client:
        if args.id:
            one = await client.get(f"/deployments/{args.id}")
            print(format_one(one))
        else:
            params = {"app": args.app} if args.app else {}
            listed = await client.get("/deployments", **params)
            print(format_table(listed["deployments"]))
    return 0


def format_table(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'DEPLOYMENT':<38} {'APP':<20} {'VERSION':<14} {'STATUS':<12} UPDATED"]
    for row in rows:
        app, version = row.get("app") or "-", row.get("version") or "-"
        ident, status = row["deployment_id"], row["status"]
        lines.append(f"{ident:<38} {app:<20} {version:<14} {status:<12} {row['updated']}")
    return "\n".join(lines)


def format_one(row: dict[str, Any]) -> str:
    lines = [format_table([row]), "", f"{'STAGE':<12} {'SECONDS':>8}  NOTE"]
    for stage in row.get("stages", []):
        seconds = f"{stage['seconds']:.2f}" if stage.get("seconds") is not None else "…"
        lines.append(f"{stage['name']:<12} {seconds:>8}  {stage.get('note') or ''}")
    for key in ("image", "commit", "url"):
        if row.get(key):
            lines.append(f"{key}: {row[key]}")
    if row.get("error"):
        err = row["error"]
        lines.append(f"error: {err['stage']}: {err['reason']}: {err['detail']}")
    return "\n".join(lines)
