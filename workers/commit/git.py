"""The GitOps remote through the ``git`` CLI, run by asyncio with argument lists (never a shell).

One persistent working clone per worker, fetched and hard-reset to ``origin/<branch>`` whenever
it may differ from the remote (so whatever was left by a rejected push or a crash is gone). A
commit is made by ``git fast-import`` from the files the batch wrote, in one process: a large
batch's objects go into one pack instead of a loose file each, and there is no index to refresh
(``git add`` and ``git commit`` were most of a large batch's time). Credentials never reach
argv, ``.git/config``, logs or error messages:

- HTTPS: an ``Authorization: Basic`` header scoped to the remote's origin, handed to git through
  ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n``/``GIT_CONFIG_VALUE_n`` in the child's environment;
  credentials written into the configured URL are taken out of it and used the same way.
- SSH: ``GIT_SSH_COMMAND`` with the deploy key, the given known_hosts file and
  ``StrictHostKeyChecking=yes``.

Failures are classified from git's own messages (``LC_ALL=C``): the remote cannot be reached →
``Transient("git_unreachable")``; credentials refused → ``Permanent("git_auth_failed")``; the
branch moved under us → ``PushRejected`` (the caller fetches, re-applies and pushes again).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import unquote, urlsplit, urlunsplit

import structlog

from relay.errors import ConfigError, Permanent, Transient
from relay.logging import redactor
from relay.settings import GitOpsSettings

log = structlog.get_logger(__name__)

_AUTH = (
    "authentication failed",
    "returned error: 401",
    "returned error: 403",
    "could not read username",
    "could not read password",
    "terminal prompts disabled",
    "permission denied (publickey",
    "host key verification failed",
    "access denied",
)
_NOT_FOUND = ("returned error: 404", "repository not found", "does not appear to be a git repo")
_UNREACHABLE = (
    "could not resolve host",
    "failed to connect",
    "couldn't connect",
    "connection refused",
    "connection timed out",
    "connection reset",
    "operation timed out",
    "empty reply from server",
    "returned error: 500",
    "returned error: 502",
    "returned error: 503",
    "returned error: 504",
    "ssh: connect to host",
    "network is unreachable",
    "no route to host",
    "recv failure",
    "send failure",
    "the remote end hung up unexpectedly",
    "could not read from remote repository",
    "early eof",
)
_REJECTED = (
    "[rejected]",
    "fetch first",
    "non-fast-forward",
    "cannot lock ref",
    "failed to update ref",
    "stale info",
)
_NO_BRANCH = "couldn't find remote ref"


class GitCommandError(Exception):
    """A git command failed for a reason that is neither the network nor the credentials."""


class PushRejected(Exception):
    """The remote branch moved since our fetch: fetch, re-apply and push again."""


@dataclass(frozen=True)
class Remote:
    """The remote's URL without credentials, and what to authenticate with."""

    url: str
    username: str | None
    password: str | None

    @property
    def is_ssh(self) -> bool:
        return self.url.startswith("ssh://") or (
            "://" not in self.url and ":" in self.url.split("/", 1)[0]
        )


def parse_remote(settings: GitOpsSettings) -> Remote:
    """Split credentials out of the URL; the token file wins over a password in the URL."""
    if not settings.url:
        raise ConfigError("deploy.gitops.url is not set")
    token = settings.token.get_secret_value() if settings.token else None
    parts = urlsplit(settings.url)
    if parts.scheme in ("http", "https") and (parts.username or parts.password):
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        user = unquote(parts.username or "") or settings.username
        return Remote(clean, user, token or unquote(parts.password or "") or None)
    return Remote(settings.url, settings.username, token)


class GitEnv:
    """The environment of every git child: quiet, isolated from the machine's git config,
    authenticated, and the secrets it holds, for scrubbing."""

    def __init__(self, settings: GitOpsSettings, remote: Remote, home: Path) -> None:
        self.secrets: list[str] = []
        self.env = self._base(settings, home)
        config = [("gc.autoDetach", "false"), ("commit.gpgSign", "false")]
        if remote.is_ssh:
            self.env["GIT_SSH_COMMAND"] = ssh_command(settings)
        elif remote.password:
            config.append(self._auth_header(remote))
        config += [("http.lowSpeedLimit", "1000"), ("http.lowSpeedTime", "30")]
        self.env["GIT_CONFIG_COUNT"] = str(len(config))
        for i, (key, value) in enumerate(config):
            self.env[f"GIT_CONFIG_KEY_{i}"] = key
            self.env[f"GIT_CONFIG_VALUE_{i}"] = value

    @staticmethod
    def _base(settings: GitOpsSettings, home: Path) -> dict[str, str]:
        passed = ("PATH", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR", "SSH_AUTH_SOCK")
        proxies = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY")
        env = {k: os.environ[k] for k in (*passed, *proxies) if k in os.environ}
        env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
        return {
            **env,
            "HOME": str(home),
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_AUTHOR_NAME": settings.author_name,
            "GIT_AUTHOR_EMAIL": settings.author_email,
            "GIT_COMMITTER_NAME": settings.author_name,
            "GIT_COMMITTER_EMAIL": settings.author_email,
        }

    def _auth_header(self, remote: Remote) -> tuple[str, str]:
        parts = urlsplit(remote.url)
        origin = f"{parts.scheme}://{parts.netloc}/"
        basic = base64.b64encode(f"{remote.username or ''}:{remote.password}".encode()).decode()
        self.secrets += [s for s in (remote.password, basic) if s]
        return f"http.{origin}.extraHeader", f"Authorization: Basic {basic}"

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return redactor().scrub(text)


def ssh_command(settings: GitOpsSettings) -> str:
    """ssh for git: only the deploy key, only hosts in the given known_hosts file."""
    if settings.known_hosts_file is None:
        raise ConfigError("deploy.gitops.known_hosts_file is needed for an SSH url")
    words = [
        "ssh",
        "-F",
        os.devnull,
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={settings.known_hosts_file}",
        "-o",
        "ConnectTimeout=15",
    ]
    if settings.ssh_key_file is not None:
        words += ["-o", "IdentitiesOnly=yes", "-i", str(settings.ssh_key_file)]
    return shlex.join(words)


def default_workdir(settings: GitOpsSettings) -> Path:
    if settings.workdir is not None:
        return settings.workdir
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(f"{parse_remote(settings).url}#{settings.branch}".encode()).hexdigest()
    return cache / "relay" / "gitops" / key[:16]


def claim_workdir(wanted: Path) -> tuple[Path, IO[bytes]]:
    """Lock a working clone for this process; another process's lock moves us to ``-2``, …"""
    for n in range(1, 100):
        path = wanted if n == 1 else wanted.with_name(f"{wanted.name}-{n}")
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = (path.parent / f"{path.name}.lock").open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        path.mkdir(exist_ok=True)
        return path, handle
    raise OSError(f"no free working clone next to {wanted}")


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


class GitRepo:
    """One working clone of the GitOps repository and the commands the worker needs."""

    def __init__(self, settings: GitOpsSettings, workdir: Path, *, git: str = "git") -> None:
        self.settings = settings
        self.branch = settings.branch
        self.workdir = workdir
        self.remote = parse_remote(settings)
        self.genv = GitEnv(settings, self.remote, Path(os.environ.get("HOME") or workdir))
        self._git = git
        self._timeout = settings.command_timeout
        self._lock: IO[bytes] | None = None
        self._ident: tuple[str, str] | None = None  # (author, committer) as git spells them
        self.unborn = False  # the remote has no such branch yet (as of the last sync)

    @property
    def safe_url(self) -> str:
        return self.remote.url

    async def run(
        self, *args: str, stdin: str | bytes | None = None, network: bool = False
    ) -> Result:
        """Run one git command in the clone; raises on a network or credential failure."""
        result = await self._exec(list(args), stdin, network=network)
        if result.code != 0 and network:
            self._raise_remote(args[0], result)
        return result

    async def _exec(self, args: list[str], stdin: str | bytes | None, *, network: bool) -> Result:
        proc = await asyncio.create_subprocess_exec(
            self._git,
            *args,
            cwd=self.workdir,
            env=self.genv.env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            data = stdin.encode() if isinstance(stdin, str) else stdin
            out, err = await asyncio.wait_for(proc.communicate(data), self._timeout)
        except (TimeoutError, asyncio.CancelledError):
            await _kill(proc)
            if network:
                raise Transient(
                    "git_unreachable",
                    f"git {args[0]} to {self.safe_url} took longer than {self._timeout:g} s",
                ) from None
            raise
        scrub = self.genv.scrub
        return Result(
            proc.returncode or 0,
            scrub(out.decode(errors="replace")),
            scrub(err.decode(errors="replace")),
        )

    def _raise_remote(self, command: str, result: Result) -> None:
        text = f"{result.err}\n{result.out}".lower()
        detail = f"git {command} {self.safe_url} failed: {_last_lines(result.err or result.out)}"
        if any(p in text for p in _AUTH):
            raise Permanent("git_auth_failed", f"{self._auth_problem()} ({detail})")
        if any(p in text for p in _NOT_FOUND):
            raise Permanent("git_repo_not_found", detail)
        if any(p in text for p in _UNREACHABLE):
            raise Transient("git_unreachable", detail)
        if command == "push" and any(p in text for p in _REJECTED):
            raise PushRejected(detail)
        if command == "fetch" and _NO_BRANCH in text:
            return
        raise GitCommandError(detail)

    def _auth_problem(self) -> str:
        if self.remote.is_ssh:
            return f"{self.safe_url} refused the deploy key or its host key is not known"
        if self.remote.password is None:
            return f"{self.safe_url} needs credentials and none are configured (gitops.token_file)"
        return f"{self.safe_url} refused the credentials of user {self.remote.username!r}"

    async def _checked(self, *args: str, stdin: str | bytes | None = None) -> Result:
        result = await self.run(*args, stdin=stdin)
        if result.code != 0:
            raise GitCommandError(f"git {args[0]} failed: {_last_lines(result.err)}")
        return result

    async def prepare(self) -> None:
        """Lock the working clone and make sure it is a repository pointing at the remote."""
        if self._lock is None:
            self.workdir, self._lock = await asyncio.to_thread(claim_workdir, self.workdir)
        if not (self.workdir / ".git").is_dir():
            await self._checked("init", "--quiet")
        current = await self.run("config", "--get", "remote.origin.url")
        if current.code != 0:
            await self._checked("remote", "add", "origin", self.safe_url)
        elif current.out.strip() != self.safe_url:
            await self._checked("remote", "set-url", "origin", self.safe_url)
        if self._ident is None:
            author = (await self._checked("var", "GIT_AUTHOR_IDENT")).out
            committer = (await self._checked("var", "GIT_COMMITTER_IDENT")).out
            self._ident = (_without_date(author), _without_date(committer))

    async def sync(self) -> None:
        """Fetch the branch and make the working tree exactly the remote's (or empty)."""
        tracking = f"refs/remotes/origin/{self.branch}"
        fetched = await self.run(
            "fetch",
            "--quiet",
            "--no-tags",
            "origin",
            f"+refs/heads/{self.branch}:{tracking}",
            network=True,
        )
        self.unborn = fetched.code != 0
        if self.unborn:  # the remote has no such branch yet: start from nothing
            await self._checked("symbolic-ref", "HEAD", f"refs/heads/{self.branch}")
            await self.run("update-ref", "-d", f"refs/heads/{self.branch}")
            await self._checked("read-tree", "--empty")
        else:
            await self._checked("checkout", "--quiet", "--force", "-B", self.branch, tracking)
        await self._checked("clean", "--quiet", "-ffdx")

    async def commit(self, message: str, changes: Mapping[str, bytes | None]) -> str | None:
        """Commit these file contents (None: remove the file) on top of HEAD and move the branch
        to it; the new commit's sha, or None when the tree came out the same as HEAD's."""
        if not changes:
            return None
        assert self._ident is not None, "prepare() first"
        stream = fast_import_stream(
            f"refs/heads/{self.branch}",
            None if self.unborn else f"refs/heads/{self.branch}^0",
            self._ident,
            message,
            changes,
        )
        await self._checked(
            "fast-import", "--quiet", "--done", "--date-format=now", "--depth=10", stdin=stream
        )
        if self.unborn:
            self.unborn = False
            return await self.head()
        shas = (await self._checked("rev-parse", "HEAD", "HEAD^{tree}", "HEAD~1^{tree}")).out
        sha, tree, parent_tree = shas.split()
        if tree == parent_tree:  # the bytes were new to the work tree, not to git
            await self._checked("update-ref", f"refs/heads/{self.branch}", "HEAD~1", sha)
            return None
        return sha

    async def push(self, sha: str) -> None:
        """Push this commit to the branch (raises ``PushRejected`` when the branch moved)."""
        await self.run(
            "push", "--porcelain", "origin", f"{sha}:refs/heads/{self.branch}", network=True
        )

    async def gc(self) -> None:
        """Let git pack loose objects and the packs of many imports when it thinks it is time
        (``gc --auto``: nothing unless ``gc.auto``/``gc.autoPackLimit`` are exceeded)."""
        await self._checked("gc", "--auto", "--quiet")

    async def head(self) -> str:
        return (await self._checked("rev-parse", "HEAD")).out.strip()

    async def last_commit(self, path: str) -> str | None:
        """The newest commit that touched ``path`` (the one holding its current state)."""
        found = await self.run("log", "-1", "--format=%H", "--", path)
        return found.out.strip() or None if found.code == 0 else None

    async def commit_naming(self, deployment_id: str) -> str | None:
        """The newest commit of the clone's branch whose message names this deployment."""
        found = await self.run(
            "log", "-1", "--format=%H", "--fixed-strings", f"--grep=(deployment {deployment_id})"
        )
        return found.out.strip() or None if found.code == 0 else None

    async def close(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def fast_import_stream(
    ref: str,
    parent: str | None,
    ident: tuple[str, str],
    message: str,
    changes: Mapping[str, bytes | None],
) -> bytes:
    """A ``git fast-import`` stream for one commit on ``ref`` (from ``parent``, if any) that
    writes or removes the given paths.

    fast-import stores each blob as a delta against the blob it wrote just before, so files are
    given grouped by name (every app's ``deployment.yaml`` in a row): the pack it writes, and so
    the push and the remote's copy, stay as small as ``git add`` + ``pack-objects`` made them.
    The commit uses ``--depth=10``: one delta after another would otherwise make chains of 50,
    each applied in turn whenever a later file is read (pack-objects kept them at 2-6 here)."""
    text = message.encode()
    lines = [
        f"commit {ref}".encode(),
        f"author {ident[0]} now".encode(),
        f"committer {ident[1]} now".encode(),
        b"data %d" % len(text),
        text,
    ]
    if parent is not None:
        lines.append(f"from {parent}".encode())
    for path, body in sorted(changes.items(), key=_by_name):
        if body is None:
            lines.append(b"D " + _quoted(path))
        else:
            lines += [b"M 100644 inline " + _quoted(path), b"data %d" % len(body), body]
    lines += [b"", b"done", b""]
    return b"\n".join(lines)


def _by_name(change: tuple[str, bytes | None]) -> tuple[str, str]:
    path = change[0]
    return path.rsplit("/", 1)[-1], path


def _quoted(path: str) -> bytes:
    """A path as fast-import reads it: C-style quoted, so no byte of it can end the line."""
    escaped = path.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'.encode()


def _without_date(ident: str) -> str:
    """``Name <email>`` of ``git var``'s ``Name <email> 1700000000 +0000``."""
    return ident.strip().rsplit(" ", 2)[0]


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await proc.wait()


def _last_lines(text: str, count: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return " / ".join(lines[-count:]) or "(no message)"
