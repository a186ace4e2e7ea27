"""The relay's own processes (``relay gateway``, ``relay worker NAME``) as a fault run needs them.

Each runs as a child in its own process group (a new session) with its output appended to one
log file across restarts, so ``kill()`` (SIGKILL to the whole group, as a container dies, build
tools included) and ``stop()`` (SIGTERM, then SIGKILL) reach every descendant. Children also get
SIGTERM when this process dies (``PR_SET_PDEATHSIG``), so an interrupted run leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment without any RELAY_* variable (the config file alone decides)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def relay_argv(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "relay.cli.main", "--config", str(config), *args]


class RelayProcess:
    """One long-running relay command that can be killed and started again."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.starts = 0
        self.kills: list[float] = []  # wall-clock times of each SIGKILL
        self._proc: asyncio.subprocess.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def start(self) -> None:
        if self.running:
            return
        with open(self.log_path, "ab") as log:  # noqa: ASYNC230 - opening a local file
            log.write(f"--- chaos: start {self.starts + 1} of {self.name}\n".encode())
            log.flush()
            self._proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
                env=child_env(),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.starts += 1

    def mark(self) -> int:
        """Where the log ends now: pass it to ``wait_line`` to see only what comes after."""
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    async def wait_line(self, needle: str, *, since: int, timeout: float) -> bool:
        """Whether a line holding ``needle`` is logged after offset ``since`` within ``timeout``."""
        deadline = time.monotonic() + timeout
        pos, carry = since, ""
        while time.monotonic() < deadline:
            chunk, pos = await asyncio.to_thread(_read_from, self.log_path, pos)
            text = carry + chunk
            if needle in text:
                return True
            carry = text[-len(needle) :]
            await asyncio.sleep(0.02)
        return False

    async def kill(self) -> None:
        """SIGKILL the whole process group, as when a container or node dies."""
        self.kills.append(time.time())
        await self._signal_and_wait(signal.SIGKILL, timeout=10.0)

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (graceful drain), SIGKILL after ``timeout``; returns the exit code."""
        return await self._signal_and_wait(signal.SIGTERM, timeout=timeout)

    async def _signal_and_wait(self, sig: int, *, timeout: float) -> int | None:
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            code = await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = await proc.wait()
        await _group_gone(proc.pid)
        return code


def _read_from(path: Path, offset: int) -> tuple[str, int]:
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    return data.decode(errors="replace"), offset + len(data)


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(option, value, 0, 0, 0)


def _stat(entry: os.DirEntry[str]) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a /proc entry."""
    try:
        stat = Path(entry.path, "stat").read_text()
    except OSError:
        return None
    state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
    return state, int(ppid), int(pgrp)


def _scan() -> list[tuple[int, str, int, int]]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (info := _stat(entry)) is not None:
            found.append((int(entry.name), *info))
    return found


def _live_members(pgid: int) -> list[int]:
    return [pid for pid, state, _, pgrp in _scan() if pgrp == pgid and state != "Z"]


def _adopted_zombies() -> set[int]:
    me = os.getpid()
    return {pid for pid, state, ppid, _ in _scan() if ppid == me and state == "Z"}


async def _reap_adopted() -> None:
    """Reap zombies that stay ours for a while: orphans we adopted. asyncio reaps its own
    children at once, so a zombie child seen twice, 0.3 s apart, is not one of them."""
    seen: set[int] = set()
    while True:
        zombies = await asyncio.to_thread(_adopted_zombies)
        for pid in zombies & seen:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG: never blocks
        seen = zombies
        await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def adopting_orphans() -> AsyncIterator[None]:
    """For the block, adopt orphaned descendants (a killed worker's buildah or git children,
    a detached broker) and reap them: PID 1 on these machines does not."""
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    reaper = asyncio.create_task(_reap_adopted(), name="orphan-reaper")
    try:
        yield
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
        _prctl(_PR_SET_CHILD_SUBREAPER, 0)


async def _group_gone(pgid: int, timeout: float = 10.0) -> None:
    """Wait until no member of the group is left (buildah or git children of a killed worker)."""
    deadline = time.monotonic() + timeout
    while await asyncio.to_thread(_live_members, pgid):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
            return
        await asyncio.sleep(0.05)


async def run_relay(config: Path, *args: str, timeout: float = 60.0) -> tuple[int, str]:
    """Run a one-shot relay command (``relay dlq list``); returns (exit code, its output)."""
    proc = await asyncio.create_subprocess_exec(
        *relay_argv(config, *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=child_env(),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace")
