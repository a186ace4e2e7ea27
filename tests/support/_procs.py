"""Small process and port helpers shared by the service harnesses.

``LoopbackService`` is the lifecycle the Git server and the registry share: state under one
directory, Basic-auth credentials, one loopback port kept across restarts, start/stop/close.
Every service here runs as a child in its own process group (``start_new_session``), so that
``stop()`` can end the whole group (fcgiwrap's CGI children, nginx's workers) and wait for it.
Children started from the main thread also get SIGTERM when the test process dies
(``PR_SET_PDEATHSIG``), so a killed pytest does not leave registries and nginx instances behind.
(Not from other threads: that signal fires when the forking *thread* ends, e.g. a pool worker.)
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from tests.support._http import basic_auth

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class ServiceError(RuntimeError):
    """A test service could not be set up, started or stopped."""


def require_binary(name: str, *extra_dirs: str) -> str:
    """Absolute path of an executable, or a clear error pointing at the set-up script."""
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/sbin", *extra_dirs):
        candidate = Path(d) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise ServiceError(f"{name!r} not found on this machine: run scripts/setup-system.sh as root")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def wait_for(
    predicate: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.02,
    what: str = "condition",
    alive: Callable[[], str | None] | None = None,
) -> None:
    """Poll ``predicate`` until true; ``alive()`` returns an error text once the service died."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if alive is not None:
            problem = alive()
            if problem:
                raise ServiceError(f"{what}: {problem}")
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _child_setup() -> None:  # pragma: no cover - runs in the forked child
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# A minimal init for one service's process group: it becomes a child subreaper, runs the
# command, and reaps every descendant (orphans included) until none is left. Here PID 1 does not
# reap orphans, so without it every stopped fcgiwrap leaves zombie workers behind. A SIGTERM
# (from stop()'s killpg, or PR_SET_PDEATHSIG when the test process dies) is passed on to the
# whole group once; the reaper exits with the command's status after the last descendant.
_REAPER = r"""
import ctypes, os, signal, sys
libc = ctypes.CDLL("libc.so.6", use_errno=True)
libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
forwarded = False
def on_term(signum, frame):
    global forwarded
    if not forwarded:
        forwarded = True
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.killpg(os.getpgrp(), signal.SIGTERM)
signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGINT, on_term)
child = os.fork()
if child == 0:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
status = 1
while True:
    try:
        pid, st = os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if pid == child:
        status = os.waitstatus_to_exitcode(st)
sys.exit(status if status >= 0 else 128 - status)
"""


def clean_env(
    extra: Mapping[str, str] | None = None, *, drop_prefixes: Sequence[str] = ()
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}
    if extra:
        env.update(extra)
    return env


@dataclass
class GroupProcess:
    """One long-running child in its own process group, its output going to a log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    reaper: bool = False  # run under _REAPER (for servers that fork workers/CGI children)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        if self.running:
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        with open(self.log_path, "ab") as log:
            argv = [sys.executable, "-c", _REAPER, *self.argv] if self.reaper else self.argv
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                # PDEATHSIG fires when the *thread* that forked exits: only from the main thread
                preexec_fn=_child_setup if _in_main_thread() else None,  # noqa: PLW1509
            )

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def death_note(self) -> str | None:
        """None while running; otherwise why it is gone, with the tail of its log."""
        if self.proc is None:
            return f"{self.name} was never started"
        rc = self.proc.poll()
        if rc is None:
            return None
        return f"{self.name} exited with {rc}; log tail:\n{self.log_tail()}"

    def log_tail(self, lines: int = 25) -> str:
        return file_tail(self.log_path, lines)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        """Signal the whole process group, reap the leader, then wait until the group is empty."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        pgid = proc.pid  # leader of its own session/group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=5)
        wait_group_gone(pgid, timeout=timeout)


def wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until no process of the group is left (zombies reaped by init count as gone)."""
    deadline = time.monotonic() + timeout
    killed = False
    while _group_has_live_members(pgid):
        if time.monotonic() >= deadline:
            if killed:
                raise ServiceError(f"process group {pgid} did not go away")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            killed = True
            deadline = time.monotonic() + 5
        time.sleep(0.02)


def _group_has_live_members(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # killpg(…, 0) also succeeds for zombies nobody reaps: look at /proc to tell.
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # fields after the ")" of comm: state ppid pgrp ...
        rest = stat.rsplit(")", 1)[1].split()
        if int(rest[2]) == pgid and rest[0] != "Z":
            return True
    return False


def file_tail(path: Path, lines: int = 25) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --- a service on its own loopback port ------------------------------------------------------

# bcrypt cost for the htpasswd entry: the registry re-checks bcrypt on EVERY authenticated
# request (no cache), so the usual cost 10-12 would add 60-250 ms per API call.
BCRYPT_COST = 5


def make_htpasswd_line(username: str, password: str, cost: int = BCRYPT_COST) -> str:
    """``user:$2…`` bcrypt line; python ``bcrypt`` if importable, else ``htpasswd -Bbn``."""
    try:
        import bcrypt
    except ImportError:
        out = subprocess.run(
            [require_binary("htpasswd"), "-Bbn", "-C", str(cost), username, password],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return out.strip().splitlines()[0]
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()
    return f"{username}:{hashed}"


class LoopbackService(abc.ABC):
    """Children serving one loopback port with Basic auth, their state under ``base_dir``.

    The first ``start()`` moves to another free port (up to three tries) when the port was
    taken meanwhile; a restart keeps the port and the state, or fails. ``close()`` stops and
    removes ``base_dir`` if this object made it. Subclasses say how to ``_launch`` (start the
    children with ``_spawn``, return once the service answers, raise ``ServiceError`` if not)
    and, through ``_on_new_port``, what to rewrite when the port changes.
    """

    kind: ClassVar[str]  # what the service is called in messages
    dir_prefix: ClassVar[str]  # of the temporary base_dir made when none is given
    secret_name: ClassVar[str]  # the file in base_dir holding the password alone, mode 0600

    def __init__(
        self,
        base_dir: str | Path | None,
        *,
        username: str,
        password: str | None,
        port: int | None,
        startup_timeout: float,
    ) -> None:
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir or tempfile.mkdtemp(prefix=self.dir_prefix))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.username = username
        self.password = password or secrets.token_urlsafe(18)
        self.port = port or free_port()
        self.startup_timeout = startup_timeout
        self.htpasswd_path = self.base_dir / "htpasswd"
        self.htpasswd_path.write_text(make_htpasswd_line(self.username, self.password) + "\n")
        self.secret_file = self.base_dir / self.secret_name
        self.secret_file.write_text(self.password)
        self.secret_file.chmod(0o600)
        self._procs: list[GroupProcess] = []
        self._started_once = False
        self.last_start_seconds: float | None = None

    @property
    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": basic_auth(self.username, self.password)}

    @property
    def running(self) -> bool:
        return bool(self._procs) and all(proc.running for proc in self._procs)

    @abc.abstractmethod
    def _launch(self) -> None:
        """Start the children on ``self.port``; return once the service answers."""

    def _on_new_port(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Called when the first start moves to another port, before launching there."""

    def _spawn(self, proc: GroupProcess) -> GroupProcess:
        proc.start()
        self._procs.append(proc)
        return proc

    def start(self) -> Self:
        """Start (or restart on the same port and state); returns once the service answers."""
        if self.running:
            return self
        if self._started_once:  # a restart: same port, same state, or fail
            if not port_is_free(self.port):
                raise ServiceError(f"{self.kind} port {self.port} is taken by something else")
            self._timed_launch()
            return self
        for attempt in range(3):  # first start: another free port if this one was snatched
            if attempt or not port_is_free(self.port):
                self.port = free_port()
                self._on_new_port()
            try:
                self._timed_launch()
                break
            except ServiceError:
                if attempt == 2:
                    raise
        self._started_once = True
        return self

    def _timed_launch(self) -> None:
        t0 = time.monotonic()
        self.stop()  # whatever is left of an earlier run
        try:
            self._launch()
        except BaseException:
            self.stop()
            raise
        self.last_start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Stop the children, the last started first, each with its whole process group."""
        while self._procs:
            self._procs.pop().stop()

    def close(self) -> None:
        """Stop, and remove the state directory if this object made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
