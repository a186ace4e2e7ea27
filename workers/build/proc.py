"""Child processes for builds and clones: argument lists, own process group, streamed output.

Every tool the build worker runs (git, buildah, buildctl, docker) goes through ``run``: no shell,
stdin closed, stdout and stderr merged and handed over line by line (for the structured log),
the last lines kept for a failure reason. Each child starts a new session, so that on a timeout
or a cancelled task the whole group (and any descendant that left it) is killed, not just the
direct child. Timeouts are the caller's ``asyncio.timeout``: cancellation lands here and kills.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)
LineSink = Callable[[str], None]
REAP_SECONDS = 5.0  # how long a killed process tree may take to go away
TAIL_LINES = 30
MAX_LINE = 4096  # characters of one output line kept (progress bars can be long)


@dataclass(frozen=True)
class Result:
    returncode: int
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def tail_text(self, lines: int = TAIL_LINES) -> str:
        return "\n".join(self.tail[-lines:])


@dataclass
class ArgvRecorder:
    """Every argv spawned, for audits (tests check no secret is ever on a command line)."""

    seen: list[list[str]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str]) -> None:
        self.seen.append(list(argv))


async def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    on_line: LineSink,
    cwd: Path | None = None,
    tail_lines: int = TAIL_LINES,
    recorder: ArgvRecorder | None = None,
) -> Result:
    """Run ``argv`` to completion; kill its whole process tree if cancelled."""
    if recorder is not None:
        recorder(argv)
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    tail: deque[str] = deque(maxlen=tail_lines)
    try:
        assert proc.stdout is not None

        def emit(line: str) -> None:
            tail.append(line)
            on_line(line)

        await _pump(proc.stdout, emit)
        code = await proc.wait()
    finally:
        if proc.returncode is None:
            await _kill_tree(proc)
    return Result(code, list(tail))


async def _pump(stream: asyncio.StreamReader, emit: LineSink) -> None:
    """Split output on newlines and carriage returns; emit non-empty lines."""
    pending = b""
    while chunk := await stream.read(65536):
        pending += chunk
        *lines, pending = pending.replace(b"\r", b"\n").split(b"\n")
        for raw in lines:
            _emit(raw, emit)
        if len(pending) > MAX_LINE * 4:  # a line without end: flush it in pieces
            _emit(pending, emit)
            pending = b""
    _emit(pending, emit)


def _emit(raw: bytes, emit: LineSink) -> None:
    text = raw.decode("utf-8", "replace").rstrip()
    if text:
        emit(text[:MAX_LINE])


async def _kill_tree(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the child's process group and every descendant that escaped it, then reap."""
    pids = await asyncio.to_thread(descendants, proc.pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    try:
        # wait() also waits for the output pipe to close: a process that escaped the tree
        # (double-forked into another session) could hold it open forever.
        await asyncio.wait_for(asyncio.shield(proc.wait()), timeout=REAP_SECONDS)
    except TimeoutError:
        log.warning("a killed process left a holder of its output behind", pid=proc.pid)


def descendants(root: int) -> list[int]:
    """Pids below ``root`` in the process tree (Linux ``/proc``; [] elsewhere)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        ppid = _parent_of(entry)
        if ppid is not None:
            parents.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def _parent_of(entry: Path) -> int | None:
    try:
        stat = (entry / "stat").read_text()
    except OSError:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after ")".
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 else None
