"""Scenario 3: the Git server and the registry stopped and started again mid-run.

The whole relay runs as in ``chaos.kill_workers`` (separate processes, a private vhost, a real
registry and Git server), with short retries (0.5, 1, 2 s; 4 attempts) so that an outage of a
few seconds outlasts some deploys' retries and not others'. Deploys (each of its own app, most
prebuilt, some built by buildah) go in while first the Git server, then the registry is stopped
for a while and started again on the same port and data. Then: every deploy ended; what failed
names the outage as its reason and sits in dead letters; some work was retried and completed;
and once the services are back, ``relay dlq list`` and ``relay dlq replay ID`` with the run's own
config bring every dead-lettered deploy to ``manifests.committed``.

The Kubernetes API server is not part of it yet: the reconcile and watch workers are not on main.

Run: ``python -m chaos.service_outage``.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.judge import judge_callbacks
from chaos.observe import COMMITTED, FAILED
from chaos.pipeline import Run, image_request, open_run, source_request
from chaos.procs import run_relay
from chaos.report import Result, print_result, say

OUTAGE_REASONS = frozenset({"git_unreachable", "registry_unreachable", "retries_exhausted"})
LETTER = re.compile(r"^(?P<id>\S+)\s+\S+\s+(?P<queue>\S+)\s+(?P<key>\S+)\s+attempts=", re.M)


@dataclass
class Options:
    deploys_per_outage: int = 20
    sources_per_outage: int = 2
    rate: float = 2.0  # deploys per second: the sending outlasts the outage
    down_after: float = 1.0  # seconds into a phase when the service stops
    down_for: float = 6.0  # seconds it stays down: longer than the retries (3.5 s)
    settle_timeout: float = 120.0


@dataclass
class Outage:
    service: str
    stop: Callable[[], None]
    start: Callable[[], Any]
    down_seconds: float = 0.0


def requests_for(run: Run, phase: str, opts: Options, refs: dict[str, str]) -> list[dict[str, Any]]:
    callback = run.stack.sink.url
    out = []
    for i in range(opts.deploys_per_outage):
        app = f"{phase}-{i:02d}"
        if i % max(1, opts.deploys_per_outage // max(1, opts.sources_per_outage)) == 1:
            out.append(source_request(app, "v1", callback))
        else:
            out.append(image_request(app, "v1", refs[app], callback))
    return out


async def phase(run: Run, outage: Outage, requests: list[dict[str, Any]], opts: Options) -> None:
    """Send the requests at the rate; stop the service shortly after the first, for a while."""

    async def break_it() -> None:
        await asyncio.sleep(opts.down_after)
        say(f"stopping the {outage.service}")
        await asyncio.to_thread(outage.stop)
        started = time.monotonic()
        await asyncio.sleep(opts.down_for)
        await asyncio.to_thread(outage.start)
        outage.down_seconds = time.monotonic() - started
        say(f"the {outage.service} is back after {outage.down_seconds:.1f} s")

    breaker = asyncio.create_task(break_it())
    started = time.monotonic()
    deadline = started + len(requests) / opts.rate + 60
    sends = []
    for i, request in enumerate(requests):
        await asyncio.sleep(max(0.0, started + i / opts.rate - time.monotonic()))
        sends.append(asyncio.create_task(run.sender.deploy(request, deadline=deadline)))
    await asyncio.gather(breaker, *sends)


async def dlq(run: Run, *args: str) -> str:
    """``relay dlq …`` with the run's config; its output is kept with the run's logs."""
    code, out = await run_relay(run.stack.config_path, "dlq", *args)
    with open(run.stack.logs / "dlq.log", "a") as log:  # noqa: ASYNC230 - a small local file
        log.write(f"$ relay dlq {' '.join(args)}  (exit {code})\n{out}")
    if code not in (0, 1):
        raise RuntimeError(f"relay dlq {' '.join(args)} exited {code}: {out[-300:]}")
    return out


async def replay_all(run: Run) -> tuple[list[str], dict[str, str]]:
    """Replay every dead letter; (ids replayed, their event id -> deployment id)."""
    listing = await dlq(run, "list")
    ids = [m["id"] for m in LETTER.finditer(listing)]
    letters = {x.id: x for x in await run.observer.bus.dead_letters()}
    owner = {e.id: e.deploymentid or "" for e in run.observer.events}
    deployments = {i: owner.get(letters[i].event_id or "", "") for i in ids if i in letters}
    for letter in ids:  # one at a time, as a person would: each run reads the whole queue
        out = await dlq(run, "replay", letter)
        if f"replayed {letter}" not in out:
            raise RuntimeError(f"relay dlq replay {letter} did not replay it: {out.strip()}")
    return ids, deployments


def retried(run: Run) -> set[str]:
    """Deployments some worker retried (its log says so), from the build and commit logs."""
    found = set()
    for name in ("build", "commit"):
        path = run.stack.logs / f"{name}.log"
        for line in path.read_text(errors="replace").splitlines():
            if "will retry" in line and line.startswith("{"):
                found.add(str(json.loads(line).get("deployment_id")))
    return found


async def run(root: Path, opts: Options | None = None) -> Result:
    opts = opts or Options()
    result = Result("service_outage", "Git server and registry stopped and started mid-run")
    started = time.monotonic()
    async with open_run(root, retry_delays=[0.5, 1.0, 2.0], max_attempts=4) as run:
        stack = run.stack
        apps = [f"{p}-{i:02d}" for p in ("git", "reg") for i in range(opts.deploys_per_outage)]
        pushed = await stack.push_images([(a, "v1") for a in apps])
        refs = {app: ref for (app, _), ref in pushed.items()}
        outages = [
            Outage("Git server", stack.git.stop, stack.git.start),
            Outage("registry", stack.registry.stop, stack.registry.start),
        ]
        for outage, prefix in zip(outages, ("git", "reg"), strict=True):
            await phase(run, outage, requests_for(run, prefix, opts, refs), opts)
        settle = await run.settle(opts.settle_timeout)
        say("every deploy ended; replaying the dead letters")
        failed_before = _failed(run)
        replayed, owners = await replay_all(run)
        await run.observer.wait_until(
            lambda: all(_committed_after_failure(run, d) for d in owners.values()),
            opts.settle_timeout,
        )
        leftover = await dlq(run, "list")
        await run.judge(result)
        judge_outage(
            result, run, failed=failed_before, replayed=replayed, owners=owners, leftover=leftover
        )
        judge_callbacks(result, run, {d: "failed" for d in failed_before})
        result.facts.update(_facts(outages, settle, run))
    result.notes.append(
        "The Kubernetes API server was not stopped: the reconcile and watch workers are not on "
        "main yet, so deploys end at manifests.committed."
    )
    result.seconds = time.monotonic() - started
    result.secrets, result.log_files = stack.secret_values(), stack.log_files()
    return result


def _failed(run: Run) -> dict[str, dict[str, Any]]:
    return {
        d: line.failure() or {}
        for d, line in run.observer.timelines.items()
        if line.first(FAILED) is not None
    }


def _committed_after_failure(run: Run, deployment: str) -> bool:
    line = run.observer.timelines.get(deployment)
    if line is None or (failed := line.first(FAILED)) is None:
        return False
    return any(e.time >= failed.time for e in line.all(COMMITTED))


def judge_outage(
    result: Result,
    run: Run,
    *,
    failed: dict[str, dict[str, Any]],
    replayed: list[str],
    owners: dict[str, str],
    leftover: str,
) -> None:
    odd = {
        d: f"{f.get('stage')}/{f.get('reason')}"
        for d, f in failed.items()
        if f.get("reason") not in OUTAGE_REASONS
    }
    result.check(
        "every failure names the outage",
        not odd,
        f"{len(failed)} deploys failed, reasons: {_reasons(failed)}"
        + (f"; unexpected: {odd}" if odd else ""),
    )
    through = retried(run) - set(failed)
    committed = {d for d, line in run.observer.timelines.items() if line.first(COMMITTED)}
    result.check(
        "work was retried through the outage and completed",
        bool(through & committed),
        f"{len(through & committed)} deployments retried by a worker and then committed "
        "without any help",
    )
    done = [d for d in owners.values() if _committed_after_failure(run, d)]
    unowned = sorted(set(failed) - set(owners.values()))
    result.check(
        "every dead-lettered deploy was replayed to the end",
        bool(replayed) and len(done) == len(owners) and not unowned,
        f"{len(replayed)} dead letters replayed with `relay dlq replay`, {len(done)} of their "
        f"deployments then committed"
        + (f"; failed but not dead-lettered: {unowned}" if unowned else ""),
    )
    result.check(
        "no dead letter left",
        "no dead letters" in leftover,
        "`relay dlq list` after the replays: " + leftover.strip().splitlines()[0][:120],
    )


def _reasons(failed: dict[str, dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for f in failed.values():
        key = f"{f.get('stage')}/{f.get('reason')}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) or "none"


def _facts(outages: list[Outage], settle: float, run: Run) -> dict[str, Any]:
    tally = run.sender.tally
    return {
        **{f"{o.service} down for": f"{o.down_seconds:.1f} s" for o in outages},
        "deploys accepted": len(run.accepted_deploys()),
        "HTTP answers": ", ".join(f"{c}: {n}" for c, n in sorted(tally.statuses.items())),
        "settled after the last request": f"{settle:.1f} s",
        "retry policy": "delays 0.5, 1, 2 s; 4 attempts, then dead letters and deploy.failed",
    }


def main() -> int:
    root = Path(tempfile.mkdtemp(prefix="relay-chaos-outage-"))
    try:
        result = asyncio.run(run(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print_result(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
