"""The evidence a fault run is judged by, read from outside the relay.

- the GitOps repository's history: which commits name which deployment (the commit worker writes
  ``- deploy <app> <version> (deployment <id>)`` per op into each commit message);
- the registry's access log: how often each manifest was pushed;
- every log file: whether any secret, or an encoded form of one, appears in any line.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.gitserver import git_client_env

DEPLOYMENT = re.compile(r"\(deployment ([0-9a-f-]{36})\)")
MANIFEST_PUT = re.compile(
    r'"PUT /v2/(?P<repo>[^ ]+)/manifests/(?P<ref>[^ ?"]+)[^"]*" (?P<status>\d{3})'
)


@dataclass(frozen=True)
class Check:
    """One invariant and whether it held, with what shows it."""

    name: str
    ok: bool
    detail: str


async def git(bare: Path, *args: str) -> str:
    """The output of ``git --git-dir BARE ARGS…``, run as a client ignoring any git config."""
    proc = await asyncio.create_subprocess_exec(
        "git",
        "--git-dir",
        str(bare),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=git_client_env(bare.parent),
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"git {args[0]} failed: {err.decode(errors='replace')[-300:]}")
    return out.decode(errors="replace")


@dataclass
class GitHistory:
    commits: int = 0
    by_deployment: dict[str, list[str]] = field(default_factory=dict)  # id -> commit shas

    def twice(self) -> dict[str, list[str]]:
        return {d: shas for d, shas in self.by_deployment.items() if len(shas) > 1}


async def git_history(bare: Path, branch: str = "main") -> GitHistory:
    """Every commit on ``branch`` and the deployment ids its message names."""
    out = await git(bare, "log", "--format=%H%x1f%B%x1e", branch)
    history = GitHistory()
    found: dict[str, list[str]] = defaultdict(list)
    for record in out.split("\x1e"):
        sha, _, message = record.strip().partition("\x1f")
        if not sha:
            continue
        history.commits += 1
        for deployment in set(DEPLOYMENT.findall(message)):
            found[deployment].append(sha)
    history.by_deployment = dict(found)
    return history


def manifest_pushes(registry_log: Path, since: int = 0) -> Counter[str]:
    """``repo:tag`` -> manifest PUTs the registry answered 201 (after byte offset ``since``)."""
    pushes: Counter[str] = Counter()
    with open(registry_log, "rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    for match in MANIFEST_PUT.finditer(text):
        if match["status"] == "201" and not match["ref"].startswith("sha256:"):
            pushes[f"{match['repo']}:{match['ref']}"] += 1
    return pushes


@dataclass
class ScanResult:
    files: int = 0
    lines: int = 0
    secrets: int = 0
    hits: list[tuple[str, str, int]] = field(default_factory=list)  # file, secret label, line no


def scan_for_secrets(files: list[Path], secrets: dict[str, str]) -> ScanResult:
    """Search every line of every file for every secret value (labels only in the result)."""
    wanted = {label: value for label, value in secrets.items() if len(value) >= 8}
    result = ScanResult(secrets=len(wanted))
    for path in files:
        result.files += 1
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                result.lines += 1
                line = raw.decode(errors="replace")
                result.hits += [(str(path), lb, number) for lb, v in wanted.items() if v in line]
    return result
