"""Git build sources: a shallow fetch of one ref, with no prompt and no credential in argv.

``source.git`` names a clone URL, a ref (branch, tag or commit) and a path inside the
repository. Credentials written into the URL (``https://user:token@host/…``) are taken out of it
and handed to git as an ``http.<url>.extraHeader`` through ``GIT_CONFIG_*`` environment
variables, so they never appear on a command line or in ``.git/config``. The checkout's ``.git``
is removed before the build; the path must be a directory reached without links.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from relay.errors import Permanent, Transient
from relay.events.deploy import GitSource
from workers.build.context import DOCKERFILE, BuildContext, source_digest, tree_entries
from workers.build.proc import ArgvRecorder, LineSink, run

_REF = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._/-]{0,254}$")
_UNREACHABLE = re.compile(
    r"(could not resolve host|failed to connect|connection refused|timed out|"
    r"connection reset|unable to access.*50[0-9])",
    re.IGNORECASE,
)


def split_credentials(url: str) -> tuple[str, str | None]:
    """(URL without user info, ``Authorization`` header value or None)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return url, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    raw = f"{unquote(user)}:{unquote(password)}".encode()
    return clean, "Basic " + base64.b64encode(raw).decode()


def git_env(home: Path, url: str, authorization: str | None) -> dict[str, str]:
    """A git environment that never prompts, ignores machine config and holds the auth header."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {
            "HOME": str(home),
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_ASKPASS": "/bin/false",
            "SSH_ASKPASS": "/bin/false",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_ALLOW_PROTOCOL": "http:https:ssh",
            "GIT_SSH_COMMAND": "ssh -o BatchMode=yes",
            "LC_ALL": "C",
        }
    )
    if authorization:
        env.update(
            {
                "GIT_CONFIG_COUNT": "1",
                "GIT_CONFIG_KEY_0": f"http.{url}.extraHeader",
                "GIT_CONFIG_VALUE_0": f"Authorization: {authorization}",
            }
        )
    return env


async def git_context(
    source: GitSource,
    workdir: Path,
    *,
    max_bytes: int,
    platform: str | None,
    on_line: LineSink,
    recorder: ArgvRecorder | None = None,
) -> BuildContext:
    """Fetch ``source.ref`` at depth 1 into ``workdir/repo`` and use ``source.path`` in it."""
    if not _REF.fullmatch(source.ref) or ".." in source.ref:
        raise Permanent("invalid_source", f"git ref {source.ref!r} is not a branch, tag or commit")
    repo = workdir / "repo"
    url, authorization = split_credentials(source.url)
    env = git_env(workdir, url, authorization)
    await asyncio.to_thread(repo.mkdir, mode=0o755)
    for args in (
        ["init", "--quiet"],
        ["fetch", "--quiet", "--depth", "1", "--no-tags", "--", url, source.ref],
        ["checkout", "--quiet", "--detach", "FETCH_HEAD"],
    ):
        await _git(args, repo, env, on_line, recorder)
    await asyncio.to_thread(shutil.rmtree, repo / ".git")
    context_dir = await asyncio.to_thread(_inside, repo, source.path)
    entries = await asyncio.to_thread(tree_entries, context_dir, max_bytes)
    dockerfile = dict(entries).get(DOCKERFILE)
    if dockerfile is None or dockerfile.startswith(b"link\0"):
        raise Permanent("invalid_source", f"no regular file {DOCKERFILE} in {source.path!r}")
    digest = source_digest(entries, dockerfile, platform)
    return BuildContext(
        context_dir=context_dir, dockerfile=context_dir / DOCKERFILE, source_digest=digest
    )


async def _git(
    args: list[str],
    repo: Path,
    env: Mapping[str, str],
    on_line: LineSink,
    recorder: ArgvRecorder | None,
) -> None:
    result = await run(["git", *args], env=env, cwd=repo, on_line=on_line, recorder=recorder)
    if result.ok:
        return
    detail = f"git {args[0]} failed (exit {result.returncode}):\n{result.tail_text(10)}"
    if _UNREACHABLE.search(result.tail_text()):
        raise Transient("source_unreachable", detail)
    raise Permanent("git_fetch_failed", detail)


def _inside(repo: Path, path: str) -> Path:
    """``repo/path``, refusing links on the way and anything resolving outside ``repo``."""
    current = repo
    for part in [p for p in path.strip("/").split("/") if p not in ("", ".")]:
        if part == "..":
            raise Permanent("invalid_source", f"path {path!r} leaves the repository")
        current = current / part
        if current.is_symlink() or not current.is_dir():
            raise Permanent("invalid_source", f"path {path!r} is not a directory in the repository")
    if not current.resolve().is_relative_to(repo.resolve()):
        raise Permanent("invalid_source", f"path {path!r} leaves the repository")
    return current
