"""Garbage-collector settings for the long-running processes (gateway, workers, ``relay up``).

With CPython's default generation-0 threshold (700 net container allocations) the gateway ran a
collection every ~15 requests under load, and each one walked every object of the requests in
flight: measured with ``bench/gateway_load.py`` on RabbitMQ, raising the threshold and freezing
the start-up objects took the gateway from ~1.1 to ~0.75 ms of CPU per request (BENCHMARKS.md).
Reference counting still frees almost every object at once; reference cycles are still
collected, only in larger batches. What is alive after start-up (modules, settings, the app)
lives as long as the process, so it is frozen out of the collector's reach.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 20_000


def tune_gc() -> None:
    """Call once the process has started: collect, freeze what is alive, raise the threshold."""
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
