"""``make bench``: every benchmark in bench/, one table of ratios and goals, dated rows recorded.

Each benchmark runs in its own child process (``python -m bench.all --one NAME``), bounded by
its own timeout, so that one that fails or hangs is reported as such and the others still run.
A module takes part by exposing ``collect(quick: bool) -> list[bench.summary.Metric]``; a module
of bench/ without it (one that arrived from another branch) is run as ``python -m bench.NAME``
within the same kind of bound and reported by its exit status only. ``--quick`` (the default
for ``make bench``) shortens each benchmark; ``--full`` runs them at their standalone sizes.

Everything runs on loopback, against services each benchmark starts (and stops) itself, and
against RabbitMQ in a private vhost per benchmark. Prints one table; appends one dated row per
metric to the "Summary runs" table of BENCHMARKS.md (``--no-record`` to skip).
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.summary import Metric, dump, load_average, parse, record, skipped, table

ROOT = Path(__file__).resolve().parents[1]
MARK = "BENCH-METRICS "
# name -> (timeout in seconds, quick or full); the order they run in
KNOWN: dict[str, int] = {
    "gateway_load": 240,
    "bus_throughput": 300,
    "deploy_pipeline": 300,
    "idle_rss": 240,
    "commit_throughput": 420,
    "build_latency": 420,
    "reconcile_latency": 300,
    "reconcile_waits": 300,
}
INTERRUPT_GRACE = 60  # seconds an interrupted benchmark gets to stop what it started
# helpers, and diagnostics run by hand (``python -m bench.NAME``) when a number needs explaining
NOT_BENCHMARKS = {"__init__", "all", "summary", "stagetrace", "reconcile_stages", "reconcile_lone"}


def discovered() -> list[str]:
    """Every benchmark module in bench/: the known ones in their order, then any other."""
    present = {p.stem for p in (ROOT / "bench").glob("*.py")} - NOT_BENCHMARKS
    return [n for n in KNOWN if n in present] + sorted(present - set(KNOWN))


def run_one(name: str, *, quick: bool) -> None:
    """The child: import the module, collect its metrics, print them on one marked line."""
    from relay.logging import configure

    configure(level="warning", fmt="console", stream=sys.stderr)
    module = importlib.import_module(f"bench.{name}")
    load = load_average()
    metrics = [m if m.load else _with_load(m, load) for m in module.collect(quick=quick)]
    print(MARK + dump(metrics), flush=True)


def _with_load(metric: Metric, load: str) -> Metric:
    return Metric(**{**metric.__dict__, "load": load})


def has_collect(name: str) -> bool:
    source = (ROOT / "bench" / f"{name}.py").read_text()
    return "\ndef collect(" in source


def bounded(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str] | None:
    """Run ``argv``; past ``timeout``, interrupt it (SIGINT, so that its ``finally`` blocks stop
    the services it started and delete its vhost), then kill it. None when it timed out."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        return None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def child(name: str, *, quick: bool) -> list[Metric]:
    timeout = KNOWN.get(name, 300)
    load = load_average()
    if has_collect(name):
        argv = [sys.executable, "-m", "bench.all", "--one", name, "--quick" if quick else "--full"]
    else:
        argv = [sys.executable, "-m", f"bench.{name}"]
    started = time.monotonic()
    done = bounded(argv, timeout)
    if done is None:
        return [skipped(name, f"did not finish within {timeout} s (interrupted)")]
    seconds = time.monotonic() - started
    sys.stderr.write(done.stderr[-3000:] if done.returncode else "")
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            return parse(line.removeprefix(MARK))
    if has_collect(name):
        return [skipped(name, f"failed (exit {done.returncode}); its error is printed above")]
    return [
        Metric(
            bench=name,
            name=f"ran standalone, exit {done.returncode} (no collect(): no metrics here)",
            value=seconds,
            unit="s",
            load=load,
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="quick", action="store_true", default=True)
    size.add_argument("--full", dest="quick", action="store_false")
    parser.add_argument("--only", nargs="*", help="run only these benchmarks")
    parser.add_argument("--no-record", action="store_true", help="do not append BENCHMARKS.md")
    args = parser.parse_args()
    if args.one:
        run_one(args.one, quick=args.quick)
        return
    names = [n for n in discovered() if not args.only or n in args.only]
    metrics: list[Metric] = []
    started = time.monotonic()
    for name in names:
        print(f"==> {name} (load average {load_average()})", file=sys.stderr, flush=True)
        metrics += child(name, quick=args.quick)
    print(table(metrics))
    print(f"\n{len(names)} benchmarks in {time.monotonic() - started:.0f} s")
    if not args.no_record:
        record(metrics)
        print(f"appended {len(metrics)} rows to {ROOT / 'BENCHMARKS.md'}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
