"""Child processes: output streamed line by line, tail kept, whole tree killed on timeout."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest

from tests.build.harness import alive_with
from workers.build.proc import ArgvRecorder, run


async def test_output_lines_and_tail() -> None:
    lines: list[str] = []
    script = "for i in $(seq 1 40); do echo line$i; done; printf 'a\\rb\\n'; echo err >&2; exit 3"
    result = await run(["sh", "-c", script], env=dict(os.environ), on_line=lines.append)
    assert result.returncode == 3 and not result.ok
    assert lines[:2] == ["line1", "line2"] and lines[-3:] == ["a", "b", "err"]
    assert len(result.tail) == 30 and result.tail[-1] == "err"


async def test_cancel_kills_the_whole_tree() -> None:
    marker = f"{uuid.uuid4().int % 10_000}.{os.getpid()}"
    # a child in the group, one that left it with setsid, and the shell itself
    script = f"sleep 3{marker} & setsid sleep 4{marker} & echo started; wait"
    recorder = ArgvRecorder()
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await run(
                ["sh", "-c", script], env=dict(os.environ), on_line=lines.append, recorder=recorder
            )
    assert time.monotonic() - started < 5
    assert lines == ["started"]
    assert recorder.seen == [["sh", "-c", script]]
    for _ in range(50):
        if not alive_with(marker):
            break
        await asyncio.sleep(0.05)
    assert alive_with(marker) == []
