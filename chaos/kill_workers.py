"""Scenario 1: SIGKILL each relay process in turn during a run of signed deploys.

The gateway and every worker run as separate processes on a private vhost of the shared
RabbitMQ, with a real registry (prebuilt images pushed beforehand, so most builds are digest
resolutions; a few apps are built ``FROM scratch`` by buildah), a real Git server and a real
Kubernetes API server with the stand-in Flux of ``chaos.flux`` (so reconcile and watch do their
real work: patch Flux objects, wait for Flux, follow each Deployment's rollout). While the
deploys go in at a steady rate, each process is killed with SIGKILL (its whole process group, as
a container dies), at a moment chosen from its own log where that matters (mid-build, right after
a push, right after a Flux patch), and started again a moment later. Then: every accepted deploy
ended in ``deploy.ready`` or ``deploy.failed``, each failure says why, no deployment was
committed twice, no image was pushed twice, every end was called back.

Run: ``python -m chaos.kill_workers [--deploys N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaos.judge import (
    judge_builds,
    judge_callbacks,
    judge_expected,
    judge_hooks_and_letters,
    judge_kills,
    run_facts,
)
from chaos.load import Sender
from chaos.observe import FAILED
from chaos.pipeline import Run, image_request, open_run, source_request
from chaos.report import Result, run_alone
from chaos.stack import Stack

TRIGGER_WAIT = 8.0  # seconds a kill waits for its log trigger before it fires anyway


@dataclass(frozen=True)
class Kill:
    target: str  # process name: gateway or a worker
    at: float  # seconds after the first deploy when the kill is armed
    trigger: str | None  # a line of the target's log to wait for, to kill in that window
    why: str


PLAN = (  # restarts take 3-6 s on two shared cores: the kills are spaced to fit the load
    Kill("build", 2.0, "build started", "mid-build, buildah running"),
    Kill("commit", 7.0, '"pushed"', "right after a push, before its ack"),
    Kill("notify", 12.0, "callback delivered", "right after a callback"),
    Kill("watch", 16.0, None, "mid-rollouts"),
    Kill("gateway", 20.0, None, "under load"),
    Kill("build", 25.0, "image pushed", "right after an image push, before its ack"),
    Kill("reconcile", 29.0, '"reconcile requested"', "right after a Flux patch, waiting for Flux"),
    Kill("commit", 34.0, None, "anywhere in a batch"),
)
IN_OUT = {
    "build": ("deploy.requested", "image.pushed"),
    "commit": ("image.pushed", "manifests.committed"),
    "reconcile": ("manifests.committed", "reconcile.completed"),
    "watch": ("reconcile.completed", "deploy.ready"),
}


@dataclass
class Options:
    deploys: int = 200
    apps: int = 50
    source_deploys: int = 8
    missing_images: int = 4
    rate: float = 5.0  # deploys per second: 200 take 40 s, the length of the kill plan
    hooks: int = 20
    kills: tuple[Kill, ...] = PLAN
    restart_after: float = 1.0
    settle_timeout: float = 180.0
    kubernetes: bool = True  # a real API server and the stand-in Flux; else reconcile/watch skip


@dataclass
class KillRecord:
    kill: Kill
    triggered: bool
    at: float  # wall clock of the SIGKILL
    back_after: float  # seconds from the kill until it was consuming/listening again
    in_flight: int | None = None


@dataclass(frozen=True)
class Spec:
    app: str
    version: str
    kind: str  # prebuilt (pushed beforehand), source (built by buildah), missing (no such image)


def plan(opts: Options) -> list[Spec]:
    """Waves of versions over the apps (v1 of every app, then v2…), with the source builds and
    the missing images spread evenly over the whole run."""
    src_apps = (opts.source_deploys + 1) // 2
    n_prebuilt = opts.deploys - opts.source_deploys - opts.missing_images
    apps = [f"app-{i:02d}" for i in range(max(1, opts.apps - src_apps - opts.missing_images))]
    specs = [
        Spec(apps[i % len(apps)], f"v{i // len(apps) + 1}", "prebuilt") for i in range(n_prebuilt)
    ]
    sources = [
        Spec(f"src-{i % src_apps}", f"v{i // src_apps + 1}", "source")
        for i in range(opts.source_deploys)
    ]
    missing = [Spec(f"ghost-{i}", "v1", "missing") for i in range(opts.missing_images)]
    placed = [(_spread(i, len(sources), opts.deploys, 0.5), s) for i, s in enumerate(sources)]
    placed += [(_spread(i, len(missing), opts.deploys, 0.45), s) for i, s in enumerate(missing)]
    for position, spec in sorted(placed, key=lambda p: p[0]):
        specs.insert(min(position, len(specs)), spec)
    return specs


def _spread(i: int, count: int, total: int, offset: float) -> int:
    return int((i + offset) * total / count)


def request_for(spec: Spec, refs: dict[tuple[str, str], str], stack: Stack) -> dict[str, Any]:
    callback = stack.sink.url
    if spec.kind == "source":
        return source_request(spec.app, spec.version, callback)
    ref = refs.get((spec.app, spec.version), f"{stack.registry.host}/apps/{spec.app}:none")
    return image_request(spec.app, spec.version, ref, callback)


async def send_deploys(run: Run, requests: list[dict[str, Any]], rate: float) -> float:
    """Send every request at ``rate`` per second (each retried through outages); the seconds."""
    started = time.monotonic()
    deadline = started + len(requests) / rate + 120.0
    tasks = []
    for i, request in enumerate(requests):
        await asyncio.sleep(max(0.0, started + i / rate - time.monotonic()))
        tasks.append(asyncio.create_task(run.sender.deploy(request, deadline=deadline)))
    await asyncio.gather(*tasks)
    return time.monotonic() - started


async def send_hooks(sender: Sender, count: int, stack: Stack) -> None:
    """Signed pushes (both live GitHub secrets, GitLab's token) and some wrongly signed ones."""
    for i in range(count):
        old = stack.values["github-old"] if i % 2 else None
        await sender.github_push_once(f"chaos-gh-{i}", secret=old)
        await sender.gitlab_push_once(f"chaos-gl-{i}")
        if i % 4 == 0:
            await sender.github_push_once(f"chaos-bad-{i}", secret="not-the-secret-at-all")
            await sender.gitlab_push_once(f"chaos-badgl-{i}", token="not-the-token-at-all")
        await asyncio.sleep(0.3)


async def run_kills(
    stack: Stack, kills: tuple[Kill, ...], t0: float, pause: float
) -> list[KillRecord]:
    records = []
    for kill in kills:
        await asyncio.sleep(max(0.0, t0 + kill.at - time.monotonic()))
        proc = stack.procs[kill.target]
        triggered = False
        if kill.trigger is not None:
            triggered = await proc.wait_line(kill.trigger, since=proc.mark(), timeout=TRIGGER_WAIT)
        started = time.monotonic()
        await proc.kill()
        killed_at = proc.kills[-1]
        await asyncio.sleep(pause)
        await stack.start_process(kill.target)
        records.append(KillRecord(kill, triggered, killed_at, time.monotonic() - started))
    return records


def in_flight(run: Run, record: KillRecord) -> int | None:
    """What the kill caught: deployments the worker had taken or had queued (its input seen, its
    output not yet), or requests the gateway could not answer while it was down."""
    at, target = record.at, record.kill.target
    if target == "gateway":
        until = at + record.back_after
        return sum(1 for t, status in run.sender.tally.answers if status == 0 and at <= t <= until)
    if target not in IN_OUT:
        return None
    key_in, key_out = IN_OUT[target]
    count = 0
    for line in run.observer.timelines.values():
        start, end = line.first(key_in), line.first(key_out) or line.first(FAILED)
        if start and start.time.timestamp() < at and (end is None or end.time.timestamp() > at):
            count += 1
    return count


async def run(root: Path, opts: Options | None = None) -> Result:
    opts = opts or Options()
    result = Result("kill_workers", "kill -9 of each relay process during a deploy run")
    started = time.monotonic()
    async with open_run(root, kubernetes=opts.kubernetes) as run:
        stack = run.stack
        specs = plan(opts)
        refs = await stack.push_images([(s.app, s.version) for s in specs if s.kind == "prebuilt"])
        registry_mark = stack.registry.log_path.stat().st_size
        requests = [request_for(spec, refs, stack) for spec in specs]
        t0 = time.monotonic()
        plan_ = full_plan(stack.worker_names, opts.kills) if opts.kills == PLAN else opts.kills
        kills = asyncio.create_task(run_kills(stack, plan_, t0, opts.restart_after))
        hooks = asyncio.create_task(send_hooks(run.sender, opts.hooks, stack))
        load_seconds = await send_deploys(run, requests, opts.rate)
        records, _ = await asyncio.gather(kills, hooks)
        settle = await run.settle(opts.settle_timeout)
        for record in records:
            record.in_flight = in_flight(run, record)
        found = await run.judge(result)
        judge_kills(result, records, stack)
        judge_builds(result, specs, stack, registry_mark)
        judge_expected(result, specs, run, found.ended)
        judge_callbacks(result, run, found.ended)
        await judge_hooks_and_letters(result, run)
        result.facts.update(run_facts(run, specs, load_seconds, settle))
    result.notes.append(
        "Flux is a stand-in (chaos.flux): it writes the GitRepository's and Kustomizations' status "
        "and applies each app's Deployment from the GitOps repository, then writes the "
        "Deployment's rolled-out status itself; no kube-controller-manager or kubelet runs."
        if opts.kubernetes
        else "No Kubernetes in this run: reconcile and watch report their stages skipped."
    )
    result.seconds = time.monotonic() - started
    result.secrets, result.log_files = stack.secret_values(), stack.log_files()
    return result


def full_plan(stack_workers: list[str], kills: tuple[Kill, ...]) -> tuple[Kill, ...]:
    """The plan, plus a kill for any worker it does not name (a worker added later)."""
    named = {k.target for k in kills}
    last = max((k.at for k in kills), default=0.0)
    more = [n for n in stack_workers if n not in named]
    return kills + tuple(
        Kill(n, last + 2.0 * (i + 1), None, "under load") for i, n in enumerate(more)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deploys", type=int, default=200)
    parser.add_argument("--apps", type=int, default=50)
    parser.add_argument("--keep", type=Path, help="keep the run's files (logs) in this directory")
    args = parser.parse_args()
    opts = Options(deploys=args.deploys, apps=args.apps)
    return run_alone(lambda root: run(root, opts), prefix="relay-chaos-kill-", keep=args.keep)


if __name__ == "__main__":
    raise SystemExit(main())
