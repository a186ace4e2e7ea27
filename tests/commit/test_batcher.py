"""Group commit: concurrent submits share flushes, flushes never overlap, results go to their
own callers."""

from __future__ import annotations

import asyncio

import pytest

from workers.commit.batcher import Batcher


class Recorder:
    def __init__(self, *, delay: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.running = 0
        self.most_at_once = 0
        self.delay = delay

    async def flush(self, items: list[int]) -> list[int | BaseException]:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.batches.append(items)
        await asyncio.sleep(self.delay)
        self.running -= 1
        return [ValueError(f"odd {i}") if i < 0 else i * 10 for i in items]


async def test_concurrent_submits_share_one_flush() -> None:
    rec = Recorder()
    batcher = Batcher(rec.flush, window=0.05, max_size=50)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(20)))
    assert results == [i * 10 for i in range(20)]
    assert rec.batches == [list(range(20))]
    assert batcher.batches == 1


async def test_batches_are_bounded_and_never_overlap() -> None:
    rec = Recorder(delay=0.02)
    batcher = Batcher(rec.flush, window=0.01, max_size=3)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(7)))
    assert results == [i * 10 for i in range(7)]
    assert [len(b) for b in rec.batches] == [3, 3, 1]
    assert rec.most_at_once == 1


async def test_items_arriving_during_a_flush_form_the_next_batch() -> None:
    rec = Recorder(delay=0.1)
    batcher = Batcher(rec.flush, window=0.0, max_size=50)
    first = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.03)  # the first flush is running now
    later = await asyncio.gather(*(batcher.submit(i) for i in range(2, 6)))
    assert await first == 10
    assert later == [20, 30, 40, 50]
    assert rec.batches == [[1], [2, 3, 4, 5]]


async def test_a_failed_item_fails_alone_a_failed_flush_fails_all() -> None:
    rec = Recorder()
    batcher: Batcher[int, int] = Batcher(rec.flush, window=0.01, max_size=10)
    ok, bad = await asyncio.gather(batcher.submit(1), batcher.submit(-1), return_exceptions=True)
    assert ok == 10
    assert isinstance(bad, ValueError)

    async def broken(items: list[int]) -> list[int | BaseException]:
        raise RuntimeError("remote gone")

    failing: Batcher[int, int] = Batcher(broken, window=0.01, max_size=10)
    outcomes = await asyncio.gather(*(failing.submit(i) for i in range(3)), return_exceptions=True)
    assert [type(o) for o in outcomes] == [RuntimeError] * 3


async def test_a_cancelled_caller_is_left_out_of_the_batch() -> None:
    rec = Recorder()
    batcher = Batcher(rec.flush, window=0.05, max_size=10)
    gone = asyncio.create_task(batcher.submit(99))
    await asyncio.sleep(0)
    gone.cancel()
    assert await batcher.submit(1) == 10
    assert rec.batches == [[1]]
    with pytest.raises(asyncio.CancelledError):
        await gone
