"""Scenario 3: the Git server, the registry and the Kubernetes API server stopped and started.

The whole relay runs as in ``chaos.kill_workers`` (separate processes, a private vhost, a real
registry and Git server), here with a real Kubernetes API server too (etcd + kube-apiserver,
Flux's CRDs, the relay's least-privilege kubeconfig) and a stand-in Flux (``chaos.flux``), so the
reconcile and watch workers follow every deploy to ``deploy.ready``. Retries are short (0.5, 1,
2 s; 4 attempts) so that an outage of a few seconds outlasts some deploys' retries and not
others'. Three phases, one per service, each over its own apps (most prebuilt, some built by
buildah), each followed by a wait until every deploy of the phase has ended:

- the Git server, then the registry, stopped shortly after the first deploy, for 6 s, and
  started again on the same port and data;
- the Kubernetes API server stopped 4 s into its phase, once the first deploys are in the
  reconcile and watch workers' hands (waiting for Flux and the rollout, bounded at 90 and 60 s):
  SIGTERM, on which it stops listening, and SIGKILL 2 s later, which drops the workers' open
  watches. It starts again on the same port and etcd data about 15 s after the SIGTERM: longer
  than the retries of a deploy reaching the reconcile worker meanwhile (its reads are refused at
  once; 3.5 s of retries), while deploys keep coming at 1/s until after it is back.

Then: every deploy ended in ``deploy.ready`` or ``deploy.failed``; what failed names its phase's
outage as its reason (``git_unreachable``, ``registry_unreachable``, ``kubernetes_unavailable``,
or ``retries_exhausted``) and sits in dead letters; in each phase some work was retried through
the outage and completed; work the reconcile and watch workers held when the API server went
away waited for it and completed; and once the services are back, ``relay dlq list`` and
``relay dlq replay ID`` with the run's own config bring every dead-lettered deploy to
``deploy.ready``.

Run: ``python -m chaos.service_outage``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from chaos.judge import judge_callbacks
from chaos.observe import FAILED, READY
from chaos.pipeline import Run, image_request, open_run, source_request
from chaos.procs import run_relay
from chaos.report import Result, run_alone, say

LETTER = re.compile(r"^(?P<id>\S+)\s+\S+\s+(?P<queue>\S+)\s+(?P<key>\S+)\s+attempts=", re.M)
RETRY_DELAYS = [0.5, 1.0, 2.0]
MAX_ATTEMPTS = 4
WORKER_LOGS = ("build", "commit", "reconcile", "watch")


@dataclass
class Options:
    deploys_per_outage: int = 20
    sources_per_outage: int = 2
    rate: float = 2.0  # deploys per second in the Git and registry phases
    down_after: float = 1.0  # seconds into those phases when the service stops
    down_for: float = 6.0  # seconds it stays down: longer than the retries (3.5 s)
    kube_deploys: int = 24  # sent at 1/s: until after the API server is back
    kube_rate: float = 1.0
    kube_down_after: float = 4.0  # the first deploys are waiting for Flux and the rollout by then
    kube_stop_grace: float = 2.0  # SIGTERM, then SIGKILL (open watches keep it draining)
    kube_down_for: float = 9.0  # after it exited; then it takes ~4 s to be ready again
    rollout_seconds: float = 2.0  # the stand-in Flux's rollouts
    settle_timeout: float = 120.0


@dataclass
class Outage:
    """One phase: a service stopped ``down_after`` seconds in, for ``down_for`` seconds."""

    service: str
    prefix: str  # the phase's apps are <prefix>-NN
    reasons: frozenset[str]  # the failure reasons that name this outage
    stop: Callable[[], None]
    start: Callable[[], Any]
    deploys: int
    rate: float
    down_after: float
    down_for: float
    how: str = "stopped"
    down_seconds: float = 0.0  # from the stop to answering again
    stopped: datetime | None = None
    starting: datetime | None = None  # when it was started again (it answers a moment later)
    deployments: set[str] = field(default_factory=set)


def outages(run: Run, opts: Options) -> list[Outage]:
    stack = run.stack
    found = [
        Outage(
            "Git server",
            "git",
            frozenset({"git_unreachable", "retries_exhausted"}),
            stack.git.stop,
            stack.git.start,
            opts.deploys_per_outage,
            opts.rate,
            opts.down_after,
            opts.down_for,
        ),
        Outage(
            "registry",
            "reg",
            frozenset({"registry_unreachable", "retries_exhausted"}),
            stack.registry.stop,
            stack.registry.start,
            opts.deploys_per_outage,
            opts.rate,
            opts.down_after,
            opts.down_for,
        ),
    ]
    if stack.kube is not None:
        found.append(
            Outage(
                "Kubernetes API server",
                "kube",
                frozenset({"kubernetes_unavailable", "retries_exhausted"}),
                functools.partial(stack.kube.stop_apiserver, grace=opts.kube_stop_grace),
                stack.kube.start_apiserver,
                deploys=opts.kube_deploys,
                rate=opts.kube_rate,
                down_after=opts.kube_down_after,
                down_for=opts.kube_down_for,
                how=f"SIGTERM, on which it stops listening; SIGKILL {opts.kube_stop_grace:g} s "
                "later, as its open watches would keep it draining",
            )
        )
    return found


def requests_for(
    run: Run, outage: Outage, opts: Options, refs: dict[str, str]
) -> list[dict[str, Any]]:
    callback = run.stack.sink.url
    out = []
    for i in range(outage.deploys):
        app = f"{outage.prefix}-{i:02d}"
        if i % max(1, outage.deploys // max(1, opts.sources_per_outage)) == 1:
            out.append(source_request(app, "v1", callback))
        else:
            out.append(image_request(app, "v1", refs[app], callback))
    return out


async def phase(run: Run, outage: Outage, requests: list[dict[str, Any]]) -> None:
    """Send the requests at the rate; stop the service a while into it, for a while."""

    async def break_it() -> None:
        await asyncio.sleep(outage.down_after)
        say(f"stopping the {outage.service}")
        outage.stopped = datetime.now(UTC)
        started = time.monotonic()
        await asyncio.to_thread(outage.stop)
        await asyncio.sleep(outage.down_for)
        outage.starting = datetime.now(UTC)
        await asyncio.to_thread(outage.start)
        outage.down_seconds = time.monotonic() - started
        say(f"the {outage.service} is back after {outage.down_seconds:.1f} s")

    accepted = len(run.accepted_deploys())
    breaker = asyncio.create_task(break_it())
    started = time.monotonic()
    deadline = started + len(requests) / outage.rate + 60
    sends = []
    for i, request in enumerate(requests):
        await asyncio.sleep(max(0.0, started + i / outage.rate - time.monotonic()))
        sends.append(asyncio.create_task(run.sender.deploy(request, deadline=deadline)))
    await asyncio.gather(breaker, *sends)
    ids = {a.deployment_id for a in run.accepted_deploys()[accepted:] if a.deployment_id}
    outage.deployments = ids


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
    """Deployments some worker retried (its log says so)."""
    found = set()
    for name in WORKER_LOGS:
        path = run.stack.logs / f"{name}.log"
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if "will retry" in line and line.startswith("{"):
                found.add(str(json.loads(line).get("deployment_id")))
    return found


async def run(root: Path, opts: Options | None = None) -> Result:
    opts = opts or Options()
    result = Result(
        "service_outage", "Git server, registry and Kubernetes API server stopped and started"
    )
    started = time.monotonic()
    options = {
        "retry_delays": RETRY_DELAYS,
        "max_attempts": MAX_ATTEMPTS,
        "kubernetes": True,
        "rollout_seconds": opts.rollout_seconds,
    }
    async with open_run(root, **options) as run:
        stack = run.stack
        phases = outages(run, opts)
        apps = [f"{o.prefix}-{i:02d}" for o in phases for i in range(o.deploys)]
        pushed = await stack.push_images([(a, "v1") for a in apps])
        refs = {app: ref for (app, _), ref in pushed.items()}
        settled = []
        for outage in phases:
            await phase(run, outage, requests_for(run, outage, opts, refs))
            settled.append(await run.settle(opts.settle_timeout))
            say(f"every deploy of the {outage.service} phase ended")
        failed_before = _failed(run)
        say(f"replaying the {len(failed_before)} failed deploys' dead letters")
        replayed, owners = await replay_all(run)
        await run.observer.wait_until(
            lambda: all(_ready_after_failure(run, d) for d in owners.values()),
            opts.settle_timeout,
        )
        leftover = await dlq(run, "list")
        found = await run.judge(result)
        for outage in phases:
            judge_phase(result, run, outage, failed_before)
        judge_replays(result, run, failed=failed_before, replayed=replayed, owners=owners)
        result.check(
            "no dead letter left",
            "no dead letters" in leftover,
            "`relay dlq list` after the replays: " + leftover.strip().splitlines()[0][:120],
        )
        judge_callbacks(result, run, found.ended)
        result.facts.update(_facts(phases, settled, run))
    result.notes.append(
        "Flux is a stand-in (chaos.flux): it writes the GitRepository's and Kustomizations' status "
        "and applies each app's Deployment from the GitOps repository, then writes the "
        "Deployment's rolled-out status itself; no kube-controller-manager or kubelet runs."
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


def _ready_after_failure(run: Run, deployment: str) -> bool:
    line = run.observer.timelines.get(deployment)
    if line is None or (failed := line.first(FAILED)) is None:
        return False
    return any(e.time >= failed.time for e in line.all(READY))


def _rode_out(run: Run, outage: Outage, deployment: str) -> bool:
    """Handed to the reconcile worker before the API server stopped, ready only after it was
    started again, never failed: it waited through the whole outage."""
    line = run.observer.timelines.get(deployment)
    if line is None or outage.stopped is None or outage.starting is None:
        return False
    requested, ready = line.first("reconcile.requested"), line.first(READY)
    return (
        line.first(FAILED) is None
        and requested is not None
        and ready is not None
        and requested.time < outage.stopped
        and ready.time >= outage.starting
    )


def judge_phase(
    result: Result, run: Run, outage: Outage, failed: dict[str, dict[str, Any]]
) -> None:
    mine = {d: f for d, f in failed.items() if d in outage.deployments}
    odd = {
        d: f"{f.get('stage')}/{f.get('reason')}"
        for d, f in mine.items()
        if f.get("reason") not in outage.reasons
    }
    result.check(
        f"{outage.service} outage: every failure names it",
        not odd,
        f"{len(mine)} of {len(outage.deployments)} deploys failed, reasons: {_reasons(mine)}"
        + (f"; unexpected: {odd}" if odd else ""),
    )
    ready = {
        d
        for d in outage.deployments
        if (line := run.observer.timelines.get(d))
        and line.first(READY) is not None
        and line.first(FAILED) is None
    }
    through = (retried(run) & outage.deployments) & ready
    result.check(
        f"{outage.service} outage: work was retried through it and completed",
        bool(through),
        f"{len(through)} deployments retried by a worker and then ready without any help",
    )
    if outage.prefix == "kube":
        waited = {d for d in outage.deployments if _rode_out(run, outage, d)}
        result.check(
            "Kubernetes API server outage: work in the reconcile and watch workers' hands "
            "waited for it and completed",
            bool(waited),
            f"{len(waited)} deployments asked Flux to reconcile before the API server stopped "
            f"and were ready after it was back ({_watch_resumed(run)})",
        )


def judge_replays(
    result: Result,
    run: Run,
    *,
    failed: dict[str, dict[str, Any]],
    replayed: list[str],
    owners: dict[str, str],
) -> None:
    done = [d for d in owners.values() if _ready_after_failure(run, d)]
    unowned = sorted(set(failed) - set(owners.values()))
    result.check(
        "every failed deploy sat in dead letters and was replayed to deploy.ready",
        bool(replayed) and len(done) == len(owners) and not unowned,
        f"{len(replayed)} dead letters replayed with `relay dlq replay`, {len(done)} of their "
        f"deployments then ready"
        + (f"; failed but not dead-lettered: {unowned}" if unowned else ""),
    )


def _watch_resumed(run: Run) -> str:
    """What the reconcile and watch workers' informers logged about the outage."""
    counts = []
    for name in ("reconcile", "watch"):
        path = run.stack.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        lost = text.count('"kubernetes watch interrupted"')
        back = text.count('"kubernetes watch resumed"')
        counts.append(f"{name}: {lost} watches interrupted, {back} resumed")
    return "; ".join(counts)


def _reasons(failed: dict[str, dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for f in failed.values():
        key = f"{f.get('stage')}/{f.get('reason')}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())) or "none"


def _facts(phases: list[Outage], settled: list[float], run: Run) -> dict[str, Any]:
    tally = run.sender.tally
    facts: dict[str, Any] = {}
    for outage, settle in zip(phases, settled, strict=True):
        facts[f"{outage.service} down for"] = (
            f"{outage.down_seconds:.1f} s ({outage.how}), {outage.down_after:g} s into a phase of "
            f"{len(outage.deployments)} deploys sent at {outage.rate:g}/s; all of them ended "
            f"{settle:.1f} s after the sending and the outage were over"
        )
    flux = run.stack.logs / "flux.log"
    said = flux.read_text(errors="replace") if flux.exists() else ""
    handled = said.count('"request handled"')
    refused = said.count('"request not handled, trying again"')
    facts["stand-in Flux"] = (
        f"{handled} reconcile requests handled; {refused} tries the API server did not take"
    )
    return {
        **facts,
        "deploys accepted": len(run.accepted_deploys()),
        "HTTP answers": ", ".join(f"{c}: {n}" for c, n in sorted(tally.statuses.items())),
        "retry policy": (
            f"delays {', '.join(f'{d:g}' for d in RETRY_DELAYS)} s; {MAX_ATTEMPTS} attempts, "
            "then dead letters and deploy.failed"
        ),
    }


def main() -> int:
    return run_alone(run, prefix="relay-chaos-outage-")


if __name__ == "__main__":
    raise SystemExit(main())
