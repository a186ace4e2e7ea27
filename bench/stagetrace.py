"""Per-stage timestamps inside ``relay worker reconcile``, for ``bench.reconcile_stages`` only.

Run as the worker's entry point (``python -m bench.stagetrace OUT.json -- relay args…``): it
wraps a few of the worker's functions to note ``time.monotonic()`` (one clock for every process
of the machine) at each stage of a git.push, keyed by the event id, then runs the relay CLI.
Also noted: every GC collection (start, duration, generation), every event-loop stall (a
5 ms ticker that woke late) and every sampling of the queue metrics. Written to OUT.json when
the process exits. With ``STAGETRACE_PROFILE=FILE`` the worker also runs under cProfile
(thread CPU time; it slows the worker down) and saves the profile there.

A diagnostic, not part of the relay: it reaches into private functions of the modules it wraps.
"""

from __future__ import annotations

import asyncio
import atexit
import cProfile
import functools
import gc
import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

Marks = dict[str, dict[str, float]]

MARKS: Marks = defaultdict(dict)  # event id -> stage -> monotonic time
VALUES: dict[str, str] = {}  # requestedAt value -> event id of the patch that set it
INFORMED: dict[str, float] = {}  # requestedAt value -> when the worker's informer saw it
GC: list[tuple[float, float, int]] = []  # (start, seconds, generation)
STALLS: list[tuple[float, float]] = []  # (when the ticker should have run, how late it ran)
SAMPLES: list[tuple[float, float]] = []  # queue metrics sampled: (start, seconds)
TICK = 0.005
REQUESTED_AT = "reconcile.fluxcd.io/requestedAt"


def _event_id() -> str | None:
    found = structlog.contextvars.get_contextvars().get("event_id")
    return str(found) if found else None


def _mark(key: str | None, stage: str) -> None:
    if key is not None:
        MARKS[key].setdefault(stage, time.monotonic())


def _around(owner: Any, name: str, before: str, after: str | None) -> None:
    """Wrap the coroutine function ``owner.name``: mark ``before`` on entry, ``after`` on exit,
    keyed by the event id bound in the logging context."""
    original = getattr(owner, name)

    @functools.wraps(original)
    async def wrapped(*args: Any, **kwargs: Any) -> Any:
        key = _event_id()
        _mark(key, before)
        result = await original(*args, **kwargs)
        if after is not None:
            _mark(key, after)
        return result

    _replace(owner, name, wrapped)


def _replace(owner: Any, name: str, new: Any) -> None:
    setattr(owner, name, new)


def install() -> None:
    """Wrap what a git.push passes through: bus, dispatcher, handler, API client, informer."""
    _trace_bus()
    _trace_dispatch()
    _trace_kube()


def _trace_bus() -> None:
    from relay import queuewatch
    from relay.bus import rabbit_consumer

    on_message = rabbit_consumer.RabbitConsumer._on_message
    settle = rabbit_consumer.Settler.settle
    sample = queuewatch.sample

    async def delivered(self: Any, message: Any) -> None:
        _mark(message.message_id, "delivered")
        await on_message(self, message)

    async def settled(self: Any, queue: str, raw: Any, message: Any, outcome: Any) -> None:
        _mark(message.message_id, "settle")
        await settle(self, queue, raw, message, outcome)
        _mark(message.message_id, "acked")

    async def sampled(*args: Any, **kwargs: Any) -> None:
        started = time.monotonic()
        try:
            await sample(*args, **kwargs)
        finally:
            SAMPLES.append((started, time.monotonic() - started))

    _replace(rabbit_consumer.RabbitConsumer, "_on_message", delivered)
    _replace(rabbit_consumer.Settler, "settle", settled)
    _replace(queuewatch, "sample", sampled)


def _trace_dispatch() -> None:
    from workers import runtime
    from workers.reconcile import worker

    dispatch = runtime.Dispatcher.__call__
    decode: Callable[..., Any] = runtime.decode  # type: ignore[attr-defined]

    async def dispatched(self: Any, message: Any) -> Any:
        _mark(message.message_id, "dispatch")
        return await dispatch(self, message)

    def decoded(body: bytes, **kwargs: Any) -> Any:
        event = decode(body, **kwargs)
        _mark(event.id, "decoded")
        return event

    _replace(runtime.Dispatcher, "__call__", dispatched)
    _replace(runtime, "decode", decoded)
    _around(worker.ReconcileWorker, "handle", "handler", "handler_done")
    _around(worker.ReconcileWorker, "patch", "patch_requested", "patch_result")
    _around(runtime.Context, "publish", "requested_publish", "requested_confirmed")


def _trace_kube() -> None:
    from relay.kube import client, informer

    patch_merge = client.KubeCluster.patch_merge
    read = client._read
    apply = informer.Informer._apply

    async def patched(self: Any, resource: Any, namespace: str, name: str, body: Any) -> Any:
        key = _event_id()
        _mark(key, "patch_sent")
        result = await patch_merge(self, resource, namespace, name, body)
        _mark(key, "patch_returned")
        if key is not None:
            VALUES[body["metadata"]["annotations"][REQUESTED_AT]] = key
        return result

    async def read_marked(response: Any, what: str) -> bytes:
        if what.startswith("patch "):
            _mark(_event_id(), "patch_headers")
        return await read(response, what)

    def applied(self: Any, event: Any) -> None:
        apply(self, event)
        value = ((event.object.get("metadata") or {}).get("annotations") or {}).get(REQUESTED_AT)
        if value and value not in INFORMED:
            INFORMED[value] = time.monotonic()

    _replace(client.KubeCluster, "patch_merge", patched)
    _replace(client, "_read", read_marked)
    _replace(informer.Informer, "_apply", applied)


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _on_gc.started = time.monotonic()  # type: ignore[attr-defined]
    else:
        started = getattr(_on_gc, "started", time.monotonic())
        GC.append((started, time.monotonic() - started, int(info.get("generation", -1))))


async def ticker() -> None:
    due = time.monotonic() + TICK
    while True:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        late = time.monotonic() - due
        if late > 0.002:
            STALLS.append((due, late))
        due = max(due + TICK, time.monotonic())


def dump(path: Path) -> None:
    path.write_text(
        json.dumps(
            {
                "marks": MARKS,
                "values": VALUES,
                "informed": INFORMED,
                "gc": GC,
                "stalls": STALLS,
                "samples": SAMPLES,
            }
        )
    )


def _profile(path: str) -> None:
    """The worker's CPU by function (thread time) for the whole run, into ``path``."""
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()

    def save() -> None:
        profiler.disable()
        profiler.dump_stats(path)

    atexit.register(save)


def main() -> None:
    out = Path(sys.argv[1])
    argv = sys.argv[sys.argv.index("--") + 1 :]
    install()
    gc.callbacks.append(_on_gc)
    atexit.register(dump, out)
    if os.environ.get("STAGETRACE_PROFILE"):
        _profile(os.environ["STAGETRACE_PROFILE"])

    from relay.cli import run

    serve = run.serve

    async def serve_with_ticker(*args: Any, **kwargs: Any) -> None:
        task = asyncio.create_task(ticker())
        try:
            await serve(*args, **kwargs)
        finally:
            task.cancel()

    _replace(run, "serve", serve_with_ticker)
    from relay.cli.main import main as relay_main

    sys.exit(relay_main(argv))


if __name__ == "__main__":
    main()
