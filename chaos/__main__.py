"""``python -m chaos`` (``make chaos``): every fault scenario, one summary, RELIABILITY.md.

Runs the scenarios one after another, each in a directory of its own and bounded in time, then
scans all their logs for secrets, prints a summary, writes the "Chaos" section of RELIABILITY.md
(``--no-report`` leaves the file alone) and exits 1 when any invariant failed.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

from chaos import broker_restart, kill_workers, service_outage
from chaos.report import ROOT, Result, machine, print_result, render, say, write_section
from chaos.secret_scan import scan

SCENARIO_LIMIT = 900.0  # seconds any one scenario may take before it counts as failed
Scenario = Callable[[Path], Awaitable[Result]]


def scenarios(quick: bool) -> list[tuple[str, str, Scenario]]:
    kill = kill_workers.Options(deploys=60, apps=20) if quick else kill_workers.Options()
    outage = service_outage.Options(deploys_per_outage=12) if quick else service_outage.Options()
    return [
        ("kill_workers", "kill -9 of each relay process", lambda r: kill_workers.run(r, kill)),
        ("broker_restart", "RabbitMQ restarted under load", broker_restart.run),
        (
            "service_outage",
            "Git, registry and Kubernetes API server outages",
            lambda r: service_outage.run(r, outage),
        ),
    ]


async def run_one(name: str, title: str, scenario: Scenario, root: Path) -> Result:
    say(f"scenario {name}: {title}")
    started = time.monotonic()
    directory = root / name
    directory.mkdir()
    try:
        return await asyncio.wait_for(scenario(directory), SCENARIO_LIMIT)
    except Exception as exc:  # a scenario that cannot finish is a failed one, with its cause
        failed = Result(name, title, seconds=time.monotonic() - started)
        failed.check("the scenario ran to its end", False, f"{type(exc).__name__}: {exc}")
        failed.notes.append(traceback.format_exc(limit=4).strip().splitlines()[-1])
        failed.log_files = sorted(directory.rglob("*.log"))
        return failed


async def run_all(root: Path, quick: bool, only: list[str] | None) -> list[Result]:
    results = []
    for name, title, scenario in scenarios(quick):
        if only and name not in only:
            continue
        result = await run_one(name, title, scenario, root)
        print_result(result)
        results.append(result)
    results.append(scan(results))
    print_result(results[-1])
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller runs (about a third)")
    parser.add_argument("--only", nargs="*", help="scenario names to run (default: all)")
    parser.add_argument("--no-report", action="store_true", help="do not write RELIABILITY.md")
    parser.add_argument("--keep", type=Path, help="keep every run's files in this directory")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="relay-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    try:
        results = asyncio.run(run_all(root, args.quick, args.only))
    finally:
        if args.keep is None and results and all(r.ok for r in results):
            shutil.rmtree(root, ignore_errors=True)
        else:
            say(f"the run's files (logs) are kept in {root} for a post-mortem")
    summary(results)
    if not args.no_report:
        write_section(ROOT / "RELIABILITY.md", render(results, machine()))
        say(f"wrote the Chaos section of {ROOT / 'RELIABILITY.md'}")
    return 0 if all(r.ok for r in results) else 1


def summary(results: list[Result]) -> None:
    print("\n=== chaos summary")
    for r in results:
        failed = [c.name for c in r.checks if not c.ok]
        verdict = "PASS" if r.ok else "FAIL: " + "; ".join(failed)
        print(f"  {r.scenario:<16} {len(r.checks):>2} invariants  {r.seconds:6.1f} s  {verdict}")


if __name__ == "__main__":
    raise SystemExit(main())
